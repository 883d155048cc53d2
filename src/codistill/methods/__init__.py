"""Methods: each composes the shared blocks into a training set (one file each)."""

import importlib

from codistill.methods.base import Method, MethodResult, RunContext

#: method name -> "module:Class"; one file per method (imported only when chosen)
METHODS = {
    "none": "codistill.methods.none:NoTraining",
    "ekt": "codistill.methods.ekt:EKT",
    "persd": "codistill.methods.persd:PERsD",
    "persd_refine": "codistill.methods.persd_refine:PERsDRefine",
    "persd_combined": "codistill.methods.persd_combined:PERsDCombined",
    "kd": "codistill.methods.kd:KD",
    "stand": "codistill.methods.stand:StanD",
    "expert_iteration": "codistill.methods.expert_iteration:ExpertIteration",
    "on_policy": "codistill.methods.on_policy:OnPolicy",
}


def build_method(cfg) -> Method:
    """The method object for ``cfg.method`` (validated)."""
    name = cfg.method.name
    if name not in METHODS:
        raise ValueError(f"method.name: unknown method {name!r}; known: {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg.method)


__all__ = ["METHODS", "Method", "MethodResult", "RunContext", "build_method"]
