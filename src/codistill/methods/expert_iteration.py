"""``method=expert_iteration``: self-training (the baseline of the EKT paper).

Rounds r = 1..R of: the student samples ``sampling.n`` programs for every training
problem it has not solved yet -> the programs are executed and filtered as in ``ekt`` ->
the student is fine-tuned on every solution found so far.  The base student samples with
``method.base_shots`` exemplars in its prompt (default ``task.num_shots``); a fine-tuned
student samples zero-shot, the prompt it was trained on.

Each round's fine-tuning starts from the base student (``method.from_base: true``, as the
EKT code) or continues from the last round's weights (``false``); the data is the same
either way: all solutions found so far.  Rounds 1..R-1 are trained here (checkpoints under
``<run>/rounds/<r>/checkpoints``, so a killed run resumes each round from its own
checkpoint); round R's training set, and with ``from_base: false`` the student to continue
from, go to the run's ordinary training stage, whose student is the one evaluated.

Every round samples with its own seed (:func:`round_seed`), which enters the generation
cache key: a round after one that kept nothing samples the same base student on the same
prompts, and must still draw fresh samples rather than get the last round's from the cache.

Writes ``generations.jsonl`` (every sample, with its ``round``) after each round and the
final ``train_set.jsonl``; ``data/round{r}/solved`` (cumulative) and ``data/round{r}/seed``
are logged per round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from codistill.config import MethodConfig
from codistill.generation.cache import digest
from codistill.methods.base import Method, MethodResult, RunContext, TrainingPlan, write_jsonl
from codistill.methods.filtering import check_keep, filter_metrics, generation_rows, kept_examples, pairs_of
from codistill.plugins import check
from codistill.tasks.base import Problem
from codistill.tasks.judge import Judged

log = logging.getLogger(__name__)


def unsolved(problems: list[Problem], solved: dict[str, int]) -> list[Problem]:
    """The problems not yet solved in any round (pure; ``solved``: problem id -> round)."""
    return [p for p in problems if p.id not in solved]


def round_seed(seed: int, r: int) -> int:
    """The sampling seed of round ``r`` (1-based) of a run whose sampling seed is ``seed`` (pure).

    Round 1 samples with ``seed`` itself (its samples are those any other run with that seed
    draws from the base student); every later round with a seed derived from (seed, round), so
    no two rounds share samples or cache entries."""
    return seed if r == 1 else int(digest({"seed": seed, "expert_iteration_round": r})[:15], 16)


@dataclass
class ExpertIterationConfig(MethodConfig):
    """``expert_iteration``: rounds of (the student samples the unsolved problems -> filter -> fine-tune)."""

    name: str = "expert_iteration"
    rounds: int = 2
    from_base: bool = True  # each round fine-tunes the base student (EKT code); false: continue from the last round
    base_shots: Optional[int] = None  # exemplars in the base (untrained) student's prompt (null: task.num_shots)
    keep: str = "first"  # first | unique (as ekt)
    max_per_problem: Optional[int] = None

    def check(self, key: str) -> None:
        check(self.rounds >= 1, f"{key}.rounds", f"must be >= 1, got {self.rounds}")
        check(self.base_shots is None or self.base_shots >= 0, f"{key}.base_shots",
               "must be >= 0 or null")
        check_keep(self.keep, self.max_per_problem, key)


class ExpertIteration(Method):
    Config = ExpertIterationConfig

    def build(self, ctx: RunContext) -> MethodResult:
        m = self.cfg
        solved: dict[str, int] = {}  # problem id -> the round that first solved it
        examples: list[dict] = []  # train_set rows, in the order found
        generations: list[dict] = []
        metrics: dict = {"data/rounds": m.rounds}
        totals = {"data/n_samples": 0, "data/n_passing": 0}
        student = None  # the last round's fine-tuned student; None: the base student samples
        for r in range(1, m.rounds + 1):
            todo = unsolved(ctx.train, solved)
            judged, stats = self.sample(ctx, student, todo, r) if todo else ([], {})
            new = kept_examples(ctx, todo, judged, keep=m.keep, max_per_problem=m.max_per_problem,
                                source="student", round=r)
            solved.update({p.id: r for p, js in zip(todo, judged) if any(j.passed for j in js)})
            examples += new
            generations += generation_rows(todo, judged, round=r)
            write_jsonl(ctx.run_dir / "generations.jsonl", generations)
            fm = filter_metrics(judged, len(new))
            for k in totals:
                totals[k] += fm[k]
            metrics.update({f"data/round{r}/sampled": len(todo), f"data/round{r}/n_samples": fm["data/n_samples"],
                            f"data/round{r}/new_solved": fm["data/problems_solved"],
                            f"data/round{r}/solved": len(solved), f"data/round{r}/n_kept": len(examples)})
            if stats:
                metrics[f"data/round{r}/seed"] = stats["seed"]
                metrics[f"student/round{r}/tokens_per_s"] = stats["tokens_per_s"]
                metrics[f"student/round{r}/cached_prompts"] = stats["cached_prompts"]
            log.info("expert iteration round %d/%d: %d of %d unsolved problems solved, %d/%d solved in all",
                     r, m.rounds, fm["data/problems_solved"], len(todo), len(solved), len(ctx.train))
            if r == m.rounds or len(solved) == len(ctx.train):
                break  # the run's training stage trains the last round
            if examples:
                student, tstats = self.train_round(ctx, student, examples, r)
                metrics.update({f"train/round{r}/{k[6:]}": v for k, v in tstats.items() if k.startswith("train/")})
        ctx.release("student")
        write_jsonl(ctx.run_dir / "train_set.jsonl", examples)
        metrics.update({"data/rounds_run": r, "data/n_problems": len(ctx.train), **totals,
                        "data/n_kept": len(examples), "data/problems_solved": len(solved),
                        "data/solve_rate": len(solved) / max(len(ctx.train), 1)})
        return MethodResult(TrainingPlan(pairs_of(examples), init=None if m.from_base else student), metrics)

    def base_shots(self, ctx: RunContext) -> int:
        return ctx.cfg.task.num_shots if self.cfg.base_shots is None else self.cfg.base_shots

    def sample(self, ctx: RunContext, student, problems: list[Problem], r: int) -> tuple[list[list[Judged]], dict]:
        """``sampling.n`` judged samples per problem, from the base student (``student`` None,
        few-shot, cached) or a fine-tuned one (zero-shot, not cached: it has no identity)."""
        cfg = ctx.cfg
        source, shots = None, self.base_shots(ctx)
        if student is not None:
            from codistill.generation.hf import HFBackend

            # an in-memory fine-tuned student can only be sampled through transformers, zero-shot
            student.eval()
            tok = ctx.tokenizer("student")
            backend = HFBackend(student, tok, batch_size=cfg.generation.batch_size, desc=f"round {r}")
            source, shots = (backend, tok, None), 0
        # the base student is a fixed source of data, as the teacher is: its samples take the data
        # seed (``teacher_seed``, else ``seed``); a fine-tuned student's take the run's seed.  Either
        # way each round draws with its own seed: a round after one that kept nothing samples the
        # same base student on the same prompts again, and must not get that round's samples back
        seed = round_seed(cfg.data_seed if student is None else cfg.seed, r)
        # (the inference copy of the base student is released: it is not the one trained)
        drawn = ctx.rollout("student", problems, shots=shots, seed=seed, desc=f"round {r}", source=source)
        return drawn.judged, {**drawn.stats, "seed": seed}

    def train_round(self, ctx: RunContext, student, examples: list[dict], r: int):
        """Fine-tune on ``examples``: a fresh base student (``from_base``, or nothing trained
        yet) or ``student`` itself.  Returns the trained student and the training figures."""
        from codistill.training import train

        log.info("expert iteration round %d: training the student on %d examples (%s)", r, len(examples),
                 "from the base student" if self.cfg.from_base else "continuing")
        init = None if student is None or self.cfg.from_base else student
        student, _, stats = train(TrainingPlan(pairs_of(examples), init=init), ctx, ctx.run_dir / "rounds" / str(r), [])
        ctx.release("student")  # ours: the next round (or the run's training stage) loads a fresh base student
        return student, stats
