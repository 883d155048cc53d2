"""SIGTERM / SIGINT (and SIGUSR1 under SLURM) -> a recorded, resumable stop.

A scheduler's preemption or timeout sends SIGTERM; Lightning turns it into a ``SystemExit(0)``
that would pass every failure handler and end a sweep with status 0.  Instead, while a run is
in :func:`handlers`, such a signal becomes :class:`Interrupted` (a ``BaseException``, like
``KeyboardInterrupt``, so no ``except Exception`` swallows it):

* outside training it is raised at once (generation and evaluation resume from the
  generation cache; nothing else is lost);
* inside training (:func:`deferred`) it only marks the stop: the checkpoint callback
  (:class:`codistill.training.resume.ResumeCheckpoint`) saves ``last.ckpt`` after the current
  step and then raises it (:func:`check`); a second signal there raises at once;
* ``run()`` records ``status: interrupted`` and the signal in ``metrics.json``; the process
  exits ``128 + signum`` (143 for SIGTERM, 130 for SIGINT), also from inside a sweep, which
  stops there -- the same command run again skips finished jobs and resumes this one;
* under SLURM (``SLURM_JOB_ID`` set) SIGTERM and SIGUSR1 requeue the job with
  ``scontrol requeue`` on the way out, as Lightning's SLURM auto-requeue does (that one is
  switched off in the Trainer so the two do not both act).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading

log = logging.getLogger(__name__)

#: signals that requeue a SLURM job (SIGUSR1: Lightning's default ``--signal`` for requeueing)
REQUEUE_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Interrupted(BaseException):
    """The run was stopped by ``signum``; its state up to that point is saved."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signame}")

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_pending: int | None = None  # the first signal received
_raised = False  # an Interrupted is already on its way out: later signals are ignored
_deferred = 0  # depth of deferred() sections


def under_slurm() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def _handler(signum, frame) -> None:
    global _pending, _raised
    if _raised:
        return  # already stopping: let the cleanup (metrics.json, loggers) finish
    again = _pending is not None
    if _pending is None:
        _pending = signum
    if _deferred and not again:
        log.warning("%s received: stopping after the current training step (checkpoint first)",
                    signal.Signals(signum).name)
        return
    _raised = True
    raise Interrupted(_pending)


@contextlib.contextmanager
def handlers():
    """Install the handlers for the duration of a run (main thread only; restored after)."""
    global _pending, _raised, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR1] if under_slurm() else [])
    _pending, _raised, _deferred = None, False, 0
    old = {s: signal.signal(s, _handler) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred():
    """A section (training) where a signal only marks the stop; :func:`check` raises it."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def pending() -> int | None:
    """The signal received and not yet raised, else None."""
    return None if _raised else _pending


def check() -> None:
    """Raise :class:`Interrupted` when a signal is pending (call it at a safe point)."""
    global _raised
    if pending() is not None:
        _raised = True
        raise Interrupted(_pending)


def slurm_job_id() -> str:
    """The job to requeue: ``<array job>_<task>`` for an array task, else ``SLURM_JOB_ID``."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    if not re.fullmatch(r"[0-9_]+", job):
        raise ValueError(f"SLURM job id {job!r}: not a job id")
    return job


def requeue(signum: int) -> bool:
    """Under SLURM, after SIGTERM/SIGUSR1: ``scontrol requeue <job>`` (rank 0 only).  True when
    the job was requeued."""
    from codistill import distributed

    if not under_slurm() or signum not in REQUEUE_SIGNALS or distributed.rank() != 0:
        return False
    job = slurm_job_id()
    try:
        rc = subprocess.call(["scontrol", "requeue", job])
    except OSError as e:
        log.warning("could not requeue SLURM job %s: %s", job, e)
        return False
    if rc != 0:
        log.warning("requeueing SLURM job %s failed (scontrol exit status %d)", job, rc)
        return False
    log.info("requeued SLURM job %s", job)
    return True


def exit_status(e: Interrupted) -> int:
    """What the process exits with after ``e``: requeues a SLURM job first (see :func:`requeue`)."""
    requeue(e.signum)
    return e.exit_code
