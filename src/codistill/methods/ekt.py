"""``method=ekt``: explicit knowledge transfer.

The teacher, few-shot prompted, samples k programs per training problem; each program is
executed and kept when its value matches the weak label (the final answer).  Keep policy
``first`` keeps one program per problem (as the EKT code); ``unique`` keeps every distinct
passing program (after normalisation).  The student is fine-tuned on the kept
(problem -> program) pairs with a zero-shot prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from codistill.config import MethodConfig
from codistill.methods.base import Method, MethodResult, RunContext, TrainingPlan, write_jsonl
from codistill.methods.filtering import (check_keep, filter_metrics, generation_rows, kept_examples, pairs_of,
                                         select_kept)
from codistill.tasks.judge import Judged

log = logging.getLogger(__name__)


@dataclass
class EKTConfig(MethodConfig):
    name: str = "ekt"
    keep: str = "first"  # first | unique
    max_per_problem: Optional[int] = None  # with keep=unique: cap per problem

    def check(self, key: str) -> None:
        check_keep(self.keep, self.max_per_problem, key)


class EKT(Method):
    Config = EKTConfig

    def select(self, judged: list[Judged]) -> list[Judged]:
        """The samples of one problem to train on (subclasses may change the policy)."""
        return select_kept(judged, self.cfg.keep, self.cfg.max_per_problem)

    def teacher_shots(self, ctx: RunContext) -> int:
        """Exemplars in the teacher's prompt (EKT: few-shot, ``task.num_shots``)."""
        return ctx.cfg.task.num_shots

    def build(self, ctx: RunContext) -> MethodResult:
        m = self.cfg
        drawn = ctx.rollout("teacher", ctx.train, shots=self.teacher_shots(ctx))
        judged, gstats = drawn.judged, drawn.stats

        train_set = kept_examples(ctx, ctx.train, judged, keep=m.keep, max_per_problem=m.max_per_problem,
                                  source="teacher", select=self.select)
        pairs = pairs_of(train_set)
        write_jsonl(ctx.run_dir / "generations.jsonl", generation_rows(ctx.train, judged))
        write_jsonl(ctx.run_dir / "train_set.jsonl", train_set)
        metrics = {
            **filter_metrics(judged, len(pairs)),
            "teacher/tokens_per_s": gstats["tokens_per_s"],
            "teacher/cached_prompts": gstats["cached_prompts"],
        }
        log.info("%s: %d/%d problems solved by the teacher, %d of %d samples kept", self.name,
                 metrics["data/problems_solved"], len(ctx.train), len(pairs), metrics["data/n_samples"])
        return MethodResult(TrainingPlan(pairs), metrics)


__all__ = ["EKT", "select_kept"]  # select_kept lives in methods.filtering (shared with stand, expert_iteration)
