"""``method=persd_combined``: both PERsD training pairs for every kept refinement.

(task -> refined solution) as ``persd`` and (task + failed attempt + feedback -> refined
solution) as ``persd_refine`` (methods/persd.py).
"""

from codistill.methods.persd import PERsD


class PERsDCombined(PERsD):
    pair_kinds = ("persd", "persd_refine")
