"""bubblewrap detection and command-line construction.

Usability is decided once per process by actually starting a worker interpreter inside the
exact sandbox we would use (``bwrap ... python -m codistill.execution.worker --probe``): the
binary may be installed but unusable, e.g. when user namespaces are blocked by a container.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

from .limits import worker_env

SANDBOX_UID = 65534
SANDBOX_GID = 65534

_lock = threading.Lock()
_probe_cache: tuple[bool, str] | None = None


def bwrap_path() -> str | None:
    return shutil.which("bwrap", path=os.environ.get("PATH", "") + ":/usr/bin:/bin:/usr/local/bin")


def _package_root() -> str:
    # .../src/codistill/execution/bwrap.py -> .../src (the directory that contains `codistill`)
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker_launch_env() -> dict[str, str]:
    return worker_env({"PYTHONPATH": _package_root()})


def bwrap_args(binary: str) -> list[str]:
    args = [
        binary,
        "--unshare-all",          # user, ipc, pid, net, uts, cgroup namespaces: no network at all
        "--unshare-user",         # explicit so --disable-userns is allowed
        "--disable-userns",       # programs cannot create nested user namespaces
        "--die-with-parent",      # the whole sandbox dies with the caller
        "--new-session",
        "--ro-bind", "/", "/",    # read-only view of the host
        "--proc", "/proc",        # a /proc that shows only the sandbox's own pid namespace
        "--dev", "/dev",          # minimal private /dev (with a private /dev/shm)
        "--tmpfs", "/tmp",        # private, empty /tmp
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
        "--hostname", "sandbox",
        "--chdir", "/tmp",
    ]
    # The sandbox uid maps to the caller's uid outside (root when we run as root), so files the
    # caller can read would be readable: hide the usual homes of credentials (~/.netrc,
    # ~/.cache/huggingface/token, wandb settings, ssh keys, ...) and bind back only what the
    # interpreter needs (a pyenv/venv below /root, the package itself).
    hidden: list[str] = []
    for h in HIDDEN_PATHS + (os.path.expanduser("~"),):
        h = os.path.realpath(h)
        if h in ("/", "") or h in hidden or not os.path.lexists(h):
            continue
        if os.path.isdir(h):
            args += ["--tmpfs", h]
        else:
            args += ["--ro-bind", "/dev/null", h]
        hidden.append(h)
    hidden.append("/tmp")
    for p in _needed_paths(exclude=set(hidden)):
        # bind back what the interpreter needs from *below* a hidden or private root; never a
        # root itself (a script run from /tmp puts /tmp on sys.path: binding it would replace the
        # private /tmp with the host's, read-only)
        if p in hidden:
            continue
        if any(p.startswith(h.rstrip("/") + "/") for h in hidden):
            args += ["--ro-bind", p, p]
    return args


HIDDEN_PATHS = ("/root", "/home", "/etc/shadow", "/etc/gshadow", "/run/secrets", "/var/run/secrets",
                "/etc/ssh", "/run/user")


def _needed_paths(exclude: set[str] = frozenset()) -> list[str]:
    cands = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), _package_root()]
    cands += [p for p in sys.path if p and os.path.isdir(p)]
    real = sorted({os.path.realpath(p) for p in cands if p and os.path.exists(p)} - set(exclude))
    out: list[str] = []
    for p in real:  # sorted: a parent comes before its children
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def worker_command(binary: str, extra: list[str]) -> list[str]:
    return bwrap_args(binary) + ["--", sys.executable, "-m", "codistill.execution.worker"] + extra


def probe(force: bool = False) -> tuple[bool, str]:
    """(usable, reason). Cached after the first call."""
    global _probe_cache
    with _lock:
        if _probe_cache is not None and not force:
            return _probe_cache
        binary = bwrap_path()
        if binary is None:
            _probe_cache = (False, "bwrap (bubblewrap) is not installed")
            return _probe_cache
        cmd = worker_command(binary, ["--probe"])
        try:
            cp = subprocess.run(cmd, env=worker_launch_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            ok = cp.returncode == 0 and cp.stdout.strip().endswith(b"ok")
            if ok:
                _probe_cache = (True, f"{binary} works (user+pid+net namespaces, uid {SANDBOX_UID})")
            else:
                err = (cp.stderr or b"").decode("utf-8", "replace").strip().splitlines()
                _probe_cache = (False, f"{binary} cannot start a sandbox here (exit {cp.returncode}): "
                                       + (err[-1] if err else "no output"))
        except (OSError, subprocess.SubprocessError) as e:
            _probe_cache = (False, f"{binary} cannot start a sandbox here: {e!r}")
        return _probe_cache
