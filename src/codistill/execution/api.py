"""Public API: Program, ExecResult, run_programs, ExecutionPool, isolation_info."""
from __future__ import annotations

import atexit
import collections
import logging
import os
import pwd
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from . import bwrap, protocol

log = logging.getLogger("codistill.execution")

ISOLATION_ENV = "CODISTILL_EXEC_ISOLATION"  # force what "auto" resolves to ("process" / "bwrap")
STATUSES = ("passed", "failed", "timeout", "error", "killed")
PIPELINE_DEPTH = 2
def default_workers() -> int:
    """One per core, at least 2, at most 16.

    Measured on 2 quiet cores (bwrap level, HumanEval canonical programs): 2 workers 300/s,
    4 workers 264/s, 8 workers 245/s; trivial programs ~400/s whatever the count.
    """
    return max(2, min(16, os.cpu_count() or 1))


          # jobs queued per worker, so it never waits for the next one
WATCHDOG_GRACE_S = 10.0     # a worker silent for timeout + this long is considered wedged
MAX_START_FAILURES = 3


@dataclass
class Program:
    source: str                 # a complete Python program
    entry: str | None = None    # global to read (and call if callable) after the program ran
    stdin: str = ""


@dataclass
class ExecResult:
    status: str                 # "passed" | "failed" | "timeout" | "error" | "killed"
    passed: bool
    value: Any                  # plain JSON data from `entry` (None if no entry / not passed)
    error: str | None
    stdout: str
    stderr: str
    duration_s: float


# --------------------------------------------------------------------------- isolation
_warn_lock = threading.Lock()
_warned = False


