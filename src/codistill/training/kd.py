"""Training with a distillation loss: the KD student module, its data, and cached teacher logits.

Two sources of teacher distributions (``method.teacher_logits``):

``online``
    the teacher runs inside :class:`KDStudentLM`'s training step: frozen (``requires_grad``
    off, eval mode, no autograd graph), in the dtype it was loaded in (bf16 where the
    hardware runs it fast, see :func:`codistill.models.resolve_dtype`), moved to the
    student's device at fit start.  It is kept out of the module's parameters, so it is
    neither optimised, nor synchronised by DDP, nor written into checkpoints.
``cached``
    :func:`precompute_topk` runs the teacher once over the tokenised training set and stores
    the top-k log-probabilities (at the loss temperature, sorted: ULD needs no more) and their
    ids per position in the content-addressed cache, ``<cache_dir>/teacher_topk/<key>/``,
    key = (teacher identity, its dtype, the tokenised sequences, k, temperature, vocabulary,
    cross-tokenizer mode).  Across tokenizers the sequences are the *teacher's* tokenisation
    of the same texts; the teacher's token spans follow from its ids, and the pairing of
    positions is recomputed from the two tokenizers when the data is built.  Two flat memory-mapped
    files (``logp.f32``, ``ids.i32``: ``[total positions, k]``) hold every sequence; the
    data loader reads one example's rows at a time, so a large set never sits in RAM.
    Sequences are written in a fixed order and a progress file is updated after every
    batch, so a killed precomputation resumes where it stopped; a finished one is reused
    by every later run (any seed, any student of the same tokenizer).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch.utils.data import DataLoader

from codistill.generation.cache import digest
from codistill.training.data import PairDataModule, PairDataset, collate
from codistill.training.losses import (IGNORE, aligned_kd_loss, ce_loss, kd_loss, mix, projected_kd_loss,
                                      sparse_kd_loss, uld_loss)
from codistill.training.module import StudentLM
from codistill.training.resume import ResumableLoader

log = logging.getLogger(__name__)


@dataclass
class KDSpec:
    """What a method hands the trainer to train with a distillation loss."""

    loss: str = "forward_kl"
    beta: float = 0.5
    temperature: float = 1.0
    alpha: float = 0.5
    vocab_size: int = 0  # the shared vocabulary (cross-tokenizer: the student's): logits are sliced to it
    teacher: Any = None  # online: the teacher model
    topk_dir: str | None = None  # cached: a finished precompute_topk directory
    cross: str = "shared"  # shared | uld | aligned (codistill.training.cross_tokenizer)
    teacher_vocab_size: int = 0  # cross-tokenizer: the teacher's vocabulary
    t2s: Any = None  # aligned: teacher id -> student id of the same piece, or -1; projected: of the first token ([V_T])
    cross_items: dict | None = None  # student sequence key -> teacher_input_ids, s_pos, t_pos
    teacher_pad_id: int = 0


# --------------------------------------------------------------------------- cached top-k
def sequence_key(input_ids: list[int]) -> str:
    """A sequence's content address (sha256 of its int32 ids)."""
    return hashlib.sha256(np.asarray(input_ids, dtype=np.int32).tobytes()).hexdigest()


def topk_cache_key(teacher_id: str, items: list[dict], *, k: int, temperature: float, vocab_size: int,
                   dtype: str = "", mode: str = "shared") -> str:
    """The cache key of a set of tokenised sequences' teacher top-k (order-independent).

    ``dtype``: the teacher's weights' dtype (bf16 and fp32 teachers give different
    log-probs); ``mode``: the cross-tokenizer mode the store serves."""
    seqs = sorted({sequence_key(x["input_ids"]) for x in items})
    return digest({"teacher": teacher_id, "sequences": digest(seqs), "k": k, "temperature": temperature,
                   "vocab": vocab_size, "dtype": dtype, "mode": mode, "format": 2})


