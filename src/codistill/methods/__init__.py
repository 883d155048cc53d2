"""Methods: each composes the shared blocks into a training set (one file each).

A method is a :class:`Method` subclass with a ``Config`` dataclass (its schema) in one file,
and a YAML in ``conf/method/`` naming the class with ``_target_``; nothing here lists them
(see :mod:`codistill.plugins` and docs/extending.md).
"""

from codistill.methods.base import Method, MethodResult, RunContext


def build_method(cfg) -> Method:
    """The method object for ``cfg.method`` (validated: its ``_target_`` imports)."""
    from codistill.plugins import locate

    return locate(cfg.method._target_, "method._target_")(cfg.method)


__all__ = ["Method", "MethodResult", "RunContext", "build_method"]