def _warn_fallback(reason: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    msg = ("codistill.execution: bubblewrap sandbox unavailable (%s); falling back to PROCESS-level "
           "isolation: programs run as an unprivileged uid with resource limits, but the NETWORK IS "
           "NOT ISOLATED and the FILESYSTEM IS NOT ISOLATED (readable host files, writable /tmp)." % reason)
    log.warning(msg)
    try:
        print("WARNING: " + msg, file=sys.stderr, flush=True)
    except Exception:
        pass


def resolve_isolation(isolation: str = "auto", *, warn: bool = True) -> str:
    """Map "auto" | "bwrap" | "process" to the level actually used."""
    if isolation not in ("auto", "bwrap", "process"):
        raise ValueError(f"isolation must be 'auto', 'bwrap' or 'process', got {isolation!r}")
    if isolation == "auto":
        forced = os.environ.get(ISOLATION_ENV, "").strip().lower()
        if forced in ("process", "bwrap"):
            isolation = forced
    if isolation == "process":
        return "process"
    ok, reason = bwrap.probe()
    if ok:
        return "bwrap"
    if isolation == "bwrap":
        raise RuntimeError(f"isolation='bwrap' requested but bubblewrap is unusable: {reason}. "
                           "Install it (apt-get install bubblewrap) / allow user namespaces, or use "
                           "isolation='process'.")
    if warn:
        _warn_fallback(reason)
    return "process"


def isolation_info(isolation: str = "auto") -> dict:
    """Describe the isolation that ``isolation`` gives on this machine (never raises for a valid
    name; ``usable`` is False when "bwrap" was asked for and cannot be had)."""
    if isolation not in ("auto", "bwrap", "process"):
        raise ValueError(f"isolation must be 'auto', 'bwrap' or 'process', got {isolation!r}")
    ok, reason = bwrap.probe()
    root = os.geteuid() == 0
    try:
        level = resolve_isolation(isolation, warn=False)
    except RuntimeError:
        return {"level": "bwrap", "usable": False, "requested": isolation, "uid_drop": False,
                "network": "none", "filesystem": "n/a", "pid_namespace": False, "bwrap": reason,
                "details": f"bubblewrap unusable: {reason}"}
    if level == "bwrap":
        return {"level": "bwrap", "usable": True, "requested": isolation, "uid_drop": True,
                "uid": bwrap.SANDBOX_UID, "network": "none", "filesystem": "read-only root, private /tmp",
                "pid_namespace": True, "bwrap": reason,
                "details": ("long-lived workers inside bubblewrap (user/pid/net/ipc/uts namespaces, "
                            f"--ro-bind / /, private /tmp and /dev, uid {bwrap.SANDBOX_UID}, no capabilities, "
                            "no nested user namespaces); fork per program with rlimits, new session, "
                            "scrubbed environment, wall-clock kill of the whole namespace's leftovers")}
    return {"level": "process", "usable": True, "requested": isolation, "uid_drop": root,
            "uid": "per-worker uid range" if root else os.geteuid(), "network": "host",
            "filesystem": "host (read: what the uid may read; write: world-writable dirs, cleaned after each program)",
            "pid_namespace": False, "bwrap": reason,
            "details": ("fork per program from long-lived workers; rlimits (AS, CPU, FSIZE, NPROC, CORE, NOFILE), "
                        "new session, scrubbed environment, "
                        + ("a dedicated unprivileged uid per worker slot, " if root else
                           "NO uid drop (not running as root), ")
                        + "kill of the process group and every descendant; network and filesystem NOT isolated")}


# --------------------------------------------------------------------------- uid slots (process level, root)
_slot_lock = threading.Lock()
_slots_in_use: set[int] = set()
MAX_SLOTS = 64


def _uid_base() -> int:
    # a per-caller-process range, so two pools in two processes never sweep each other's uid
    return 1_000_000_000 + (os.getpid() % 1_000_000) * MAX_SLOTS


def _acquire_slot() -> int:
    with _slot_lock:
        for s in range(MAX_SLOTS):
            if s not in _slots_in_use:
                _slots_in_use.add(s)
                return s
    raise RuntimeError(f"more than {MAX_SLOTS} sandbox workers in one process")


def _release_slot(s: int) -> None:
    with _slot_lock:
        _slots_in_use.discard(s)


def _slot_uid(s: int) -> int:
    uid = _uid_base() + s
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return uid
    raise RuntimeError(f"sandbox uid {uid} belongs to a real user; refusing to use it")


# --------------------------------------------------------------------------- workers
class _WorkerDied(Exception):
    pass


class _Worker:
    def __init__(self, pool: "ExecutionPool", slot: int):
        self.pool, self.slot = pool, slot
        self.uid = _slot_uid(slot) if (pool.level == "process" and os.geteuid() == 0) else None
        self.tmp_root = os.path.join(pool.tmp_root, f"w{slot}")
        args = ["--level", pool.level]
        if pool.level == "process":
            args += ["--tmp-root", self.tmp_root]
            if self.uid is not None:
                args += ["--uid", str(self.uid), "--gid", str(self.uid)]
        if pool.level == "bwrap":
            cmd = bwrap.worker_command(bwrap.bwrap_path() or "bwrap", args)
        else:
            cmd = [sys.executable, "-m", "codistill.execution.worker"] + args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=bwrap.worker_launch_env(), start_new_session=True,
                                     close_fds=True, bufsize=0)
        self.r = self.proc.stdout.fileno()
        self.w = self.proc.stdin.fileno()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        self.reader = protocol.FrameReader()
        self.outbuf = bytearray()
        self.ready = False
        self.inflight: collections.deque[int] = collections.deque()
        self.head_since = time.monotonic()
        self.started = time.monotonic()

    # IO
    def queue(self, msg: dict) -> None:
        self.outbuf += protocol.encode(msg)

    def flush(self) -> None:
        while self.outbuf:
            try:
                n = os.write(self.w, self.outbuf)
            except BlockingIOError:
                return
            except (BrokenPipeError, OSError):
                raise _WorkerDied("worker stdin closed")
            del self.outbuf[:n]

    def read(self) -> list[dict]:
        msgs = []
        while True:
            try:
                data = os.read(self.r, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                # deliver what we already have, then report the death
                while (m := self.reader.pop()) is not None:
                    msgs.append(m)
                raise _WorkerDied(msgs)
            self.reader.feed(data)
        while (m := self.reader.pop()) is not None:
            msgs.append(m)
        return msgs

    def close(self, grace: float = 3.0) -> None:
        try:
            self.proc.stdin.close()  # EOF: the worker kills its program, cleans up and exits
        except OSError:
            pass
        hard = False
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            hard = True
        self.kill(hard)

    def kill(self, hard: bool = True) -> None:
        if self.proc.poll() is None:
            hard = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if hard and self.pool.level == "process":
            self.pool._sweep(self.uid, self.tmp_root)


class ExecutionPool:
    """Long-lived sandbox workers. ``with ExecutionPool() as pool: pool.run(programs)``.

    Not thread-safe: use one pool per thread (``run_programs`` serialises calls on the shared pool).
    """

    def __init__(self, max_workers: int | None = None, isolation: str = "auto", *,
                 timeout_s: float = 5.0, memory_mb: int = 1024, output_limit_bytes: int = 64_000):
        self.level = resolve_isolation(isolation)
        self.requested = isolation
        self.max_workers = max(1, int(max_workers or default_workers()))
        self.defaults = dict(timeout_s=timeout_s, memory_mb=memory_mb, output_limit_bytes=output_limit_bytes)
        self.tmp_root = tempfile.mkdtemp(prefix="codistill-exec-")
        os.chmod(self.tmp_root, 0o711)
        self.workers: list[_Worker | None] = [None] * self.max_workers
        self.slots = [_acquire_slot() for _ in range(self.max_workers)] if self.level == "process" else list(range(self.max_workers))
        self._closed = False
        self._lock = threading.Lock()
        self.restarts = 0

    # lifecycle
    def __enter__(self) -> "ExecutionPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        return isolation_info(self.level)

    @property
    def sandbox_uids(self) -> list[int]:
        """uids programs of this pool run as (process level as root); empty otherwise."""
        if self.level == "process" and os.geteuid() == 0:
            return [_slot_uid(s) for s in self.slots]
        return []

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w is not None and w.proc.poll() is None]

    def start(self) -> None:
        for i in range(self.max_workers):
            if self.workers[i] is None:
                self.workers[i] = _Worker(self, self.slots[i])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = [w for w in self.workers if w is not None]
        for w in ws:
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 3.0
        for w in ws:
            try:
                w.proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            w.kill(hard=False)
        self.workers = [None] * self.max_workers
        from .cleanup import remove_path
        remove_path(self.tmp_root)
        if self.level == "process":
            for s in self.slots:
                _release_slot(s)

    def _sweep(self, uid: int | None, tmp_root: str) -> None:
        """Kill/remove what a hard-killed process-level worker may have left (runs a tiny helper
        process: the caller itself never forks)."""
        args = [sys.executable, "-m", "codistill.execution.worker", "--sweep", "--tmp-root", tmp_root]
        if uid is not None:
            args += ["--uid", str(uid), "--gid", str(uid)]
        try:
            subprocess.run(args, env=bwrap.worker_launch_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass

    # the main loop
    def run(self, programs: Sequence[Program | str], *, timeout_s: float | None = None,
            memory_mb: int | None = None, output_limit_bytes: int | None = None) -> list[ExecResult]:
        if self._closed:
            raise RuntimeError("ExecutionPool is closed")
        timeout_s = float(self.defaults["timeout_s"] if timeout_s is None else timeout_s)
        memory_mb = int(self.defaults["memory_mb"] if memory_mb is None else memory_mb)
        output_limit_bytes = int(self.defaults["output_limit_bytes"] if output_limit_bytes is None else output_limit_bytes)
        progs = [p if isinstance(p, Program) else Program(source=p) for p in programs]
        for p in progs:
            if not isinstance(p.source, str):
                raise TypeError("Program.source must be a str")
        with self._lock:
            try:
                return self._run(progs, timeout_s, memory_mb, output_limit_bytes)
            except BaseException:
                # KeyboardInterrupt or a bug: leave nothing running behind us
                self.close()
                raise

    def _job(self, i: int, p: Program, timeout_s: float, memory_mb: int, cap: int) -> dict:
        return {"op": "run", "id": i, "source": p.source, "entry": p.entry, "stdin": p.stdin or "",
                "timeout_s": timeout_s, "memory_mb": memory_mb, "output_limit": cap}

    def _run(self, progs: list[Program], timeout_s: float, memory_mb: int, cap: int) -> list[ExecResult]:
        n = len(progs)
        results: list[ExecResult | None] = [None] * n
        if n == 0:
            return []
        self.start()
        todo = collections.deque(range(n))
        start_failures = 0
        sel = selectors.DefaultSelector()
        registered: dict[int, _Worker] = {}
        watchdog = timeout_s + WATCHDOG_GRACE_S

        def register_all():
            for fd in list(registered):
                if registered[fd] not in self.workers:
                    sel.unregister(fd)
                    del registered[fd]
            for w in self.workers:
                if w is not None and w.r not in registered:
                    sel.register(w.r, selectors.EVENT_READ)
                    registered[w.r] = w

        def fail(i: int, status: str, error: str) -> None:
            if results[i] is None:
                results[i] = ExecResult(status, False, None, error, "", "", 0.0)

        def replace(w: _Worker, reason_status: str, reason: str, kill: bool) -> None:
            nonlocal start_failures
            if w.inflight:
                fail(w.inflight.popleft(), reason_status, reason)
            for j in reversed(w.inflight):
                todo.appendleft(j)
            w.inflight.clear()
            if not w.ready:
                start_failures += 1
                if start_failures >= MAX_START_FAILURES:
                    raise RuntimeError(f"sandbox worker ({self.level}) failed to start {start_failures} times "
                                       f"(exit code {w.proc.poll()})")
            w.kill(hard=kill)
            idx = self.workers.index(w)
            self.restarts += 1
            self.workers[idx] = _Worker(self, w.slot)

        try:
            register_all()
            while any(r is None for r in results):
                now = time.monotonic()
                # hand out work
                for w in self.workers:
                    if w is None or not w.ready:
                        continue
                    while todo and len(w.inflight) < PIPELINE_DEPTH:
                        i = todo.popleft()
                        if not w.inflight:
                            w.head_since = now
                        w.inflight.append(i)
                        w.queue(self._job(i, progs[i], timeout_s, memory_mb, cap))
                    try:
                        w.flush()
                    except _WorkerDied:
                        pass  # noticed on read (EOF)
                # wait for answers
                deadlines = [w.head_since + watchdog for w in self.workers if w is not None and w.inflight]
                deadlines += [w.started + 60.0 for w in self.workers if w is not None and not w.ready]
                wait = max(0.0, min(deadlines) - now) if deadlines else 1.0
                want_write = [w for w in self.workers if w is not None and w.outbuf]
                for w in want_write:
                    sel.modify(w.r, selectors.EVENT_READ)
                events = sel.select(timeout=min(wait, 0.05) if want_write else wait)
                for key, _ in events:
                    w = registered.get(key.fd)
                    if w is None or w not in self.workers:
                        continue
                    try:
                        msgs = w.read()
                        died = None
                    except _WorkerDied as e:
                        msgs = e.args[0] if e.args and isinstance(e.args[0], list) else []
                        died = e
                    for m in msgs:
                        self._handle(w, m, results)
                    if died is not None:
                        replace(w, "killed", "sandbox worker died while running this program "
                                             "(the program probably killed it)", kill=True)
                        register_all()
                # watchdog: a worker that stopped answering is killed and replaced
                now = time.monotonic()
                for w in list(self.workers):
                    if w is None:
                        continue
                    if w.inflight and now - w.head_since > watchdog:
                        replace(w, "timeout", f"wall-clock timeout after {timeout_s:g}s (worker unresponsive)", kill=True)
                        register_all()
                    elif not w.ready and now - w.started > 60.0:
                        replace(w, "killed", "sandbox worker did not start", kill=True)
                        register_all()
        finally:
            sel.close()
        return results  # type: ignore[return-value]

    def _handle(self, w: _Worker, m: dict, results: list) -> None:
        op = m.get("op")
        if op == "ready":
            w.ready = True
            w.info = m
            return
        if op != "result":
            return
        i = m.get("id")
        if not w.inflight or w.inflight[0] != i:
            return  # out of order: cannot happen with this worker; ignore defensively
        w.inflight.popleft()
        w.head_since = time.monotonic()
        status = m.get("status") if m.get("status") in STATUSES else "failed"
        value = None
        if status == "passed" and m.get("value") is not None:
            import json
            try:
                value = json.loads(m["value"])
            except ValueError:
                status, value = "failed", None
        results[i] = ExecResult(status=status, passed=status == "passed", value=value, error=m.get("error"),
                                stdout=m.get("stdout") or "", stderr=m.get("stderr") or "",
                                duration_s=float(m.get("duration_s") or 0.0))


# --------------------------------------------------------------------------- module-level pool
_pools: dict[tuple[str, int], ExecutionPool] = {}
_pools_lock = threading.Lock()


def shutdown() -> None:
    """Stop the workers of the shared pools used by :func:`run_programs` (also runs at exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for p in pools:
        p.close()


atexit.register(shutdown)


def run_programs(programs: Sequence[Program | str], *, timeout_s: float = 5.0, memory_mb: int = 1024,
                 max_workers: int | None = None, isolation: str = "auto",
                 output_limit_bytes: int = 64_000) -> list[ExecResult]:
    """Run each program in the sandbox; one :class:`ExecResult` per program, in input order.

    Uses a shared, lazily started :class:`ExecutionPool` per (isolation level, worker count) whose
    idle workers stay alive between calls (stopped by :func:`shutdown` or at interpreter exit).
    """
    programs = list(programs)
    if not programs:
        return []
    level = resolve_isolation(isolation)
    nw = max(1, int(max_workers or default_workers()))
    nw = min(nw, max(1, len(programs))) if max_workers is None else nw
    key = (level, nw)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool._closed:
            pool = _pools[key] = ExecutionPool(max_workers=nw, isolation=level)
    return pool.run(programs, timeout_s=timeout_s, memory_mb=memory_mb, output_limit_bytes=output_limit_bytes)
