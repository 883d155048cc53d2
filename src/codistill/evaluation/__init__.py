"""Evaluation: the student answers the test problems; programs are executed; pass@k.

A greedy completion per problem gives ``eval/pass@1`` (greedy).  With ``n_samples`` > 0,
``n_samples`` sampled completions per problem give the unbiased ``eval/pass@k`` for each
configured k (and ``eval/pass@1_sampled``).
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
        correct = np.array([sum(j.passed for j in js) for js in judged])
        if kind == "greedy":
            metrics["eval/pass@1"] = float(correct.mean()) if len(problems) else 0.0
            metrics["eval/pass@1_greedy"] = metrics["eval/pass@1"]
        else:
            n = sampling.n
            for k in sorted(set(ev.k) | {1}):
                if k <= n:
                    v = float(np.mean([pass_at_k(n, int(c), k) for c in correct])) if len(problems) else 0.0
                    metrics[f"eval/pass@{k}" if (k > 1 or not ev.greedy) else "eval/pass@1_sampled"] = v
        metrics[f"eval/{kind}_tokens_per_s"] = stats["tokens_per_s"]
        for row, js in zip(rows, judged):
            row["samples"].extend({"kind": kind, "completion": j.completion, "program": j.program,
                                   "passed": j.passed, "status": j.status, "value": j.value, "error": j.error}
                                  for j in js)
    with (run_dir / samples_file).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    return metrics
