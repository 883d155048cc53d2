"""Code that runs in the forked child, between ``fork()`` and ``os._exit()``.

The child confines itself (session, fds, cwd, rlimits, uid, env), runs the program as
``__main__``, optionally evaluates the entry, converts its value to plain JSON data and writes
exactly one verdict message (tagged with a per-run nonce) on fd 3. The verdict is produced
here, after the program's code has returned -- never inferred from an exit code: a program that
calls ``sys.exit``/``os._exit`` or kills itself never reaches the point where "passed" is written.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import signal
import sys
import types

from . import limits
from .values import NotJSONSafe, to_plain

RESULT_FD = 3
MAX_VALUE_BYTES = 8 * 1024 * 1024
SETUP_FAILED_EXIT = 126


def describe(exc: BaseException) -> str:
    try:
        name = type(exc).__name__
    except Exception:  # pragma: no cover - paranoid
        name = "Exception"
    try:
        msg = str(exc)
    except BaseException:
        msg = "<unprintable message>"
    text = f"{name}: {msg}" if msg else name
    return text if len(text) <= 2000 else text[:2000] + "..."


def _print_tb_tail(exc: BaseException, stream, keep: int = 30) -> None:
    """Like the interpreter's traceback, but O(depth) with tiny constants: a 10**6-deep
    RecursionError must not spend seconds formatting (traceback.print_exception would)."""
    import collections
    tail: collections.deque = collections.deque(maxlen=keep)
    tb, depth = exc.__traceback__, 0
    while tb is not None:
        tail.append(tb)
        tb, depth = tb.tb_next, depth + 1
    lines = ["Traceback (most recent call last):\n"]
    if depth > keep:
        lines.append(f"  ... {depth - keep} earlier frames omitted ...\n")
    for t in tail:
        co = t.tb_frame.f_code
        lines.append(f'  File "{co.co_filename}", line {t.tb_lineno}, in {co.co_name}\n')
    lines.append(describe(exc) + "\n")
    stream.write("".join(lines))


def _close_except(keep: set[int]) -> None:
    prev = -1
    for fd in sorted(keep):
        if fd > prev + 1:
            os.closerange(prev + 1, fd)
        prev = fd
    os.closerange(prev + 1, 1 << 20)


def rewrite_paths(path_fds: dict[str, int]) -> None:
    """After the uid drop, directories the sandbox uid cannot reach by name (e.g. an interpreter
    under a 0700 /root) are reached through O_PATH descriptors the worker opened as root."""
    if not path_fds:
        return

    def fix(p: str) -> str:
        for orig, fd in path_fds.items():
            if p == orig or p.startswith(orig + "/"):
                return f"/proc/self/fd/{fd}" + p[len(orig):]
        return p

    sys.path[:] = [fix(p) for p in sys.path]
    sys.path_importer_cache.clear()
    for m in list(sys.modules.values()):
        pth = getattr(m, "__path__", None)
        if isinstance(pth, list):
            try:
                pth[:] = [fix(p) for p in pth]
            except Exception:
                pass


def child_main(job: dict, *, tmpdir: str, stdin_fd: int, out_w: int, err_w: int, res_w: int,
               uid: int | None, gid: int | None, path_fds: dict[str, int], worker_pid: int,
               nonce: str) -> None:
    """Never returns."""
    _write, _exit, _getpid = os.write, os._exit, os.getpid

    def send(msg: dict) -> None:
        msg["nonce"] = nonce
        data = json.dumps(msg, allow_nan=True).encode("utf-8", "surrogatepass")
        view = memoryview(data)
        while view:
            view = view[_write(RESULT_FD, view):]

    # ---------------------------------------------------------------- confinement
    try:
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, RESULT_FD)
        _close_except({0, 1, 2, RESULT_FD, *path_fds.values()})
        os.chdir(tmpdir)
        limits.apply_rlimits(float(job.get("timeout_s", 5.0)), int(job.get("memory_mb", 1024)))
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if os.getuid() == 0 or os.geteuid() == 0:
                raise RuntimeError("uid drop failed")
        limits.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != worker_pid:  # worker died before pdeathsig was armed
            _exit(SETUP_FAILED_EXIT)
        os.environ["HOME"] = os.environ["TMPDIR"] = tmpdir  # the rest was set once in the worker
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if sys.path and sys.path[0] != tmpdir:
            sys.path.insert(0, tmpdir)
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(
            io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", errors="replace")
        sys.stdout = sys.__stdout__ = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8", errors="backslashreplace")
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8", errors="backslashreplace",
            line_buffering=True)
        sys.argv = ["main.py"]
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
    except BaseException as e:  # pragma: no cover - infrastructure failure
        try:
            send({"status": "error", "error": f"sandbox setup failed: {describe(e)}", "value": None})
        finally:
            _exit(SETUP_FAILED_EXIT)

    # ---------------------------------------------------------------- the program
    my_pid = _getpid()
    status, error, value_json = "passed", None, None
    source, entry = job.get("source", ""), job.get("entry")
    try:
        code = compile(source, "main.py", "exec")
        exec(code, main.__dict__)
        if entry:
            if entry not in main.__dict__:
                raise NameError(f"entry {entry!r} is not defined by the program")
            v = main.__dict__[entry]
            if callable(v):
                v = v()
            try:
                plain = to_plain(v)
            except NotJSONSafe as e:
                status, error = "error", str(e)
            else:
                value_json = json.dumps(plain, allow_nan=True)
                if len(value_json) > MAX_VALUE_BYTES:
                    status, error, value_json = "error", "entry returned a value larger than 8 MB", None
    except SystemExit as e:
        status, error = "failed", f"SystemExit: {e.code!r} (the program exited before finishing)"
    except MemoryError as e:
        status, error = "killed", f"MemoryError: memory limit ({job.get('memory_mb')} MB) exceeded {str(e)[:200]}".rstrip()
    except BaseException as e:
        status, error = "error", describe(e)
        try:
            _print_tb_tail(e, sys.stderr)
        except BaseException:
            pass

    if _getpid() != my_pid:  # a process the program forked fell through to here: say nothing
        _exit(0)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        send({"status": status, "error": error, "value": value_json})
    except BaseException:
        _exit(SETUP_FAILED_EXIT)
    _exit(0)