@torch.inference_mode()
def teacher_topk(teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, k: int, temperature: float,
                 vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``log softmax(teacher_logits[..., :vocab] / T)``'s top-k values and ids, ``[B, L, k]`` each."""
    logits = teacher(input_ids=input_ids, attention_mask=attention_mask).logits[..., :vocab_size]
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    vals, ids = torch.topk(logp, k=min(k, vocab_size), dim=-1)
    return vals, ids


def precompute_topk(teacher, items: list[dict], *, root: str | Path, teacher_id: str, k: int, temperature: float,
                    vocab_size: int, batch_size: int = 8, pad_id: int = 0, mode: str = "shared") -> tuple[Path, dict]:
    """Compute (or reuse) the teacher's top-k log-probs for every sequence of ``items``
    (``items``: sequences in the teacher's tokens; ``mode``: part of the key).

    Returns the store's directory and stats: ``kd/topk_computed`` (sequences run through
    the teacher now), ``kd/topk_reused`` (found in the cache), ``kd/topk_s``.
    """
    k = min(k, vocab_size)
    dtype = str(next(teacher.parameters()).dtype).removeprefix("torch.")
    key = topk_cache_key(teacher_id, items, k=k, temperature=temperature, vocab_size=vocab_size, dtype=dtype,
                         mode=mode)
    out = Path(root).expanduser() / "teacher_topk" / key[:32]
    out.mkdir(parents=True, exist_ok=True)
    by_key = {sequence_key(x["input_ids"]): x["input_ids"] for x in items}
    order = sorted(by_key)
    lengths = [len(by_key[s]) for s in order]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    t0 = time.perf_counter()
    with FileLock(str(out / "lock")):
        index_path, progress_path = out / "index.json", out / "progress.json"
        if index_path.exists():
            return out, {"kd/topk_computed": 0, "kd/topk_reused": len(order), "kd/topk_s": 0.0}
        done = json.loads(progress_path.read_text())["done"] if progress_path.exists() else 0
        mode = "r+" if done and (out / "logp.f32").exists() else "w+"
        done = done if mode == "r+" else 0
        logp_mm = np.memmap(out / "logp.f32", dtype=np.float32, mode=mode, shape=(max(total, 1), k))
        ids_mm = np.memmap(out / "ids.i32", dtype=np.int32, mode=mode, shape=(max(total, 1), k))
        device = next(teacher.parameters()).device
        if done:
            log.info("teacher top-k cache %s: resuming at sequence %d of %d", out.name, done, len(order))
        for start in range(done, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(by_key[s]) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, s in enumerate(chunk):
                ids[r, :len(by_key[s])] = torch.tensor(by_key[s])
                mask[r, :len(by_key[s])] = 1
            vals, top = teacher_topk(teacher, ids.to(device), mask.to(device), k=k, temperature=temperature,
                                     vocab_size=vocab_size)
            vals, top = vals.cpu().numpy(), top.cpu().numpy()
            for r, s in enumerate(chunk):
                i = start + r
                a, n = offsets[i], lengths[i]
                logp_mm[a:a + n] = vals[r, :n]
                ids_mm[a:a + n] = top[r, :n]
            logp_mm.flush()
            ids_mm.flush()
            tmp = progress_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"done": start + len(chunk)}))
            tmp.replace(progress_path)
        index = {"k": k, "temperature": temperature, "vocab": vocab_size, "teacher": teacher_id, "dtype": dtype,
                 "mode": mode, "format": 2, "rows": total,
                 "sequences": {s: [int(offsets[i]), lengths[i]] for i, s in enumerate(order)}}
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index))
        tmp.replace(index_path)  # written last: its presence means the store is complete
    computed = len(order) - done
    return out, {"kd/topk_computed": computed, "kd/topk_reused": done, "kd/topk_s": round(time.perf_counter() - t0, 2)}


