"""Sandbox worker: a small, pre-imported fork server.

Started by :class:`codistill.execution.api.ExecutionPool` as
``[bwrap ... --] python -m codistill.execution.worker --level ...`` with a scrubbed environment.
It reads length-prefixed JSON jobs on stdin, forks one fresh child per program (see
:mod:`.harness`), enforces the wall-clock timeout and the output cap, kills everything the
program left running, removes everything it left on disk and answers on stdout.

Modes: ``--probe`` (print ``ok``: used to test bubblewrap), ``--sweep`` (kill processes / remove
files of a sandbox uid after a worker was killed hard).
"""
from __future__ import annotations

import os
import select
import signal
import stat
import sys
import time

# Modules a typical benchmark program imports; loaded once here so that each forked child
# finds them already in sys.modules (faster, and available even when the unprivileged uid
# could not read the interpreter's files).
# A lean list: every pre-imported module enlarges the worker, and each fork copies its page
# tables.  Measured (2 cores, bwrap, HumanEval canonical programs): the full stdlib list of 37
# modules 270/s, these 9 modules 297/s, none 302/s (but GSM-style programs 461/s vs 395/s).
PREIMPORT = (
    "bisect collections functools heapq itertools math re string typing"
).split()

from . import cleanup, limits, protocol  # noqa: E402
from .harness import SETUP_FAILED_EXIT, child_main, rewrite_paths  # noqa: E402

_SIGNAL_REASONS = {
    signal.SIGXCPU: "CPU time limit exceeded (SIGXCPU)",
    signal.SIGXFSZ: "file size limit exceeded (SIGXFSZ)",
    signal.SIGSEGV: "crashed with SIGSEGV (e.g. C stack overflow from deep recursion)",
    signal.SIGKILL: "killed by SIGKILL",
    signal.SIGABRT: "aborted (SIGABRT)",
}


def _preimport() -> int:
    n = 0
    for name in PREIMPORT:
        try:
            __import__(name)
            n += 1
        except Exception:
            pass
    return n


def make_dir(parent: str, prefix: str) -> str:
    """A new, empty 0700 directory with a random name (like ``tempfile.mkdtemp``, which the worker
    does not import: it would enlarge every fork)."""
    for _ in range(100):
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free directory name under {parent}")


def _is_empty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def _traversable_by_others(path: str) -> bool:
    """Can a uid with no relation to the owner reach and list ``path``?"""
    p = os.path.abspath(path)
    parts = p.split("/")
    cur = "/"
    for part in parts[1:]:
        try:
            st = os.stat(cur)
        except OSError:
            return False
        if not st.st_mode & stat.S_IXOTH:
            return False
        cur = os.path.join(cur, part)
    try:
        st = os.stat(cur)
    except OSError:
        return True  # does not exist: nothing to fix
    return bool(st.st_mode & stat.S_IXOTH and st.st_mode & stat.S_IROTH)


