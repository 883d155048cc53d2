"""``method=on_policy``: on-policy distillation (GKD, Agarwal et al. 2024), execution-aware.

1. Before any weights load, :meth:`OnPolicy.check` compares the tokenizers and settles
   ``method.cross_tokenizer`` as ``kd`` does: with one vocabulary the teacher scores the
   student's own token ids; across tokenizers (``auto`` -> ``aligned``, or ``uld``) every row is
   handled as text and the two tokenizations are aligned by their character spans
   (:mod:`codistill.training.on_policy`); ``refuse`` keeps the early error.  FSDP is refused
   (sampling inside a sharded step is not supported).
2. The off-policy data: the teacher's samples, drawn exactly as EKT/KD draw them (same prompts,
   ``sampling`` section, generation cache shared with ekt/kd/stand runs of a sweep) and judged;
   ``filter: false`` (default) keeps every one, so every training problem has a prompt to roll
   out from; ``filter: true`` keeps the passing ones (EKT's keep policy).
3. The plan: an :class:`codistill.training.on_policy.OnPolicySpec` (online frozen teacher, the
   shared vocabulary or the cross-tokenizer mode, the rollout and feedback settings, the problems and the student's prompts
   the sandbox judges rollouts against).  Training then samples from the student on a ``lmbda``
   share of the steps (see :mod:`codistill.training.on_policy`); those samples are never cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from codistill.methods.base import MethodResult, RunContext
from codistill.methods.ekt import EKTConfig
from codistill.methods.kd import KD
from codistill.plugins import check, choice

log = logging.getLogger(__name__)


@dataclass
class OnPolicyConfig(EKTConfig):
    """On-policy distillation (GKD): on a ``lmbda`` share of the steps the student samples its own
    completions, which the frozen teacher scores token by token (generalised JSD at ``beta``,
    ``temperature``); the other steps train the same way on the teacher's samples (drawn as in EKT,
    kept all or, ``filter``, only the passing ones).  ``feedback``: the rollouts' sandbox verdicts
    weigh them -- none | failed_only (passing samples left out) | weighted (``pass_weight``)."""

    name: str = "on_policy"
    filter: bool = False  # off-policy data: every teacher sample (true: only passing ones, as EKT)
    lmbda: float = 0.5  # share of on-policy steps (0: KD on teacher samples only; 1: all on-policy)
    beta: float = 0.5  # generalised JSD: 0 -> forward KL, 1 -> reverse KL
    temperature: float = 1.0
    seq_kd: bool = False  # on-policy steps also keep the batch's teacher samples
    feedback: str = "none"  # none | failed_only | weighted
    pass_weight: float = 0.5  # feedback=weighted: a passing rollout's weight (a failing one: 1)
    max_new_tokens: Optional[int] = None  # rollout length; null: sampling.max_new_tokens
    rollout_temperature: float = 1.0  # the student's sampling temperature (0: greedy)
    rollout_every: int = 1  # >1: rollouts drawn once per round of this many steps, N x B at a time (one call)
    cross_tokenizer: str = "auto"  # auto | uld | aligned | projected | refuse: another vocabulary (as kd)

    def check(self, key: str) -> None:
        super().check(key)
        choice(self.cross_tokenizer, f"{key}.cross_tokenizer", ("auto", "uld", "aligned", "projected", "refuse"))
        check(0.0 <= self.lmbda <= 1.0, f"{key}.lmbda", f"must be in [0, 1], got {self.lmbda}")
        check(0.0 <= self.beta <= 1.0, f"{key}.beta", f"must be in [0, 1], got {self.beta}")
        check(self.temperature > 0, f"{key}.temperature", f"must be > 0, got {self.temperature}")
        choice(self.feedback, f"{key}.feedback", ("none", "failed_only", "weighted"))
        check(0.0 <= self.pass_weight <= 1.0, f"{key}.pass_weight", f"must be in [0, 1], got {self.pass_weight}")
        check(self.max_new_tokens is None or self.max_new_tokens >= 1, f"{key}.max_new_tokens",
               "must be >= 1 or null")
        check(self.rollout_temperature >= 0, f"{key}.rollout_temperature", "must be >= 0 (0: greedy)")
        check(self.rollout_every >= 1, f"{key}.rollout_every", f"must be >= 1, got {self.rollout_every}")


class OnPolicy(KD):
    Config = OnPolicyConfig

    def check(self, ctx: RunContext) -> None:
        from codistill.config import ConfigError

        if ctx.cfg.trainer.strategy.startswith("fsdp"):
            raise ConfigError("trainer.strategy: method=on_policy samples from the student inside the training "
                              "step, which FSDP's sharded weights do not support; use trainer=ddp or gpu")
        new = self.cfg.max_new_tokens or ctx.cfg.sampling.max_new_tokens
        if new >= ctx.cfg.train.max_seq_len:
            raise ConfigError(f"method.max_new_tokens: rollouts of {new} tokens leave no room for the prompt in "
                              f"train.max_seq_len={ctx.cfg.train.max_seq_len}; lower one or raise the other")
        super().check(ctx)  # the shared vocabulary, the cross-tokenizer mode, or TokenizerMismatch (refuse)

    def build(self, ctx: RunContext) -> MethodResult:
        from codistill.methods.ekt import EKT
        from codistill.training.on_policy import OnPolicySpec

        if getattr(self, "vocab_size", None) is None:
            self.check(ctx)
        cfg, m = ctx.cfg, self.cfg
        result = EKT.build(self, ctx)  # teacher samples, judged, selected (self.select: filter or not)
        result.metrics.update({"kd/vocab_size": self.vocab_size, "onpolicy/lmbda": m.lmbda,
                               "onpolicy/feedback": m.feedback, "onpolicy/rollout_every": m.rollout_every,
                               "kd/cross_tokenizer": self.mode})
        if not result.pairs:
            return result
        s_tok = ctx.tokenizer("student")
        rendered = [ctx.task.render(p, s_tok, chat=cfg.student.chat, shots=0) for p in ctx.train]
        # a pair's prompt is its problem's zero-shot student prompt (methods.filtering.kept_examples)
        index = {r.text: i for i, r in reversed(list(enumerate(rendered)))}
        examples = [{**x, "problem": index[x["prompt"]]} for x in result.pairs]
        teacher, _, _ = ctx.load("teacher")
        result.plan.objective = OnPolicySpec(
            beta=m.beta, temperature=m.temperature, alpha=1.0, vocab_size=self.vocab_size, teacher=teacher,
            lmbda=m.lmbda, seq_kd=m.seq_kd, feedback=m.feedback, pass_weight=m.pass_weight,
            max_new_tokens=m.max_new_tokens or cfg.sampling.max_new_tokens,
            rollout_temperature=m.rollout_temperature, rollout_every=m.rollout_every, max_len=cfg.train.max_seq_len,
            seed=cfg.seed, examples=examples, task=ctx.task,
            problems=list(ctx.train), rendered=rendered, timeout_s=cfg.task.timeout_s, memory_mb=cfg.task.memory_mb)
        if self.mode != "shared":  # rows are encoded through both tokenizers in the training step
            self._cross_vocab(ctx, result.plan.objective)
            result.plan.objective.teacher_tokenizer = ctx.tokenizer("teacher")
            result.metrics.update({"kd/vocab_size": result.plan.objective.vocab_size,
                                   "kd/teacher_vocab_size": result.plan.objective.teacher_vocab_size})
        log.info("on_policy: %d teacher samples over %d problems; on-policy share %.2f, feedback %s",
                 len(examples), len({x["problem"] for x in examples}), m.lmbda, m.feedback)
        return result