class TopKReader:
    """Reads one sequence's cached ``(logp [L, k], ids [L, k])`` from a finished store.

    The memory maps are opened lazily in each process (data-loader workers included)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        index = json.loads((self.path / "index.json").read_text())
        self.k, self.rows, self.where = int(index["k"]), int(index["rows"]), index["sequences"]
        self._mm: tuple | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}

    def get(self, seq_key: str) -> tuple[np.ndarray, np.ndarray]:
        if self._mm is None:
            shape = (max(self.rows, 1), self.k)
            self._mm = (np.memmap(self.path / "logp.f32", dtype=np.float32, mode="r", shape=shape),
                        np.memmap(self.path / "ids.i32", dtype=np.int32, mode="r", shape=shape))
        a, n = self.where[seq_key]
        return np.array(self._mm[0][a:a + n]), np.array(self._mm[1][a:a + n])


# --------------------------------------------------------------------------- data
class TopKDataset(PairDataset):
    """Training items plus each sequence's cached teacher top-k, read from disk per item."""

    def __init__(self, items: list[dict], reader: TopKReader) -> None:
        super().__init__(items)
        self.reader = reader

    def __getitem__(self, i: int) -> dict:
        x = self.items[i]
        logp, ids = self.reader.get(sequence_key(x["input_ids"]))
        return {**x, "teacher_logp": logp, "teacher_ids": ids}


def stack_topk(batch: list[dict], width: int) -> dict:
    """The items' cached ``teacher_logp`` / ``teacher_ids`` (``[n, k]`` each, n = the row's
    length) padded to ``[B, width, k]`` tensors (zeros on padding)."""
    b, k = len(batch), batch[0]["teacher_logp"].shape[1]
    logp, ids = torch.zeros((b, width, k), dtype=torch.float32), torch.zeros((b, width, k), dtype=torch.long)
    for r, x in enumerate(batch):
        n = len(x["teacher_logp"])
        logp[r, :n] = torch.from_numpy(x["teacher_logp"])
        ids[r, :n] = torch.from_numpy(x["teacher_ids"]).long()
    return {"teacher_logp": logp, "teacher_ids": ids}


def collate_topk(batch: list[dict], pad_id: int) -> dict:
    """:func:`collate` plus ``teacher_logp`` / ``teacher_ids`` ``[B, W, k]`` (zeros on padding)."""
    out = collate(batch, pad_id)
    out.update(stack_topk(batch, out["input_ids"].shape[1]))
    return out


class CrossDataset(PairDataset):
    """Cross-tokenizer items: the student's item, the teacher's ids of the same text and the
    paired positions (``spec.cross_items``), plus the teacher's cached top-k when ``reader``."""

    def __init__(self, items: list[dict], cross: dict, reader: TopKReader | None = None) -> None:
        super().__init__(items)
        self.cross, self.reader = cross, reader

    def __getitem__(self, i: int) -> dict:
        x = self.items[i]
        c = self.cross[sequence_key(x["input_ids"])]
        out = {**x, **c}
        if self.reader is not None:
            out["teacher_logp"], out["teacher_ids"] = self.reader.get(sequence_key(c["teacher_input_ids"]))
        return out


def collate_cross(batch: list[dict], pad_id: int, teacher_pad_id: int) -> dict:
    """:func:`collate` plus the teacher's row (``teacher_input_ids`` / ``teacher_attention_mask``
    ``[B, W_T]``), the paired positions ``s_pos`` / ``t_pos`` ``[B, P]`` with ``pos_mask``, and
    the cached top-k ``[B, W_T, k]`` when the items carry it."""
    out = collate(batch, pad_id)
    b = len(batch)
    tw = max(len(x["teacher_input_ids"]) for x in batch)
    pw = max(max(len(x["s_pos"]) for x in batch), 1)
    t_ids = torch.full((b, tw), teacher_pad_id, dtype=torch.long)
    t_mask = torch.zeros((b, tw), dtype=torch.long)
    s_pos, t_pos = torch.zeros((b, pw), dtype=torch.long), torch.zeros((b, pw), dtype=torch.long)
    pos_mask = torch.zeros((b, pw), dtype=torch.bool)
    for r, x in enumerate(batch):
        n, p = len(x["teacher_input_ids"]), len(x["s_pos"])
        t_ids[r, :n] = torch.tensor(x["teacher_input_ids"])
        t_mask[r, :n] = 1
        s_pos[r, :p], t_pos[r, :p] = torch.tensor(x["s_pos"]), torch.tensor(x["t_pos"])
        pos_mask[r, :p] = True
    out.update(teacher_input_ids=t_ids, teacher_attention_mask=t_mask, s_pos=s_pos, t_pos=t_pos, pos_mask=pos_mask)
    if "teacher_logp" in batch[0]:
        out.update(stack_topk(batch, tw))
    return out


