"""Evaluation: the student answers the test problems; programs are executed; pass@k.

Two kinds of figures, named apart so they are never read as one series:

- ``eval/pass@1_greedy``: one greedy completion per problem (``eval.greedy``);
- ``eval/pass@k`` for every k in ``eval.k`` (and k = 1): the unbiased estimate from the same
  ``eval.n_samples`` sampled completions per problem (``eval.n_samples`` > 0); k > n is refused.

``eval/pass@1``, the headline that sweeps, Optuna and reports read, is the sampled pass@1 when
samples are drawn and the greedy one otherwise; ``eval/pass@1_source`` says which
(``"sampled"`` | ``"greedy"``).  So pass@1 <= pass@2 <= ... always holds among the headline
figures; a greedy pass@1 above a sampled pass@2 is a different decoding, not an order flip.
With ``refine_steps`` > 0 (code tasks), failed attempts are refined by the student with
visible-test feedback (evaluation/refine.py) and the same figures are reported per step as
``eval/step{s}/...``; step 0 is the plain attempt, equal to ``eval/...``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from codistill.config import SamplingConfig
from codistill.execution import pass_at_k
from codistill.rollout import roll
from codistill.tasks.base import Problem, Task

log = logging.getLogger(__name__)


def pass_metrics(judged, kind: str, n: int, ev, *, prefix: str) -> dict[str, float | str]:
    """The figures of one decoding, keyed ``prefix + name``.

    greedy: ``pass@1_greedy``, and the headline ``pass@1`` (``pass@1_source`` "greedy") when no
    samples are drawn (``ev.n_samples`` == 0).  sampled: the unbiased ``pass@k`` of the ``n``
    samples per problem for every k in ``ev.k`` and k = 1, the headline ``pass@1`` among them
    (``pass@1_source`` "sampled").  A k above ``n`` has no unbiased estimate: ValueError."""
    correct = np.array([sum(j.passed for j in js) for js in judged])
    out: dict[str, float | str] = {}
    if kind == "greedy":
        out[f"{prefix}pass@1_greedy"] = float(correct.mean()) if len(judged) else 0.0
        if ev.n_samples == 0:
            out.update({f"{prefix}pass@1": out[f"{prefix}pass@1_greedy"], f"{prefix}pass@1_source": "greedy"})
        return out
    too_big = [k for k in ev.k if k > n]
    if too_big:
        raise ValueError(f"eval.k: pass@{max(too_big)} needs at least {max(too_big)} sampled completions per "
                         f"problem, got {n} (eval.n_samples)")
    for k in sorted(set(ev.k) | {1}):
        out[f"{prefix}pass@{k}"] = float(np.mean([pass_at_k(n, int(c), k) for c in correct])) if len(judged) else 0.0
    out[f"{prefix}pass@1_source"] = "sampled"
    return out


def evaluate(model, tokenizer, task: Task, problems: list[Problem], cfg, *, run_dir: Path,
             model_id: str | None, cache_root: str | None, samples_file: str = "eval_samples.jsonl",
             backend=None) -> dict:
    """Evaluate ``model`` on ``problems``; writes ``samples_file``; returns eval/* metrics.

    ``backend``: a generation backend to sample with (``model`` may then be None); default an
    hf backend over ``model`` with ``cfg.generation``'s batch settings.  The run evaluates a
    trained student with hf over the in-memory model, or with vLLM over its saved checkpoint
    where the student is sampled with vLLM (codistill.evaluation.student_backend).
    """
    from codistill.generation.hf import HFBackend

    ev = cfg.eval
    chat = cfg.student.chat
    prompts = [task.render(p, tokenizer, chat=chat, shots=0) for p in problems]
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
        drawn = roll(backend, prompts, sampling, seed=cfg.seed, model_id=model_id, cache_root=cache_root, task=task,
                     problems=problems, timeout_s=cfg.task.timeout_s, memory_mb=cfg.task.memory_mb)
        judged, stats = drawn.judged, drawn.stats
        metrics.update(pass_metrics(judged, kind, sampling.n, ev, prefix="eval/"))
        if getattr(task, "plus_tests", False):  # EvalPlus: the same samples on base + plus tests
            from codistill.evaluation.plus import plus_view

            metrics.update(pass_metrics(plus_view(judged), kind, sampling.n, ev, prefix="eval/plus/"))
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
    from codistill.evaluation.exports import write_exports

    write_exports(run_dir, samples_file, problems, rows)  # EvalPlus samples + bigcode generations
    return metrics
