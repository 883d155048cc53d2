"""Methods: each composes the shared blocks into a training set (one file each)."""

from codistill.methods.base import Method, MethodResult, RunContext


def build_method(cfg) -> Method:
    """The method object for ``cfg.method`` (validated)."""
    name = cfg.method.name
    if name == "none":
        from codistill.methods.none import NoTraining

        return NoTraining(cfg.method)
    if name == "ekt":
        from codistill.methods.ekt import EKT

        return EKT(cfg.method)
    raise ValueError(f"method.name: unknown method {name!r}")


__all__ = ["Method", "MethodResult", "RunContext", "build_method"]
