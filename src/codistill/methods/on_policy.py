"""``method=on_policy``: on-policy distillation (GKD, Agarwal et al. 2024), execution-aware.

1. Before any weights load, :meth:`OnPolicy.check` compares the tokenizers (as ``kd``: the
   teacher scores the student's own token ids, so they must mean the same) and refuses FSDP
   (sampling inside a sharded step is not supported).
2. The off-policy data: the teacher's samples, drawn exactly as EKT/KD draw them (same prompts,
   ``sampling`` section, generation cache shared with ekt/kd/stand runs of a sweep) and judged;
   ``filter: false`` (default) keeps every one, so every training problem has a prompt to roll
   out from; ``filter: true`` keeps the passing ones (EKT's keep policy).
3. The plan: an :class:`codistill.training.on_policy.OnPolicySpec` (online frozen teacher, the
   shared vocabulary, the rollout and feedback settings, the problems and the student's prompts
   the sandbox judges rollouts against).  Training then samples from the student on a ``lmbda``
   share of the steps (see :mod:`codistill.training.on_policy`); those samples are never cached.
"""

from __future__ import annotations

import logging

from codistill.methods.base import MethodResult, RunContext
from codistill.methods.kd import KD

log = logging.getLogger(__name__)


class OnPolicy(KD):
    name = "on_policy"

    def check(self, ctx: RunContext) -> None:
        from codistill.config import ConfigError

        if ctx.cfg.trainer.strategy.startswith("fsdp"):
            raise ConfigError("trainer.strategy: method=on_policy samples from the student inside the training "
                              "step, which FSDP's sharded weights do not support; use trainer=ddp or gpu")
        new = self.cfg.max_new_tokens or ctx.cfg.sampling.max_new_tokens
        if new >= ctx.cfg.train.max_seq_len:
            raise ConfigError(f"method.max_new_tokens: rollouts of {new} tokens leave no room for the prompt in "
                              f"train.max_seq_len={ctx.cfg.train.max_seq_len}; lower one or raise the other")
        super().check(ctx)  # the shared vocabulary, or TokenizerMismatch naming both models

    def build(self, ctx: RunContext) -> MethodResult:
        from codistill.methods.ekt import EKT
        from codistill.training.on_policy import OnPolicySpec

        if getattr(self, "vocab_size", None) is None:
            self.check(ctx)
        cfg, m = ctx.cfg, self.cfg
        result = EKT.build(self, ctx)  # teacher samples, judged, selected (self.select: filter or not)
        result.metrics.update({"kd/vocab_size": self.vocab_size, "onpolicy/lmbda": m.lmbda,
                               "onpolicy/feedback": m.feedback})
        if not result.pairs:
            return result
        s_tok = ctx.tokenizer("student")
        rendered = [ctx.task.render(p, s_tok, chat=cfg.student.chat, shots=0) for p in ctx.train]
        # a pair's prompt is its problem's zero-shot student prompt (methods.filtering.kept_examples)
        index = {r.text: i for i, r in reversed(list(enumerate(rendered)))}
        examples = [{**x, "problem": index[x["prompt"]]} for x in result.pairs]
        teacher, _, _ = ctx.load("teacher")
        result.kd = OnPolicySpec(
            beta=m.beta, temperature=m.temperature, alpha=1.0, vocab_size=self.vocab_size, teacher=teacher,
            lmbda=m.lmbda, seq_kd=m.seq_kd, feedback=m.feedback, pass_weight=m.pass_weight,
            max_new_tokens=m.max_new_tokens or cfg.sampling.max_new_tokens,
            rollout_temperature=m.rollout_temperature, seed=cfg.seed, examples=examples, task=ctx.task,
            problems=list(ctx.train), rendered=rendered, timeout_s=cfg.task.timeout_s, memory_mb=cfg.task.memory_mb)
        log.info("on_policy: %d teacher samples over %d problems; on-policy share %.2f, feedback %s",
                 len(examples), len({x["problem"] for x in examples}), m.lmbda, m.feedback)
        return result
