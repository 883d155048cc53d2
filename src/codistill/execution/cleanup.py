"""Killing whatever a program left running and removing whatever it left on disk.

Used inside the worker (and by the ``--sweep`` helper mode of the worker module).
"""
from __future__ import annotations

import errno
import os
import signal
import stat

# World-writable places an unprivileged uid can write outside its temp dir (process level).
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")


def proc_stat(pid: int | str) -> tuple[bytes, int] | None:
    """(state, ppid) of a process from /proc/<pid>/stat, or None if it is gone or unreadable.

    The command name may contain spaces and parentheses, so fields are read after the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return fields[0], int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def list_children(pid: int | None = None) -> list[int]:
    """Direct children of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
            except FileNotFoundError:
                raise
            except OSError:
                pass
        return kids
    except FileNotFoundError:
        pass  # kernel without CONFIG_PROC_CHILDREN: scan /proc
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st is not None and st[1] == pid:
                kids.append(int(name))
    return kids


def reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants(keep: frozenset[int] = frozenset(), rounds: int = 200) -> int:
    """SIGKILL every descendant. Relies on this process being a child subreaper, so orphaned
    grandchildren are re-parented to us and show up as direct children. Returns how many
    processes were signalled."""
    signalled = 0
    for _ in range(rounds):
        reap_all()
        kids = [k for k in list_children() if k not in keep]
        if not kids:
            return signalled
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
                signalled += 1
            except ProcessLookupError:
                pass
        for k in kids:
            try:
                os.waitpid(k, 0)
            except ChildProcessError:
                pass
    return signalled


def kill_uid(uid: int, gid: int) -> None:
    """Kill every process whose real/saved uid is ``uid`` by forking a helper that becomes
    ``uid`` and calls ``kill(-1, SIGKILL)``. Never calls ``kill(-1)`` as root."""
    if uid == 0:
        raise ValueError("refusing to sweep uid 0")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in a forked helper
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if os.getuid() != 0 and os.geteuid() != 0:
                for _ in range(1000):
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except ProcessLookupError:
                        code = 0
                        break
                    except PermissionError:
                        code = 0
                        break
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


def kill_all_in_pid_namespace() -> int:
    """Inside a bubblewrap pid namespace: kill everything except its init and ourselves.
    Only safe when we are pid 2 under bwrap's init (checked by the caller). Returns the number
    of kill rounds that found somebody."""
    found = 0
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        found += 1
        reap_all()
        if not list_children():
            # only non-children (none should exist) or exiting zombies remain
            try:
                os.kill(-1, 0)
            except (ProcessLookupError, PermissionError):
                break
    reap_all()
    return found


def _onerror(func, path, exc_info):
    # a program may have chmod-ed things to 0: make them reachable again and retry once
    try:
        os.chmod(os.path.dirname(path), 0o700)
    except OSError:
        pass
    try:
        st = os.lstat(path)
    except OSError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            os.chmod(path, 0o700)
            import shutil
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def remove_path(path: str) -> None:
    """Remove a file, symlink or directory tree, never following symlinks."""
    # Fast path: most programs leave their temp dir empty.  rmdir never follows a symlink
    # (ENOTDIR) and fails on a non-empty directory (ENOTEMPTY): both take the full path below.
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        # shutil is imported only when needed: the sandbox worker imports this module, and a
        # smaller worker forks (and its children exit) faster
        import shutil
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        shutil.rmtree(path, onerror=_onerror)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                _onerror(os.unlink, path, None)
    if os.path.lexists(path) and stat.S_ISDIR(st.st_mode):
        # second pass, now that permissions were repaired on the way down
        for root, dirs, _files in os.walk(path):
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), 0o700)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)


def remove_owned(dirs: list[str] | tuple[str, ...], uid: int, skip: frozenset[str] = frozenset(),
                 depth: int = 2) -> list[str]:
    """Remove every entry owned by ``uid`` in ``dirs``; descend into world-writable directories
    owned by somebody else (e.g. ``/tmp/.X11-unix``) up to ``depth`` levels."""
    removed: list[str] = []
    for d in dirs:
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            entries = list(it)
        for e in entries:
            if e.path in skip:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid == uid:
                remove_path(e.path)
                removed.append(e.path)
            elif depth > 1 and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
                removed += remove_owned([e.path], uid, skip, depth - 1)
    return removed


def mount_points(under: str) -> set[str]:
    """Mount points strictly below ``under`` (from /proc/self/mountinfo)."""
    base = under.rstrip("/") + "/"
    out = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp.startswith(base):
                    out.add(mp)
    except OSError:
        pass
    return out


def clear_dir(d: str, skip: frozenset[str] = frozenset(), mounts: set[str] | None = None) -> None:
    """Remove everything inside ``d`` (used for the private /tmp of a bwrap sandbox).

    Mount points below ``d`` are left alone: when the checkout or its virtualenv lives under
    /tmp, bwrap binds them read-only into the private /tmp, and walking them would cost
    seconds per program (and is none of the program's doing).  Directories leading to a
    mount point are emptied of everything else.  ``mounts``: the mount points below ``d`` when
    the caller already knows them (they are read from /proc/self/mountinfo otherwise).
    """
    if mounts is None:
        mounts = mount_points(d)
    protected = set(mounts)
    for mp in mounts:  # the directories bwrap created on the way to each mount point
        parent = os.path.dirname(mp)
        while parent.startswith(d.rstrip("/") + "/"):
            protected.add(parent)
            parent = os.path.dirname(parent)
    _clear(d, skip, mounts, protected)


def _clear(d: str, skip: frozenset[str], mounts: set[str], protected: set[str]) -> None:
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = os.path.join(d, n)
        if p in skip or p in mounts:
            continue
        if p in protected:
            _clear(p, skip, mounts, protected)
        else:
            remove_path(p)