class KDDataModule(pl.LightningDataModule):
    """A :class:`PairDataModule`'s items; batches also carry the cached teacher top-k when
    ``topk_dir`` is given (online KD needs nothing more than the tokens), and, across
    tokenizers (``cross``), the teacher's tokens and the paired positions."""

    def __init__(self, base: PairDataModule, topk_dir: str | Path | None = None, cross: dict | None = None,
                 teacher_pad_id: int = 0) -> None:
        super().__init__()
        self.base = base
        self.reader = TopKReader(topk_dir) if topk_dir else None
        self.cross, self.teacher_pad_id = cross, teacher_pad_id

    @property
    def n_tokens(self) -> int:
        return self.base.n_tokens

    @property
    def items(self) -> list[dict]:
        return self.base.items

    def train_dataloader(self) -> DataLoader:
        b = self.base
        if self.reader is None and self.cross is None:
            return b.train_dataloader()
        pad = b.tokenizer.pad_token_id if b.tokenizer.pad_token_id is not None else b.tokenizer.eos_token_id
        if self.cross is not None:
            data = CrossDataset(b.items, self.cross, self.reader)
            fn = functools.partial(collate_cross, pad_id=pad, teacher_pad_id=self.teacher_pad_id)
        else:
            data, fn = TopKDataset(b.items, self.reader), functools.partial(collate_topk, pad_id=pad)
        return ResumableLoader(data, batch_size=b.batch_size, shuffle=True, num_workers=b.num_workers, collate_fn=fn,
                          generator=torch.Generator().manual_seed(b.seed))


