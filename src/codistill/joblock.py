"""One running job per job directory.

Two sweeps over the same directory (the same command started twice, or a rerun while the first
is still going) would otherwise run the same job at once: interleaved run.log, two W&B runs,
two writers of metrics.json and the checkpoints.  A job holds an exclusive ``fcntl.flock`` on
``<job dir>/job.lock`` while it runs; the kernel releases it when the process exits, however it
dies, so a crash never leaves a stale lock.  The file holds the holder's pid, host and start
time, for the message of whoever finds it locked.

A sweep job that finds its directory locked waits for the holder (``sweep_lock: wait``, the
default; once it gets the lock it sees the job finished and skips it) or skips it with a message
(``sweep_lock: skip``).  A single run into a locked directory fails at once, naming the
directory and the holder.  flock is advisory and local to one machine's kernel (and NFS
clients that support it); jobs of one directory on two hosts of a cluster see each other only
where the shared filesystem forwards flock.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

LOCK_FILE = "job.lock"
MODES = ("wait", "skip")


class JobLockedError(RuntimeError):
    """The job directory is in use by another running job."""


def holder(run_dir: Path) -> str:
    """Who holds ``run_dir``'s lock, as written in the lock file ("unknown" when unreadable)."""
    try:
        h = json.loads((Path(run_dir) / LOCK_FILE).read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


@contextmanager
def job_lock(run_dir: Path, mode: str) -> Iterator[bool]:
    """Hold ``run_dir``'s job lock for the ``with`` block; yields True once held.

    ``mode``: ``wait`` (block until the holder exits), ``skip`` (yield False at once) or
    ``fail`` (raise :class:`JobLockedError` naming the directory and the holder)."""
    from codistill.config import ConfigError

    if mode not in (*MODES, "fail"):
        raise ConfigError(f"sweep_lock: {mode!r} is not one of {list(MODES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as f:  # never truncated before the lock is ours
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(run_dir)
            if mode == "fail":
                raise JobLockedError(f"{run_dir} is in use by another running codistill job ({who}); "
                                     f"wait for it, or run into another directory (hydra.run.dir=...)") from None
            if mode == "skip":
                log.warning("job directory %s is in use by %s: skipped (sweep_lock=skip)", run_dir, who)
                yield False
                return
            log.warning("job directory %s is in use by %s: waiting for it to finish (sweep_lock=wait)", run_dir, who)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            log.info("job directory %s is free: going on", run_dir)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": datetime.datetime.now().isoformat(timespec="seconds")}))
        f.flush()
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
