"""Extract, execute and judge completions: the filter every method and evaluation uses."""

from __future__ import annotations

from dataclasses import dataclass

from codistill.tasks.base import Problem, Task


@dataclass
class Judged:
    completion: str
    program: str
    passed: bool
    status: str
    value: object
    error: str | None


def judge_completions(task: Task, problems: list[Problem], prompts, completions: list[list[str]], *,
                      timeout_s: float, memory_mb: int) -> list[list[Judged]]:
    """Extract, execute (one sandbox batch) and judge every completion of every problem."""
    from codistill.execution import run_programs

    if hasattr(task, "prepare_checks"):  # EvalPlus: time the references first (per-test limits)
        timeout_s = task.prepare_checks(problems, timeout_s=timeout_s, memory_mb=memory_mb)
    flat, where = [], []
    for i, (prob, prompt, comps) in enumerate(zip(problems, prompts, completions)):
        for comp in comps:
            program = task.extract_program(prompt, comp)
            flat.append(task.check_program(prob, program))
            where.append((i, comp, program))
    results = run_programs(flat, timeout_s=timeout_s, memory_mb=memory_mb) if flat else []
    out: list[list[Judged]] = [[] for _ in problems]
    for (i, comp, program), res in zip(where, results):
        out[i].append(Judged(comp, program, task.judge(problems[i], res), res.status, res.value, res.error))
    return out