# --------------------------------------------------------------------------- the module
class KDStudentLM(StudentLM):
    """The student trained on ``alpha * kd + (1 - alpha) * ce``; logs ``train/kd_loss``,
    ``train/ce_loss`` and their mix ``train/loss``."""

    def __init__(self, model, spec: KDSpec, *, lr: float, weight_decay: float, warmup_steps: int,
                 **speed) -> None:
        super().__init__(model, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, **speed)
        self.spec = spec
        self.remove_ignored_hparams(["spec"])  # plain values only: the teacher model is no hyperparameter
        self.save_hyperparameters({
            "lr": lr, "weight_decay": weight_decay, "warmup_steps": warmup_steps, "kd_loss": spec.loss,
            "kd_beta": spec.beta, "kd_temperature": spec.temperature, "kd_alpha": spec.alpha,
            "kd_vocab_size": spec.vocab_size, "kd_teacher_logits": "online" if spec.teacher is not None else "cached",
            "kd_cross_tokenizer": spec.cross})
        self._teacher = (spec.teacher,)  # a tuple: not a submodule (not trained, synced, or saved)
        if spec.teacher is not None:
            spec.teacher.eval().requires_grad_(False)

    @property
    def teacher(self):
        return self._teacher[0]

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """``kd``, ``ce`` and ``loss`` for one batch (positions with an IGNORE label skipped)."""
        s = self.spec
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        keep = labels != IGNORE
        if s.cross != "shared":
            return self._cross_losses(batch, logits, labels, keep)
        student = logits[:, :-1][keep]  # [N, V_student]: the positions that have a target
        targets = labels[keep]
        ce = ce_loss(student, targets)
        student = student[..., :s.vocab_size]
        if self.teacher is not None:
            with torch.no_grad():
                t_logits = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            kd = kd_loss(student, t_logits[:, :-1][keep][..., :s.vocab_size], targets, kind=s.loss, beta=s.beta,
                         temperature=s.temperature)
        elif "teacher_logp" in batch:
            kd = sparse_kd_loss(student, batch["teacher_logp"][:, :-1][keep], batch["teacher_ids"][:, :-1][keep],
                                targets, kind=s.loss, beta=s.beta, temperature=s.temperature)
        else:
            raise ValueError("KD needs a teacher: an online teacher model or batches with cached teacher_logp")
        return {"kd": kd, "ce": ce, "loss": mix(kd, ce, s.alpha)}

    def _cross_losses(self, batch: dict, logits: torch.Tensor, labels: torch.Tensor,
                      keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Across tokenizers: CE on the student's own labels; the KD term over the paired
        completion positions (``s_pos`` in the student's row, ``t_pos`` in the teacher's),
        ULD, the aligned hybrid or the first-token projection (:mod:`codistill.training.losses`)."""
        s = self.spec
        ce = ce_loss(logits[:, :-1][keep], labels[keep])
        student = paired(logits, batch["s_pos"], batch["pos_mask"])[..., :s.vocab_size]  # [N, V_S]
        if self.teacher is not None:
            t_logp, t_ids, complete = self.teacher_paired_logp(batch), None, True
        elif "teacher_logp" in batch:
            t_logp = paired(batch["teacher_logp"], batch["t_pos"], batch["pos_mask"])
            t_ids, complete = paired(batch["teacher_ids"], batch["t_pos"], batch["pos_mask"]), False
        else:
            raise ValueError("KD needs a teacher: an online teacher model or batches with cached teacher_logp")
        kd = self.cross_kd(student, t_logp, t_ids, kind=s.loss, complete=complete)
        return {"kd": kd, "ce": ce, "loss": mix(kd, ce, s.alpha)}

    @torch.no_grad()
    def teacher_paired_logp(self, batch: dict) -> torch.Tensor:
        """The online teacher's log-probs (at ``temperature``) at the paired positions ``t_pos`` of
        its own tokenization of the batch's rows: ``[N, V_T]``."""
        s = self.spec
        t = self.teacher(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"],
                         use_cache=False).logits
        t = paired(t, batch["t_pos"], batch["pos_mask"])[..., :s.teacher_vocab_size]
        return F.log_softmax(t.float() / s.temperature, dim=-1)

    def cross_kd(self, student: torch.Tensor, t_logp: torch.Tensor, t_ids: torch.Tensor | None, *, kind: str,
                 complete: bool = True, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The KD term across tokenizers for ``spec.cross``: ULD (``beta``, ``kind`` unused), the
        first-token projection or the aligned hybrid, over paired positions ``[N, ...]``."""
        s = self.spec
        if s.cross == "uld":
            return uld_loss(student, t_logp, complete=complete, temperature=s.temperature, weights=weights)
        loss = projected_kd_loss if s.cross == "projected" else aligned_kd_loss
        return loss(student, t_logp, t_ids, s.t2s, kind=kind, beta=s.beta, temperature=s.temperature,
                    weights=weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)  # tokens/s and MFU: StudentLM's batch hooks
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train/kd_loss", out["kd"], prog_bar=True, batch_size=bs)
        self.log("train/ce_loss", out["ce"], batch_size=bs)
        self._last = {"train/loss": out["loss"].detach(), "train/kd_loss": out["kd"].detach(),
                      "train/ce_loss": out["ce"].detach()}
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return out["loss"]


def paired(x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` ``[B, T, ...]`` at the paired *shifted* positions ``pos`` ``[B, P]`` (index i:
    the row predicting token i + 1), flattened over ``mask`` ``[B, P]``: ``[N, ...]``."""
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[:, :-1][rows, pos][mask]


def kd_modules(model, data: PairDataModule, cfg, spec: KDSpec, **speed) -> tuple[KDDataModule, KDStudentLM]:
    """The data module (``data``'s items, plus cached top-k) and LightningModule that train
    ``model`` with ``spec``'s loss.  ``speed``: StudentLM's throughput/MFU settings.  A spec with
    ``make_modules`` (:class:`codistill.training.on_policy.OnPolicySpec`) makes its own pair."""
    if hasattr(spec, "make_modules"):
        return spec.make_modules(model, data, cfg, **speed)
    module = KDStudentLM(model, spec, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                         warmup_steps=cfg.train.warmup_steps, log_every_n_steps=cfg.trainer.log_every_n_steps,
                         **speed)
    return KDDataModule(data, spec.topk_dir, spec.cross_items, spec.teacher_pad_id), module


__all__ = ["CrossDataset", "KDDataModule", "collate_cross", "KDSpec", "KDStudentLM", "TopKReader", "collate_topk", "kd_modules",
           "paired", "precompute_topk", "sequence_key", "teacher_topk", "topk_cache_key"]
