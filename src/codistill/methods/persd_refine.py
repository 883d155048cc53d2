"""``method=persd_refine``: PERsD whose student learns to repair its own code.

As ``persd`` (methods/persd.py), but each kept refinement becomes the pair
(task + the student's failed attempt + execution feedback -> refined solution), in the
same refinement prompt the student meets at multi-step evaluation (``eval.refine_steps``).
"""

from codistill.methods.persd import PERsD


class PERsDRefine(PERsD):
    pair_kinds = ("persd_refine",)