class Worker:
    def __init__(self, level: str, uid: int | None, gid: int | None, tmp_root: str | None):
        self.level = level
        self.uid = uid if (uid is not None and os.geteuid() == 0) else None
        self.gid = gid if self.uid is not None else None
        self.pid = os.getpid()
        self.pid_ns = level == "bwrap" and self.pid == 2 and os.getppid() == 1 and os.geteuid() != 0
        self.ctl_in = os.dup(0)
        self.ctl_out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # stray prints of the worker itself must never corrupt the protocol
        os.close(devnull)
        self.reader = protocol.FrameReader()
        if self.pid_ns:
            self.tmp_root = "/tmp"
        else:
            self.tmp_root = tmp_root or make_dir("/tmp", "codistill-exec-")
            os.makedirs(self.tmp_root, exist_ok=True)
        self.dev_snapshot = frozenset(os.listdir("/dev")) if self.pid_ns else frozenset()
        self.path_fds: dict[str, int] = {}
        if self.uid is not None:
            for p in dict.fromkeys(sys.path):
                if p and os.path.isdir(p) and not _traversable_by_others(p):
                    try:
                        self.path_fds[p] = os.open(p, os.O_PATH | os.O_DIRECTORY)
                    except OSError:
                        pass
        try:
            sys.path.remove(os.getcwd())  # `-m` put the worker's cwd first
        except ValueError:
            pass
        self.shared_mtimes: dict[str, int] = {}
        # Mount points below the private /tmp and /dev/shm, read once: nothing in the sandbox can
        # mount (no capabilities, no nested user namespaces), and reading /proc/self/mountinfo
        # per program cost ~0.4 ms of worker CPU each time.
        self.mounts = {d: cleanup.mount_points(d) for d in ("/tmp", "/dev/shm")} if self.pid_ns else {}
        # The temp dirs of finished programs whose removal waits for the next program to start
        # (process level): see run_one.
        self.deferred: list[str] = []

    # ------------------------------------------------------------------ protocol
    def send(self, msg: dict) -> None:
        protocol.write_all(self.ctl_out, protocol.encode(msg))

    def next_message(self):
        while True:
            msg = self.reader.pop()
            if msg is not None:
                return msg
            data = os.read(self.ctl_in, 1 << 20)
            if not data:
                return None
            self.reader.feed(data)

    def serve(self) -> None:
        self.sweep_uid()  # leftovers of a previous worker of this slot that was killed hard
        self.send({"op": "ready", "pid": self.pid, "level": self.level, "uid": self.uid,
                   "pid_namespace": self.pid_ns, "path_fds": len(self.path_fds),
                   "euid": os.geteuid()})
        try:
            while True:
                msg = self.next_message()
                if msg is None or msg.get("op") == "exit":
                    break
                if msg.get("op") == "run":
                    try:
                        res = self.run_one(msg)
                    except Exception as e:  # a bug or an exotic mess: report it, keep serving
                        self.kill_leftovers(abnormal=True)
                        self.remove_deferred()
                        res = {"op": "result", "id": msg.get("id"), "status": "error", "value": None,
                               "error": f"sandbox internal error: {e!r}", "stdout": "", "stderr": "",
                               "duration_s": 0.0}
                    self.send(res)
                    if res.get("_abort"):
                        break
        finally:
            self.final_cleanup()

    # ------------------------------------------------------------------ cleanup
    def sweep_uid(self) -> None:
        if self.uid is not None:
            cleanup.kill_uid(self.uid, self.gid)
            cleanup.reap_all()
            cleanup.remove_owned(cleanup.SHARED_WRITABLE_DIRS, self.uid, skip=frozenset({self.tmp_root}))

    def kill_descendants(self) -> int:
        """Kill what the program left running; returns how many processes were found."""
        if self.pid_ns:
            return cleanup.kill_all_in_pid_namespace()
        return cleanup.kill_descendants()

    def kill_uid_leftovers(self) -> None:
        """Belt and braces after an abnormal end: every process of the slot uid, wherever it is."""
        if self.uid is not None and not self.pid_ns:
            cleanup.kill_uid(self.uid, self.gid)
            cleanup.kill_descendants()

    def kill_leftovers(self, abnormal: bool) -> None:
        self.kill_descendants()
        if abnormal:
            self.kill_uid_leftovers()

    def prepare_for_children(self) -> None:
        """One-time state every forked child inherits (instead of redoing it per program)."""
        rewrite_paths(self.path_fds)  # imports of the unprivileged child go through O_PATH fds
        os.environ.clear()
        os.environ.update(limits.program_env("/nonexistent"))
        limits.set_no_new_privs()

    def _shared_dirs_changed(self) -> bool:
        for d, m in self.shared_mtimes.items():
            try:
                if os.stat(d).st_mtime_ns != m:
                    return True
            except OSError:
                return True
        return not self.shared_mtimes

    def _sweep_shared(self) -> None:
        """Remove what the slot uid left in world-writable dirs; skipped when no such dir changed."""
        if not self._shared_dirs_changed():
            return
        cleanup.remove_owned(cleanup.SHARED_WRITABLE_DIRS, self.uid, skip=frozenset({self.tmp_root}))
        self.shared_mtimes = {}
        for d in cleanup.SHARED_WRITABLE_DIRS:
            try:
                self.shared_mtimes[d] = os.stat(d).st_mtime_ns
                for e in os.scandir(d):
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
                        self.shared_mtimes[e.path] = st.st_mtime_ns
            except OSError:
                pass

    def job_waiting(self) -> bool:
        """Has the caller already sent (part of) the next message?"""
        if self.reader.pending():
            return True
        try:
            return bool(select.select([self.ctl_in], [], [], 0)[0])
        except OSError:
            return False

    def remove_deferred(self) -> None:
        while self.deferred:
            path = self.deferred.pop()
            try:
                cleanup.remove_path(path)
            except Exception as e:  # never let a program's mess take the worker down
                os.write(2, f"codistill worker: cleanup error {e!r}\n".encode())

    def remove_files(self, tmpdir: str, defer: bool = False) -> None:
        """Remove what the (dead) program left on disk.  ``defer``: the program's own temp dir is
        removed while the next program runs instead (nothing else uses it, and every process
        that could write into it is dead); everything shared is always removed now."""
        if defer and not self.pid_ns:
            self.deferred.append(tmpdir)
        else:
            cleanup.remove_path(tmpdir)
        if self.pid_ns:
            cleanup.clear_dir("/tmp", mounts=self.mounts.get("/tmp"))
            cleanup.clear_dir("/dev/shm", mounts=self.mounts.get("/dev/shm"))
            try:
                for n in os.listdir("/dev"):
                    if n not in self.dev_snapshot:
                        cleanup.remove_path(os.path.join("/dev", n))
            except OSError:
                pass
        elif self.uid is not None:
            self._sweep_shared()

    def final_cleanup(self) -> None:
        try:
            self.kill_leftovers(abnormal=True)
            self.remove_deferred()
        finally:
            if not self.pid_ns and self.tmp_root:
                cleanup.remove_path(self.tmp_root)
            self.sweep_uid()

    # ------------------------------------------------------------------ one program
    def run_one(self, job: dict) -> dict:
        t0 = time.monotonic()
        jid = job.get("id")
        timeout = float(job.get("timeout_s", 5.0))
        cap = max(0, int(job.get("output_limit", 64_000)))
        tmpdir = make_dir(self.tmp_root, "run-")
        if self.uid is not None:
            os.chown(tmpdir, self.uid, self.gid)
        stdin_text = job.get("stdin") or ""
        if stdin_text:
            stdin_fd = os.memfd_create("stdin")
            protocol.write_all(stdin_fd, stdin_text.encode("utf-8", "surrogateescape"))
            os.lseek(stdin_fd, 0, os.SEEK_SET)
        else:
            stdin_fd = os.open(os.devnull, os.O_RDONLY)
        r_res, w_res = os.pipe()
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        nonce = os.urandom(16).hex()
        pid = os.fork()
        if pid == 0:  # ------------------------------------------------ child
            try:
                child_main(job, tmpdir=tmpdir, stdin_fd=stdin_fd, out_w=w_out, err_w=w_err, res_w=w_res,
                           uid=self.uid, gid=self.gid, path_fds=self.path_fds, worker_pid=self.pid,
                           nonce=nonce)
            finally:
                os._exit(SETUP_FAILED_EXIT)
        for fd in (w_res, w_out, w_err, stdin_fd):
            os.close(fd)
        # the previous program's temp dir goes now, while this one runs (off the critical path;
        # on a disk-backed /tmp an rmdir can wait milliseconds for the device)
        self.remove_deferred()
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None

        bufs = {r_res: bytearray(), r_out: bytearray(), r_err: bytearray()}
        totals = {r_out: 0, r_err: 0}
        names = {r_out: "stdout", r_err: "stderr"}
        open_fds = set(bufs)
        poller = select.poll()
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        poller.register(self.ctl_in, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout  # after remove_deferred: its time is not the program's
        timed_out = aborted = exited = False
        overflow = None
        wait_status = None

        def consume(fd: int) -> bool:
            """Read once from a pipe; False on EOF."""
            nonlocal overflow
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not data:
                return False
            if fd == r_res:
                if len(bufs[fd]) < 32 * 1024 * 1024:
                    bufs[fd] += data
            else:
                totals[fd] += len(data)
                room = cap - len(bufs[fd])
                if room > 0:
                    bufs[fd] += data[:room]
                if totals[fd] > cap and overflow is None:
                    overflow = names[fd]
            return True

        while not exited:
            remain = deadline - time.monotonic()
            if remain <= 0:
                timed_out = True
                break
            wait_ms = remain * 1000 if pidfd is not None else min(remain * 1000, 20)
            for fd, _ev in poller.poll(wait_ms):
                if fd == pidfd:
                    exited = True
                elif fd == self.ctl_in:
                    data = os.read(self.ctl_in, 1 << 20)
                    if data:
                        self.reader.feed(data)
                    else:
                        aborted = True
                elif fd in open_fds and not consume(fd):
                    poller.unregister(fd)
                    open_fds.discard(fd)
            if pidfd is None and not exited:
                wpid, st = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    exited, wait_status = True, st
            if overflow or aborted:
                break

        # ------------------------------------------------ stop everything, collect the verdict
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if wait_status is None:
            if not exited:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            _, wait_status = os.waitpid(pid, 0)
        if pidfd is not None:
            os.close(pidfd)
        # descendants may still hold the pipes: kill them first, then drain (bounded: all writers dead)
        extra = self.kill_descendants()
        for fd in list(open_fds):
            os.set_blocking(fd, False)
            while consume(fd):
                try:
                    if not select.select([fd], [], [], 0)[0]:
                        break
                except OSError:
                    break
        for fd in bufs:
            os.close(fd)
        verdict = self._parse(bufs[r_res], nonce)
        abnormal = (timed_out or aborted or overflow is not None or verdict is None or extra > 0
                    or not os.WIFEXITED(wait_status) or os.WEXITSTATUS(wait_status) != 0)
        if abnormal:
            self.kill_uid_leftovers()
        try:
            # Defer only an empty dir (one rmdir: the next program's supervision is never held up
            # by a big tree) and only when the next job is already here: it removes this dir right
            # after its fork, before its own answer.  The last job of a batch removes its dir
            # before answering, so no temp dir outlives the batch.
            self.remove_files(tmpdir, defer=not abnormal and self.job_waiting() and _is_empty_dir(tmpdir))
        except Exception as e:  # never let a program's mess take the worker down
            os.write(2, f"codistill worker: cleanup error {e!r}\n".encode())

        status, error, value = "failed", None, None
        if aborted:
            status, error = "killed", "sandbox worker shutting down"
        elif timed_out:
            status, error = "timeout", f"wall-clock timeout after {timeout:g}s"
        elif overflow is not None:
            status, error = "killed", f"output limit exceeded: {overflow} > {cap} bytes"
        elif os.WIFSIGNALED(wait_status):
            sig = os.WTERMSIG(wait_status)
            status = "killed"
            error = _SIGNAL_REASONS.get(sig) or f"killed by signal {signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig}"
        elif verdict is not None and os.WEXITSTATUS(wait_status) == 0:
            status, error, value = verdict.get("status", "failed"), verdict.get("error"), verdict.get("value")
            if status not in ("passed", "failed", "error", "killed", "timeout"):
                status, error, value = "failed", "invalid verdict from harness", None
        elif verdict is not None:
            status, error = verdict.get("status", "error"), verdict.get("error")
            if status == "passed":
                status, error = "failed", f"harness exited with code {os.WEXITSTATUS(wait_status)}"
        else:
            code = os.WEXITSTATUS(wait_status)
            status, error = "failed", f"the program exited (exit code {code}) before finishing"
        if status != "passed":
            value = None

        def text(fd: int) -> str:
            s = bytes(bufs[fd]).decode("utf-8", "replace")
            if totals[fd] > len(bufs[fd]):
                s += f"\n...[output truncated: {totals[fd]} bytes written, {cap} kept]"
            return s

        return {"op": "result", "id": jid, "status": status, "error": error, "value": value,
                "stdout": text(r_out), "stderr": text(r_err),
                "duration_s": time.monotonic() - t0, "_abort": aborted}

    @staticmethod
    def _parse(data: bytearray, nonce: str):
        if not data:
            return None
        import json
        try:
            msg = json.loads(bytes(data).decode("utf-8", "surrogatepass"))
        except ValueError:
            return None  # several messages, garbage or a truncated write: never a pass
        if not isinstance(msg, dict) or msg.get("nonce") != nonce:
            return None
        return msg


def _parse_args(argv: list[str]) -> dict:
    """``--level process|bwrap --uid N --gid N --tmp-root DIR --probe --sweep`` (argparse is not
    imported: it would enlarge every fork)."""
    a = {"level": "process", "uid": None, "gid": None, "tmp_root": None, "probe": False, "sweep": False}
    it = iter(argv)
    for arg in it:
        if arg in ("--probe", "--sweep"):
            a[arg[2:]] = True
        elif arg in ("--level", "--uid", "--gid", "--tmp-root"):
            val = next(it, None)
            if val is None:
                raise SystemExit(f"codistill.execution.worker: {arg} needs a value")
            key = arg[2:].replace("-", "_")
            if key == "level" and val not in ("process", "bwrap"):
                raise SystemExit(f"codistill.execution.worker: --level must be process or bwrap, got {val!r}")
            if key in ("uid", "gid"):
                try:
                    val = int(val)
                except ValueError:
                    raise SystemExit(f"codistill.execution.worker: {arg} must be an integer, got {val!r}")
            a[key] = val
        else:
            raise SystemExit(f"codistill.execution.worker: unknown argument {arg!r}")
    return a


class _Args:
    def __init__(self, d: dict):
        self.__dict__.update(d)


def main(argv: list[str] | None = None) -> int:
    a = _Args(_parse_args(sys.argv[1:] if argv is None else argv))
    if a.probe:
        os.write(1, b"ok\n")
        return 0
    if a.sweep:
        if a.uid and os.geteuid() == 0:
            cleanup.kill_uid(a.uid, a.gid if a.gid is not None else a.uid)
            cleanup.remove_owned(cleanup.SHARED_WRITABLE_DIRS, a.uid)
        if a.tmp_root:
            cleanup.remove_path(a.tmp_root)
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when we stop
    limits.set_non_dumpable()
    limits.set_child_subreaper()
    w = Worker(a.level, a.uid, a.gid, a.tmp_root)
    _preimport()
    w.prepare_for_children()
    import gc
    gc.collect()
    gc.freeze()  # children do not dirty (copy) the pre-imported objects' pages when collecting
    w.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
