"""Per-program resource limits, environment scrubbing and small Linux helpers (prctl)."""
from __future__ import annotations

import ctypes
import math
import resource
import signal

# prctl option numbers from <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

NPROC_LIMIT = 64                 # processes + threads per sandbox uid
FSIZE_LIMIT = 32 * 1024 * 1024   # largest file a program may write (bytes)
NOFILE_LIMIT = 1024

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")

_libc = None


def _prctl(option: int, arg: int) -> bool:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                           ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except Exception:
        return False


def set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def set_non_dumpable() -> bool:
    """Forbid same-uid processes from ptrace-ing us or reading /proc/<pid>/{mem,environ}."""
    return _prctl(PR_SET_DUMPABLE, 0)


def set_child_subreaper() -> bool:
    """Orphaned descendants get re-parented to us, so we can find and kill them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> bool:
    return _prctl(PR_SET_NO_NEW_PRIVS, 1)


def is_secret_name(name: str) -> bool:
    up = name.upper()
    return any(w in up for w in _SECRET_WORDS)


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker process: built from scratch, never copied from the caller."""
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "HOME": "/nonexistent",
    }
    if extra:
        env.update(extra)
    return {k: v for k, v in env.items() if not is_secret_name(k)}


def program_env(home: str) -> dict[str, str]:
    """Environment seen by a program: nothing of the caller's, HOME/TMPDIR = its own temp dir."""
    return {
        "PATH": SAFE_PATH,
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def apply_rlimits(timeout_s: float, memory_mb: int, nproc: int = NPROC_LIMIT) -> None:
    """Install hard resource limits in the (forked) program process. Must run before the uid drop
    so a root worker can still lower the hard limits; limits only ever go down."""

    def lower(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    if memory_mb and memory_mb > 0:
        lower(resource.RLIMIT_AS, int(memory_mb) * 1024 * 1024)
    cpu = int(math.ceil(timeout_s)) + 1
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    new_hard = cpu + 1 if hard == resource.RLIM_INFINITY else min(cpu + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, new_hard), new_hard))
    lower(resource.RLIMIT_FSIZE, FSIZE_LIMIT)
    lower(resource.RLIMIT_CORE, 0)
    lower(resource.RLIMIT_NOFILE, NOFILE_LIMIT)
    lower(resource.RLIMIT_NPROC, nproc)
