"""``method=kd``: token-level knowledge distillation (the KD baseline of the EKT paper).

The training set is drawn exactly as EKT draws it (same prompts, the ``sampling`` section,
``ctx.backend("teacher")``, so the generation cache is shared with EKT/StanD runs of a
sweep) and, with ``filter: true`` (default), filtered by execution as EKT does; with
``filter: false`` every teacher sample is kept.  The student then learns the teacher's
token distributions on those sequences: ``alpha * kd + (1 - alpha) * ce`` (see
:mod:`codistill.training.losses`), with the teacher online in the training step or its
top-k log-probs cached on disk (:mod:`codistill.training.kd`).

Before any weights load, :meth:`KD.check` compares the tokenizers
(:func:`codistill.training.vocab.shared_vocab_size`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from codistill.methods.base import MethodResult, RunContext
from codistill.methods.ekt import EKT, EKTConfig
from codistill.plugins import check, choice
from codistill.tasks.judge import Judged

log = logging.getLogger(__name__)


@dataclass
class KDConfig(EKTConfig):
    """Token-level distillation on teacher samples (drawn and, by default, filtered as in EKT).

    loss = alpha * kd + (1 - alpha) * ce, kd in {forward_kl, reverse_kl, jsd (beta)} at
    ``temperature`` (times T^2).  teacher_logits: ``online`` (the frozen teacher runs in the
    training step) or ``cached`` (its top-``top_k`` log-probs computed once into the cache).
    """

    name: str = "kd"
    filter: bool = True  # keep only passing samples (as EKT); false: every teacher sample
    loss: str = "forward_kl"  # forward_kl | reverse_kl | jsd
    beta: float = 0.5  # jsd only: 0 -> forward KL, 1 -> reverse KL
    temperature: float = 1.0
    alpha: float = 0.5  # weight of the KD term; 1 - alpha weighs the cross-entropy
    teacher_logits: str = "online"  # online | cached
    top_k: int = 64  # cached only: teacher log-probs kept per position
    teacher_batch_size: int = 8  # cached only: sequences per teacher forward when precomputing

    def check(self, key: str) -> None:
        super().check(key)
        choice(self.loss, f"{key}.loss", ("forward_kl", "reverse_kl", "jsd"))
        check(0.0 <= self.beta <= 1.0, f"{key}.beta", f"must be in [0, 1], got {self.beta}")
        check(self.temperature > 0, f"{key}.temperature", f"must be > 0, got {self.temperature}")
        check(0.0 <= self.alpha <= 1.0, f"{key}.alpha", f"must be in [0, 1], got {self.alpha}")
        choice(self.teacher_logits, f"{key}.teacher_logits", ("online", "cached"))
        check(self.top_k >= 1, f"{key}.top_k", f"must be >= 1, got {self.top_k}")
        check(self.teacher_batch_size >= 1, f"{key}.teacher_batch_size", "must be >= 1")


class KD(EKT):
    name = "kd"
    Config = KDConfig

    def check(self, ctx: RunContext) -> None:
        from codistill.training.vocab import shared_vocab_size

        self.vocab_size = shared_vocab_size(ctx.tokenizer("teacher"), ctx.tokenizer("student"),
                                            teacher_name=ctx.cfg.teacher.name, student_name=ctx.cfg.student.name)

    def select(self, judged: list[Judged]) -> list[Judged]:
        return super().select(judged) if self.cfg.filter else list(judged)

    def build(self, ctx: RunContext) -> MethodResult:
        from codistill.training.kd import KDSpec

        if getattr(self, "vocab_size", None) is None:
            self.check(ctx)
        m = self.cfg
        result = super().build(ctx)  # samples, judges, writes generations.jsonl / train_set.jsonl
        spec = KDSpec(loss=m.loss, beta=m.beta, temperature=m.temperature, alpha=m.alpha,
                      vocab_size=self.vocab_size)
        result.metrics.update({"kd/vocab_size": self.vocab_size, "kd/teacher_logits": m.teacher_logits})
        if not result.pairs:
            return result
        teacher, _, _ = ctx.load("teacher")
        if m.teacher_logits == "online":
            spec.teacher = teacher  # released with the run; the student trains next to it
        else:
            spec.topk_dir, stats = self._precompute(ctx, teacher, result.pairs)
            result.metrics.update(stats)
            ctx.release("teacher")
        result.kd = spec
        return result

    def _precompute(self, ctx: RunContext, teacher, pairs: list[dict]) -> tuple[str, dict]:
        """The teacher's top-k over the tokenised training set, into the cache (or found there)."""
        import torch

        from codistill.models import model_identity
        from codistill.training.data import encode_example
        from codistill.training.kd import precompute_topk

        cfg, m = ctx.cfg, self.cfg
        s_tok = ctx.tokenizer("student")
        items = [encode_example(s_tok, x["prompt"], x["completion"], max_len=cfg.train.max_seq_len,
                                mask_prompt=cfg.train.mask_prompt) for x in pairs]
        if torch.cuda.is_available() and cfg.trainer.accelerator in ("gpu", "cuda", "auto"):
            teacher.to("cuda")
        pad = s_tok.pad_token_id if s_tok.pad_token_id is not None else s_tok.eos_token_id
        out, stats = precompute_topk(teacher, items, root=ctx.cache_dir, teacher_id=model_identity(cfg.teacher),
                                     k=m.top_k, temperature=m.temperature, vocab_size=self.vocab_size,
                                     batch_size=m.teacher_batch_size, pad_id=pad)
        log.info("KD: teacher top-%d log-probs in %s (%d sequences computed, %d reused)", m.top_k, out,
                 stats["kd/topk_computed"], stats["kd/topk_reused"])
        return str(out), stats
