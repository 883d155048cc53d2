"""``method=persd_combined``: both PERsD training pairs for every kept refinement.

(task -> refined solution) as ``persd`` and (task + failed attempt + feedback -> refined
solution) as ``persd_refine`` (methods/persd.py).
"""

from dataclasses import dataclass

from codistill.methods.persd import PERsD, PERsDConfig


@dataclass
class PERsDCombinedConfig(PERsDConfig):
    name: str = "persd_combined"


class PERsDCombined(PERsD):
    name = "persd_combined"
    Config = PERsDCombinedConfig
    pair_kinds = ("persd", "persd_refine")
