"""Sandboxed execution of generated Python programs.

``run_programs(programs)`` runs each program in a fresh process forked from a long-lived,
pre-imported worker ("fork server"); the calling process (which may hold model weights and
CUDA state) never forks. The verdict ("passed" / "failed" / "timeout" / "error" / "killed") is
produced by a harness *after* the program's code returned, and an ``entry`` value is converted to
plain JSON data inside the sandbox, so the caller only ever compares plain data.

Isolation levels (``isolation=``):

``"bwrap"``
    Workers run inside bubblewrap: user, pid, network, IPC and UTS namespaces (no network at
    all), read-only host filesystem, private ``/tmp`` and ``/dev``, uid 65534 without
    capabilities and without nested user namespaces, the sandbox dies with the caller.
    Everything of the "process" level applies inside as well.
``"process"``
    No namespaces. Per program: fork, new session, rlimits (address space, CPU, file size,
    processes, core, open files), a scrubbed environment, a fresh temp dir as cwd/HOME, and
    -- when running as root -- a dedicated unprivileged uid per worker slot. The wall-clock
    timeout kills the process group and every descendant (the worker is a child subreaper), and
    files the uid left in world-writable directories are removed. The network and the readable
    parts of the filesystem are NOT isolated.
``"auto"`` (default)
    "bwrap" when a trial sandbox starts on this machine, otherwise "process" with one loud
    warning. The environment variable ``CODISTILL_EXEC_ISOLATION=process|bwrap`` forces the
    choice made by "auto".

See docs/execution.md for the guarantees and the residual risks.
"""
import importlib as _importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # static analysis sees the names; at run time they load on first use
    from .api import (ExecResult, ExecutionPool, Program, isolation_info, resolve_isolation,
                      run_programs, shutdown)
    from .passk import pass_at_k

__all__ = ["run_programs", "Program", "ExecResult", "pass_at_k", "isolation_info", "ExecutionPool",
           "resolve_isolation", "shutdown"]

# Names are imported on first use (PEP 562): the sandbox worker is started as
# ``python -m codistill.execution.worker``, which imports this package first, and everything
# the worker imports makes each per-program fork (page-table copy, copy-on-write faults, exit)
# more expensive.  The caller's side (api: subprocess, threading, logging, dataclasses) is not
# needed there.
_SOURCES = {name: "api" for name in __all__ if name != "pass_at_k"} | {"pass_at_k": "passk"}


_SUBMODULES = frozenset({"api", "bwrap", "cleanup", "harness", "limits", "passk", "protocol", "values", "worker"})


def __getattr__(name: str):
    if name in _SUBMODULES:  # `codistill.execution.api` without importing it first, as before
        return _importlib.import_module(f"{__name__}.{name}")
    mod = _SOURCES.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
