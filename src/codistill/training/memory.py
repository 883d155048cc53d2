"""A training memory estimate, checked before training starts.

Per process (data parallel: every rank holds all of this; FSDP divides the parameter,
gradient and optimizer terms by the number of ranks):

- weights: ``N * weight_bytes``
- gradients: ``N_trainable * grad_bytes`` (gradients follow the weights' dtype)
- AdamW states: ``2 * N_trainable * 4`` (two fp32 moments)
- mixed precision: activations in half precision (``act_bytes`` = 2), weights stay fp32
- activations: ``batch * seq * hidden * layers * k`` bytes, with ``k`` = 34 bytes per
  hidden unit per layer in half precision (Korthikanti et al. 2022, no recomputation;
  doubled for fp32) plus the logits ``batch * seq * vocab * 4 * 2`` (fp32 logits and their
  gradient, which dominate for small models with large vocabularies); with gradient
  checkpointing only each layer's input is kept (``2 * hidden`` per token per layer) plus
  one layer's full activations.
- ``extra_bytes``: anything else resident, e.g. a teacher model held for online KD and
  its logits in the training step (:func:`kd_logit_bytes`).

The figures are deliberately simple and on the generous side: the point is to fail in the
first seconds with the numbers when a run plainly cannot fit, not to pack memory tightly.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    extra: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.extra

    def describe(self) -> str:
        parts = ", ".join(f"{k} {getattr(self, k) / GIB:.2f}" for k in
                          ("weights", "gradients", "optimizer", "activations", "extra"))
        return f"{self.total / GIB:.2f} GiB ({parts} GiB)"


def estimate_training_memory(*, n_params: int, n_trainable: int, weight_bytes: int, n_layers: int,
                             hidden: int, vocab: int, batch: int, seq_len: int, half_activations: bool,
                             gradient_checkpointing: bool = False, shards: int = 1,
                             extra_bytes: int = 0) -> MemoryEstimate:
    """Bytes one process needs to train (see the module docstring for the formula)."""
    weights = n_params * weight_bytes // shards
    gradients = n_trainable * weight_bytes // shards
    optimizer = 2 * n_trainable * 4 // shards
    act_scale = 1 if half_activations else 2
    tokens = batch * seq_len
    per_layer = 34 * hidden * tokens * act_scale
    if gradient_checkpointing:
        layers = n_layers * 2 * hidden * tokens * act_scale + per_layer
    else:
        layers = n_layers * per_layer
    logits = tokens * vocab * 4 * 2
    return MemoryEstimate(weights, gradients, optimizer, layers + logits, int(extra_bytes))


def kd_logit_bytes(*, batch: int, seq_len: int, teacher_vocab: int, student_vocab: int, online: bool,
                   cross: bool) -> int:
    """The KD loss's own working memory beyond the student's logits (bytes).

    Online: the teacher's logits over its vocabulary at every position, in fp32, and their
    log-softmax (``2 * 4`` bytes per entry).  Across tokenizers the ULD terms also sort both
    sides' probabilities (values + int64 indices: ``12`` bytes per entry, student side with
    its gradient) -- the teacher's side dominates for a Qwen-sized (152k) vocabulary.  A
    cached teacher brings only its top-k (negligible)."""
    tokens = batch * seq_len
    if not online:
        return tokens * student_vocab * 12 if cross else 0
    out = tokens * teacher_vocab * 4 * 2
    if cross:
        out += tokens * (teacher_vocab + student_vocab) * 12
    return int(out)


def estimate_for_model(model, *, batch: int, seq_len: int, half_activations: bool,
                       gradient_checkpointing: bool = False, shards: int = 1,
                       extra_bytes: int = 0) -> MemoryEstimate:
    """:func:`estimate_training_memory` with the sizes read from a transformers model."""
    params = list(model.parameters())
    cfg = model.config
    p0 = params[0]
    return estimate_training_memory(
        n_params=sum(p.numel() for p in params), n_trainable=sum(p.numel() for p in params if p.requires_grad),
        weight_bytes=p0.element_size(), n_layers=int(cfg.num_hidden_layers), hidden=int(cfg.hidden_size),
        vocab=int(cfg.vocab_size), batch=batch, seq_len=seq_len, half_activations=half_activations,
        gradient_checkpointing=gradient_checkpointing, shards=shards, extra_bytes=extra_bytes)


def available_memory(device) -> tuple[int, str]:
    """(bytes, what) one process may use: a CUDA device's total memory, else available RAM
    (divided among the processes sharing this machine is the caller's job)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory), f"{torch.cuda.get_device_name(device)} memory"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "available RAM"
    except (OSError, KeyError, ValueError):  # pragma: no cover - not Linux
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "available RAM"


class InsufficientMemoryError(RuntimeError):
    """The estimate says training cannot fit; the message carries the numbers."""


def check_fits(est: MemoryEstimate, available: int, what: str, *, processes: int = 1,
               resident: int = 0) -> None:
    """Raise :class:`InsufficientMemoryError` when ``processes`` times the estimate exceed ``available``.

    ``resident``: bytes of the estimate this process already holds (on CPU the loaded student and
    an online teacher are resident when the check runs, so ``available`` no longer includes them:
    counting them again failed a 0.5B student that had room)."""
    need = est.total * processes - resident
    if need > available:
        per = f" x {processes} processes" if processes > 1 else ""
        held = f", {resident / GIB:.2f} GiB of it already loaded" if resident else ""
        raise InsufficientMemoryError(
            f"training needs about {need / GIB:.2f} GiB more ({est.describe()}{per}{held}) but only "
            f"{available / GIB:.2f} GiB of {what} is there; lower train.batch_size / train.max_seq_len, "
            f"set train.gradient_checkpointing=true or student.lora.enabled=true, or use more devices "
            f"(train.memory_check=false skips this check)")
