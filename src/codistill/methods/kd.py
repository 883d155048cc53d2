"""``method=kd``: token-level knowledge distillation (the KD baseline of the EKT paper).

The training set is drawn exactly as EKT draws it (same prompts, the ``sampling`` section,
``ctx.backend("teacher")``, so the generation cache is shared with EKT/StanD runs of a
sweep) and, with ``filter: true`` (default), filtered by execution as EKT does; with
``filter: false`` every teacher sample is kept.  The student then learns the teacher's
token distributions on those sequences: ``alpha * kd + (1 - alpha) * ce`` (see
:mod:`codistill.training.losses`), with the teacher online in the training step or its
top-k log-probs cached on disk (:mod:`codistill.training.kd`).

Before any weights load, :meth:`KD.check` compares the tokenizers and settles
``method.cross_tokenizer`` (:func:`codistill.training.cross_tokenizer.resolve_mode`): one
shared vocabulary (or one extending the other) distils token by token; otherwise (``auto``)
the two tokenizations of each text are aligned by their character spans (``aligned``; with the
teacher's distribution carried onto the student's vocabulary: ``projected``), or compared by ULD
(``uld``); ``refuse`` keeps the early :class:`TokenizerMismatch`.
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
    cross_tokenizer: str = "auto"  # auto | uld | aligned | projected | refuse: a teacher of another vocabulary

    def check(self, key: str) -> None:
        super().check(key)
        choice(self.cross_tokenizer, f"{key}.cross_tokenizer", ("auto", "uld", "aligned", "projected", "refuse"))
        choice(self.loss, f"{key}.loss", ("forward_kl", "reverse_kl", "jsd"))
        check(0.0 <= self.beta <= 1.0, f"{key}.beta", f"must be in [0, 1], got {self.beta}")
        check(self.temperature > 0, f"{key}.temperature", f"must be > 0, got {self.temperature}")
        check(0.0 <= self.alpha <= 1.0, f"{key}.alpha", f"must be in [0, 1], got {self.alpha}")
        choice(self.teacher_logits, f"{key}.teacher_logits", ("online", "cached"))
        check(self.top_k >= 1, f"{key}.top_k", f"must be >= 1, got {self.top_k}")
        check(self.teacher_batch_size >= 1, f"{key}.teacher_batch_size", "must be >= 1")


class KD(EKT):
    Config = KDConfig

    def check(self, ctx: RunContext) -> None:
        from codistill.training.cross_tokenizer import resolve_mode

        cross = self.cfg.cross_tokenizer  # kd and on_policy (a KD subclass) both have the option
        self.mode, self.vocab_size = resolve_mode(cross, ctx.tokenizer("teacher"),
                                                  ctx.tokenizer("student"), teacher_name=ctx.cfg.teacher.name,
                                                  student_name=ctx.cfg.student.name)
        if self.mode != "shared":
            log.info("KD across tokenizers (%s -> %s): method.cross_tokenizer=%s -> %s", ctx.cfg.teacher.name,
                     ctx.cfg.student.name, cross, self.mode)

    def select(self, judged: list[Judged]) -> list[Judged]:
        return super().select(judged) if self.cfg.filter else list(judged)

    def build(self, ctx: RunContext) -> MethodResult:
        from codistill.training.kd import KDSpec

        if getattr(self, "vocab_size", None) is None:
            self.check(ctx)
        m = self.cfg
        result = super().build(ctx)  # samples, judges, writes generations.jsonl / train_set.jsonl
        spec = KDSpec(loss=m.loss, beta=m.beta, temperature=m.temperature, alpha=m.alpha,
                      vocab_size=self.vocab_size, cross=self.mode)
        result.metrics.update({"kd/vocab_size": self.vocab_size, "kd/teacher_logits": m.teacher_logits,
                               "kd/cross_tokenizer": self.mode})
        if not result.pairs:
            return result
        teacher_items = self._cross(ctx, spec, result) if self.mode != "shared" else None
        teacher, _, _ = ctx.load("teacher")
        if m.teacher_logits == "online":
            spec.teacher = teacher  # released with the run; the student trains next to it
        else:
            spec.topk_dir, stats = self._precompute(ctx, teacher, result.pairs, teacher_items, spec)
            result.metrics.update(stats)
            ctx.release("teacher")
        result.plan.objective = spec  # train on the same examples with the distillation loss
        return result

    def _cross(self, ctx: RunContext, spec, result: MethodResult) -> list[dict]:
        """Across tokenizers: every pair through both tokenizers, its completion positions
        paired (:func:`codistill.training.cross_tokenizer.encode_cross`), into ``spec``;
        returns the teacher's items."""
        from codistill.training.cross_tokenizer import encode_cross
        from codistill.training.kd import sequence_key

        cfg = ctx.cfg
        s_tok, t_tok = ctx.tokenizer("student"), ctx.tokenizer("teacher")
        self._cross_vocab(ctx, spec)
        spec.cross_items, teacher_items, n_pos, n_tok = {}, [], 0, 0
        for x in result.pairs:
            c = encode_cross(s_tok, t_tok, x["prompt"], x["completion"], max_len=cfg.train.max_seq_len,
                             mask_prompt=cfg.train.mask_prompt, mode=self.mode)
            spec.cross_items[sequence_key(c.student["input_ids"])] = {
                "teacher_input_ids": c.teacher["input_ids"], "s_pos": c.s_pos, "t_pos": c.t_pos}
            teacher_items.append(c.teacher)
            n_pos += len(c.s_pos)
            n_tok += sum(1 for v in c.student["labels"][1:] if v != -100)
        result.metrics.update({"kd/cross_positions": n_pos, "kd/cross_position_share": round(n_pos / max(n_tok, 1), 4),
                               "kd/vocab_size": spec.vocab_size, "kd/teacher_vocab_size": spec.teacher_vocab_size})
        if spec.t2s is not None:  # aligned: pieces both vocabularies share; projected: teacher pieces mapped
            key = "kd/shared_pieces" if self.mode == "aligned" else "kd/mapped_pieces"
            result.metrics[key] = int((spec.t2s >= 0).sum())
        return teacher_items

    def _cross_vocab(self, ctx: RunContext, spec) -> None:
        """Across tokenizers, into ``spec``: both vocabulary sizes, the teacher's pad id and, for
        ``aligned`` / ``projected``, the teacher-id -> student-id map (kd and on_policy alike)."""
        import torch

        from codistill.training.cross_tokenizer import tokenizer_piece_map, tokenizer_projection_map

        s_tok, t_tok = ctx.tokenizer("student"), ctx.tokenizer("teacher")
        spec.cross, spec.vocab_size, spec.teacher_vocab_size = self.mode, len(s_tok), len(t_tok)
        spec.teacher_pad_id = t_tok.pad_token_id if t_tok.pad_token_id is not None else t_tok.eos_token_id
        maps = {"aligned": tokenizer_piece_map, "projected": tokenizer_projection_map}
        if self.mode in maps:
            spec.t2s = torch.from_numpy(maps[self.mode](t_tok, s_tok, spec.teacher_vocab_size))

    def _precompute(self, ctx: RunContext, teacher, pairs: list[dict], teacher_items: list[dict] | None = None,
                    spec=None) -> tuple[str, dict]:
        """The teacher's top-k over the tokenised training set (across tokenizers: the
        teacher's own tokenisation), into the cache (or found there)."""
        import torch

        from codistill.models import model_identity
        from codistill.training.data import encode_example
        from codistill.training.kd import precompute_topk

        cfg, m = ctx.cfg, self.cfg
        if teacher_items is None:
            tok = ctx.tokenizer("student")
            items = [encode_example(tok, x["prompt"], x["completion"], max_len=cfg.train.max_seq_len,
                                    mask_prompt=cfg.train.mask_prompt) for x in pairs]
            vocab = self.vocab_size
        else:
            tok, items, vocab = ctx.tokenizer("teacher"), teacher_items, spec.teacher_vocab_size
        if torch.cuda.is_available() and cfg.trainer.accelerator in ("gpu", "cuda", "auto"):
            teacher.to("cuda")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out, stats = precompute_topk(teacher, items, root=ctx.cache_dir, teacher_id=model_identity(cfg.teacher),
                                     k=m.top_k, temperature=m.temperature, vocab_size=vocab,
                                     batch_size=m.teacher_batch_size, pad_id=pad, mode=self.mode)
        log.info("KD: teacher top-%d log-probs in %s (%d sequences computed, %d reused)", m.top_k, out,
                 stats["kd/topk_computed"], stats["kd/topk_reused"])
        return str(out), stats
