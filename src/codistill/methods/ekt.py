"""``method=ekt``: explicit knowledge transfer.

The teacher, few-shot prompted, samples k programs per training problem; each program is
executed and kept when its value matches the weak label (the final answer).  Keep policy
``first`` keeps one program per problem (as the EKT code); ``unique`` keeps every distinct
passing program (after normalisation).  The student is fine-tuned on the kept
(problem -> program) pairs with a zero-shot prompt.
"""

from __future__ import annotations

import dataclasses
import logging

from codistill.generation import generate
from codistill.methods.base import Method, MethodResult, RunContext, write_jsonl
from codistill.tasks.base import normalize_program
from codistill.tasks.judge import Judged, judge_completions

log = logging.getLogger(__name__)


def select_kept(judged: list[Judged], keep: str, max_per_problem: int | None = None) -> list[Judged]:
    """The passing samples to train on, per the keep policy (pure)."""
    passing = [j for j in judged if j.passed]
    if keep == "first":
        return passing[:1]
    seen, out = set(), []
    for j in passing:
        norm = normalize_program(j.program)
        if norm not in seen:
            seen.add(norm)
            out.append(j)
    return out[:max_per_problem] if max_per_problem else out


class EKT(Method):
    name = "ekt"

    def select(self, judged: list[Judged]) -> list[Judged]:
        """The samples of one problem to train on (subclasses may change the policy)."""
        return select_kept(judged, self.cfg.keep, self.cfg.max_per_problem)

    def build(self, ctx: RunContext) -> MethodResult:
        cfg, m = ctx.cfg, self.cfg
        backend, t_tok, t_id = ctx.backend("teacher")
        prompts = [ctx.task.render(p, t_tok, chat=cfg.teacher.chat, shots=cfg.task.num_shots) for p in ctx.train]
        sampling = dataclasses.replace(cfg.sampling, stop=list(cfg.sampling.stop or ctx.task.stop))
        comps, gstats = generate(backend, [p.text for p in prompts], sampling, seed=cfg.seed,
                                 model_id=t_id, cache_root=ctx.cache_dir)
        ctx.release("teacher")
        judged = judge_completions(ctx.task, ctx.train, prompts, comps, timeout_s=cfg.task.timeout_s,
                                   memory_mb=cfg.task.memory_mb)

        s_tok = ctx.tokenizer("student")
        generations, train_set, pairs = [], [], []
        for prob, js in zip(ctx.train, judged):
            for idx, j in enumerate(js):
                generations.append({"problem_id": prob.id, "sample": idx, "gold": prob.answer,
                                    "completion": j.completion, "program": j.program, "status": j.status,
                                    "value": j.value, "passed": j.passed, "error": j.error})
            for j in self.select(js):
                sp = ctx.task.render(prob, s_tok, chat=cfg.student.chat, shots=0)
                completion = ctx.task.target(sp, j.program)
                pairs.append({"prompt": sp.text, "completion": completion})
                train_set.append({"problem_id": prob.id, "question": prob.question, "gold": prob.answer,
                                  "program": j.program, "prompt": sp.text, "completion": completion,
                                  "source": "teacher"})
        write_jsonl(ctx.run_dir / "generations.jsonl", generations)
        write_jsonl(ctx.run_dir / "train_set.jsonl", train_set)
        n_samples = sum(len(js) for js in judged)
        solved = sum(any(j.passed for j in js) for js in judged)
        metrics = {
            "data/n_problems": len(ctx.train),
            "data/n_samples": n_samples,
            "data/n_passing": sum(j.passed for js in judged for j in js),
            "data/n_kept": len(pairs),
            "data/problems_solved": solved,
            "data/solve_rate": solved / max(len(ctx.train), 1),
            "teacher/tokens_per_s": gstats["tokens_per_s"],
            "teacher/cached_prompts": gstats["cached_prompts"],
        }
        log.info("EKT: %d/%d problems solved by the teacher, %d of %d samples kept",
                 solved, len(ctx.train), len(pairs), n_samples)
        return MethodResult(pairs=pairs, metrics=metrics)
