"""Evaluation: the student answers the test problems; programs are executed; pass@k.

A greedy completion per problem gives ``eval/pass@1`` (greedy).  With ``n_samples`` > 0,
``n_samples`` sampled completions per problem give the unbiased ``eval/pass@k`` for each
configured k (and ``eval/pass@1_sampled``).  With ``refine_steps`` > 0 (code tasks), failed
attempts are refined by the student with visible-test feedback (evaluation/refine.py) and the
same figures are reported per step as ``eval/step{s}/...``; step 0 is the plain attempt, equal
to ``eval/...``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from codistill.config import SamplingConfig
from codistill.execution import pass_at_k
from codistill.generation import generate
from codistill.tasks.base import Problem, Task
from codistill.tasks.judge import judge_completions

log = logging.getLogger(__name__)


def pass_metrics(judged, kind: str, n: int, ev, *, prefix: str) -> dict[str, float]:
    """pass@1 of greedy samples (``pass@1``, ``pass@1_greedy``), or the unbiased pass@k of ``n``
    sampled ones (``pass@1_sampled`` when a greedy pass@1 exists), keyed ``prefix + name``."""
    correct = np.array([sum(j.passed for j in js) for js in judged])
    out: dict[str, float] = {}
    if kind == "greedy":
        out[f"{prefix}pass@1"] = float(correct.mean()) if len(judged) else 0.0
        out[f"{prefix}pass@1_greedy"] = out[f"{prefix}pass@1"]
    else:
        for k in sorted(set(ev.k) | {1}):
            if k <= n:
                v = float(np.mean([pass_at_k(n, int(c), k) for c in correct])) if len(judged) else 0.0
                out[f"{prefix}pass@{k}" if (k > 1 or not ev.greedy) else f"{prefix}pass@1_sampled"] = v
    return out


def evaluate(model, tokenizer, task: Task, problems: list[Problem], cfg, *, run_dir: Path,
             model_id: str | None, cache_root: str | None, samples_file: str = "eval_samples.jsonl",
             backend=None) -> dict:
    """Evaluate ``model`` on ``problems``; writes ``samples_file``; returns eval/* metrics.

    ``backend``: a generation backend to sample with (``model`` may then be None); default an
    hf backend over ``model`` with ``cfg.generation``'s batch settings.  The run evaluates a
    trained student, which lives in memory, with hf whatever ``generation.backend`` says.
    """
    from codistill.generation.hf import HFBackend

    ev = cfg.eval
    chat = cfg.student.chat
    prompts = [task.render(p, tokenizer, chat=chat, shots=0) for p in problems]
    texts = [p.text for p in prompts]
    if backend is None:
        backend = HFBackend(model, tokenizer, batch_size=cfg.generation.batch_size,
                            static_cache=cfg.generation.static_cache, desc="eval")
    metrics: dict[str, float] = {"eval/n_problems": len(problems)}
    rows: list[dict] = [{"problem_id": p.id, "gold": p.answer, "samples": []} for p in problems]
    runs = []
    if ev.greedy:
        runs.append(("greedy", SamplingConfig(n=1, temperature=0.0, max_new_tokens=ev.max_new_tokens,
                                              stop=list(task.stop))))
    if ev.n_samples > 0:
        runs.append(("sampled", SamplingConfig(n=ev.n_samples, temperature=ev.temperature, top_p=ev.top_p,
                                               max_new_tokens=ev.max_new_tokens, stop=list(task.stop))))
    for kind, sampling in runs:
        comps, stats = generate(backend, texts, sampling, seed=cfg.seed, model_id=model_id, cache_root=cache_root)
        judged = judge_completions(task, problems, prompts, comps, timeout_s=cfg.task.timeout_s,
                                   memory_mb=cfg.task.memory_mb)
        metrics.update(pass_metrics(judged, kind, sampling.n, ev, prefix="eval/"))
        metrics[f"eval/{kind}_tokens_per_s"] = stats["tokens_per_s"]
        for row, js in zip(rows, judged):
            row["samples"].extend({"kind": kind, "completion": j.completion, "program": j.program,
                                   "passed": j.passed, "status": j.status, "value": j.value, "error": j.error}
                                  for j in js)
        if ev.refine_steps > 0:  # multi-step inference: self-refinement with visible-test feedback
            from codistill.evaluation.refine import refine_steps

            metrics.update(pass_metrics(judged, kind, sampling.n, ev, prefix="eval/step0/"))
            steps = refine_steps(backend, tokenizer, task, problems, judged, sampling, steps=ev.refine_steps,
                                 chat=chat, seed=cfg.seed, model_id=model_id, cache_root=cache_root,
                                 timeout_s=cfg.task.timeout_s, memory_mb=cfg.task.memory_mb)
            for s, step in enumerate(steps, start=1):
                metrics.update(pass_metrics(step.judged, kind, sampling.n, ev, prefix=f"eval/step{s}/"))
                metrics[f"eval/step{s}/{kind}_n_refined"] = len(step.refined)
                for i, k in step.refined:
                    j = step.judged[i][k]
                    rows[i]["samples"].append({"kind": kind, "step": s, "sample": k, "feedback": step.feedback[(i, k)],
                                               "completion": j.completion, "program": j.program, "passed": j.passed,
                                               "status": j.status, "value": j.value, "error": j.error})
    with (run_dir / samples_file).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    return metrics
