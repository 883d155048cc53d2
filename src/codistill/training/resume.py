"""Resumable training: a run killed at any point continues where its last checkpoint left it.

* :class:`ResumeCheckpoint` writes ``checkpoints/last.ckpt`` every
  ``train.checkpoint_every_n_steps`` optimizer steps and/or every
  ``train.checkpoint_every_n_epochs`` epochs, when training ends, and when a signal asks the
  run to stop (:mod:`codistill.interrupt`).  It is written to a temporary file and renamed
  over the old one, so a kill mid-write never leaves a torn ``last.ckpt``.
* :class:`ResumableLoader` is a DataLoader that Lightning checkpoints: the shuffle state of
  the current epoch and the batches it has handed out.  A run resumed mid-epoch skips those
  batches in the same order, so it trains on exactly what an uninterrupted run would (and on
  CPU ends with the same weights) -- Lightning alone restarts the epoch's data from its first
  batch when the loader has no state.
* :func:`checkpoint_to_resume` refuses a checkpoint that cannot be read (renamed
  ``last.ckpt.corrupt``) or was written under another training config or training set
  (``last.ckpt.stale``): that training stage then starts afresh, and the log says why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from codistill import faults, interrupt

log = logging.getLogger(__name__)

LAST = "last.ckpt"
META_KEY = "codistill/resume"  # checkpoint entry: the digests the checkpoint was written under

# config keys that do not change what training computes (where it writes, what it prints, gates)
_TRAIN_SKIP = {"save_student", "checkpoint_every_n_epochs", "checkpoint_every_n_steps", "memory_check",
               "num_workers"}
_TRAINER_SKIP = {"log_every_n_steps", "enable_progress_bar"}


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True)
    except Exception:
        return obj


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_digest(cfg) -> str:
    """A hash of the config that decides what training computes: ``train`` (less checkpointing,
    memory gate, output options), the trainer's numerics, the student, the teacher and method
    (losses, KD settings) and the seed.  Evaluation, logging and paths are left out."""
    def section(name, skip=()):
        value = _plain(getattr(cfg, name, None))
        return {k: v for k, v in value.items() if k not in skip} if isinstance(value, dict) else value

    return _digest({"train": section("train", _TRAIN_SKIP), "trainer": section("trainer", _TRAINER_SKIP),
                    "student": section("student"), "teacher": section("teacher"), "method": section("method"),
                    "seed": getattr(cfg, "seed", None)})


def data_digest(pairs: list[dict]) -> str:
    """A hash of the training set, in order."""
    return _digest(pairs)


def _move_aside(path: Path, suffix: str) -> Path:
    aside = path.with_name(path.name + suffix)
    os.replace(path, aside)
    return aside


def checkpoint_to_resume(ckpt_dir: Path, digests: dict[str, str]) -> Path | None:
    """``ckpt_dir/last.ckpt`` when it can be resumed from, else None (start afresh).

    A checkpoint that does not load (truncated by a kill mid-write of an older codistill, a
    full disk) is moved to ``last.ckpt.corrupt``; one written under other ``digests`` (the
    training config, the training set) or recording none is moved to ``last.ckpt.stale``.
    Either way a warning names the file and the reason."""
    last = Path(ckpt_dir) / LAST
    if not last.exists():
        return None
    import torch

    try:  # mmap: the tensors stay on disk; only the small metadata is read
        ckpt = torch.load(last, map_location="cpu", mmap=True, weights_only=False)
        meta = dict(ckpt.get(META_KEY) or {})
        del ckpt
    except Exception as e:
        aside = _move_aside(last, ".corrupt")
        log.warning("checkpoint %s cannot be read (%s: %s); moved to %s, this training stage starts afresh",
                    last, type(e).__name__, str(e).splitlines()[0] if str(e) else "", aside)
        return None
    if not meta:
        why = "it records no config/data digest (written by an older codistill)"
    else:
        differs = [k for k in digests if meta.get(k) != digests[k]]
        why = ", ".join(f"{k} {meta.get(k)} != {digests[k]} now" for k in differs)
    if why:
        aside = _move_aside(last, ".stale")
        log.warning("checkpoint %s was written under another setup (%s); moved to %s, this training stage "
                    "starts afresh", last, why, aside)
        return None
    return last


class ResumeCheckpoint(Callback):
    """Writes ``dirpath/last.ckpt`` (atomically) at the configured interval, at the end of
    training and when a signal stops the run; marks the ``train_step`` fault point.

    ``every_n_steps``/``every_n_epochs``: 0 = not on that schedule; both 0 (``enabled`` False):
    no checkpoint at all, a signal still stops training after the current step."""

    def __init__(self, dirpath: Path, *, every_n_epochs: int = 1, every_n_steps: int = 0,
                 meta: dict | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.enabled = bool(every_n_epochs or every_n_steps)
        self.meta = dict(meta or {})
        self._last_step: int | None = None  # global_step at the previous batch end
        self._saved_step: int | None = None
        self._loader_states: list[dict] = []  # the train loaders' states in the checkpoint resumed

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[META_KEY] = self.meta

    def save(self, trainer) -> None:
        path = self.dirpath / LAST
        tmp = path.with_name(LAST + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank takes part (FSDP gathers); rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
        self._saved_step = trainer.global_step

    def _stop_if_signalled(self, trainer) -> None:
        if interrupt.pending() is None:
            return
        if self.enabled and self._saved_step != trainer.global_step:
            log.warning("saving %s before stopping", self.dirpath / LAST)
            self.save(trainer)
        interrupt.check()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._loader_states = loop.get("combined_loader", [])

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        # Lightning restores a loader's state only when it sets the data up after the checkpoint is
        # read; ours was set up before (for the step count), so the state is handed over here
        states, self._loader_states = self._loader_states, []
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for loader, state in zip([dl for dl in loaders if isinstance(dl, ResumableLoader)], states):
            loader.load_state_dict(state)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stepped = trainer.global_step != self._last_step  # False while accumulating gradients
        self._last_step = trainer.global_step
        if not stepped:  # a checkpoint here would lose the gradients accumulated so far: stop at the
            if interrupt.pending() is not None and hasattr(trainer, "_signal_connector"):  # step's end
                trainer._signal_connector.received_sigterm = False  # Lightning would stop right here
            return
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)
        faults.hit("train_step", trainer.global_step)
        self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        last_epoch = trainer.current_epoch + 1 >= trainer.max_epochs  # on_train_end saves that one
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not last_epoch:
            self.save(trainer)
        self._stop_if_signalled(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.enabled:
            self.save(trainer)  # the final state: a rerun (killed in evaluation) trains no further


class ResumableLoader(DataLoader):
    """A DataLoader with Lightning's ``state_dict``/``load_state_dict``: the shuffle generator's
    state at the start of the current epoch and the batches handed out since.  Restored, its
    next epoch draws the same order and skips the batches already trained on.  (Constructed
    exactly like a DataLoader, so Lightning can re-create it with a distributed sampler.)"""

    _epoch_rng = None  # generator state when the current epoch's iterator was made
    _yielded = 0
    _resume: dict | None = None

    def __iter__(self):
        return self._epoch()

    def _epoch(self):
        # lazy: Lightning makes the iterator before it restores a checkpoint (``configure_optimizers``
        # asks for the number of steps), so the resume state is applied at the first batch
        g = self.generator
        skip = 0
        if self._resume:
            if g is not None and self._resume.get("rng") is not None:
                g.set_state(self._resume["rng"])
            skip = int(self._resume.get("skip", 0))
            self._resume = None
        self._epoch_rng = g.get_state().clone() if g is not None else None
        it = super().__iter__()
        for _ in range(skip):
            next(it)
        self._yielded = skip
        for batch in it:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        if self._epoch_rng is None:
            return {}
        done = self._yielded >= len(self)  # the next epoch starts from the generator as it is now
        g = self.generator
        rng = (g.get_state() if done else self._epoch_rng) if g is not None else None
        return {"rng": rng, "skip": 0 if done else self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state) if state else None
