"""MBPP: the hub dataset ``google-research-datasets/mbpp`` or local JSONL files in its format.

A line of the ``full`` format is ``{"task_id": 11, "text": "Write a python function ...",
"code": "def ...", "test_list": ["assert f(...) == ...", ...], "test_setup_code": "",
"challenge_test_list": [...]}``; the ``sanitized`` format has ``prompt`` instead of ``text``
and ``test_imports`` (a list of import lines) instead of ``test_setup_code``.

MBPP's standard splits go by task_id: prompt 1-10 (few-shot exemplars), test 11-510,
validation 511-600, train 601-974.  The hub serves them by name; a local file is filtered
to the task_ids of ``dataset.train_split`` / ``dataset.test_split`` (null: the whole file),
so one ``mbpp.jsonl`` can feed both sides.  A bad line is reported as ``file:line: ...``.

A problem's ``meta``: ``entry_point`` (the function the tests call), ``tests`` (the
``test_list`` asserts, hidden), ``visible_tests`` (the first test, shown in the prompt to pin
the function's name, as in the MBPP paper), ``setup`` (code run before the program),
``reference`` (the dataset's solution) and ``challenge_tests``.
"""

from __future__ import annotations

import ast
import builtins
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from codistill.config import DatasetConfig
from codistill.datasets.base import Dataset
from codistill.datasets.gsm8k import DataFileError, jsonl_records
from codistill.plugins import check
from codistill.tasks.base import Problem

#: MBPP's standard splits: name -> (first task_id, last task_id), inclusive
SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def split_of(task_id: int) -> str | None:
    """The standard split a task_id belongs to (None outside 1-974)."""
    for name, (lo, hi) in SPLITS.items():
        if lo <= task_id <= hi:
            return name
    return None


def _called_names(test: str) -> list[str]:
    """Plain function names called in a test statement, outermost first."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return []
    return [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]


def defined_functions(code: str) -> list[str]:
    """Names of the top-level functions ``code`` defines (empty when it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def find_entry_point(code: str, tests: list[str]) -> str | None:
    """The function the tests call: the first name called in the first test that ``code``
    defines; failing that, the first called name that is not a builtin (pure)."""
    called = _called_names(tests[0]) if tests else []
    defined = set(defined_functions(code))
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    return None


def problem_from_record(record: object, where: str) -> Problem:
    """A Problem from one MBPP row (full or sanitized format); errors name ``where``."""
    if not isinstance(record, dict):
        raise DataFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get("text", record.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise DataFileError(f"{where}: missing or non-string field 'text' (full) / 'prompt' (sanitized)")
    task_id = record.get("task_id")
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise DataFileError(f"{where}: 'task_id' must be an integer, got {task_id!r}")
    code = record.get("code")
    if not isinstance(code, str):
        raise DataFileError(f"{where}: missing or non-string field 'code'")
    tests = record.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise DataFileError(f"{where}: 'test_list' must be a non-empty list of strings")
    for t in tests:
        try:
            ast.parse(t)
        except SyntaxError as e:
            raise DataFileError(f"{where}: a test in 'test_list' is not valid Python ({e.msg}): {t[:80]!r}") from None
    setup = record.get("test_setup_code")
    if setup is None and isinstance(record.get("test_imports"), list):
        setup = "\n".join(record["test_imports"])
    if not isinstance(setup or "", str):
        raise DataFileError(f"{where}: 'test_setup_code' must be a string")
    challenge = record.get("challenge_test_list") or []
    entry = find_entry_point(code, tests)
    if entry is None:
        raise DataFileError(f"{where}: cannot tell which function the first test calls: {tests[0][:80]!r}")
    return Problem(id=f"mbpp/{task_id}", question=text.strip(), answer=None,
                   meta={"task_id": task_id, "entry_point": entry, "tests": list(tests),
                         "visible_tests": tests[:1], "setup": setup or "", "reference": code,
                         "challenge_tests": list(challenge)})


def read_jsonl(path: str | Path, side: str) -> list[Problem]:
    """Problems from a local MBPP-format JSONL file; errors name ``path:line``."""
    problems, seen = [], {}
    for lineno, where, record in jsonl_records(path, side):
        p = problem_from_record(record, where)
        if p.id in seen:
            raise DataFileError(f"{where}: task_id {p.meta['task_id']} repeats line {seen[p.id]}")
        seen[p.id] = lineno
        problems.append(p)
    return problems


def read_hub(hub_id: str, hub_config: str | None, split: str) -> list[Problem]:
    import datasets  # the Hugging Face library (absolute import)

    ds = datasets.load_dataset(hub_id, hub_config or "full", split=split)
    return [problem_from_record(dict(r), f"{hub_id}[{split}][{i}]") for i, r in enumerate(ds)]


def take_split(problems: list[Problem], split: str | None, source: str, side: str) -> list[Problem]:
    """The problems of MBPP's ``split`` (by task_id); all of them when ``split`` is None."""
    if split is None:
        return problems
    lo, hi = SPLITS[split]
    kept = [p for p in problems if lo <= p.meta["task_id"] <= hi]
    if problems and not kept:
        raise DataFileError(f"{source}: no problem has a task_id in {lo}-{hi} (MBPP's {split!r} split, "
                            f"dataset.{side}_split); set dataset.{side}_split=null to use the whole file")
    return kept


def load_mbpp(cfg) -> tuple[list[Problem], list[Problem]]:
    out = []
    for side, file, size, split in (("train", cfg.train_file, cfg.train_size, cfg.train_split),
                                    ("test", cfg.test_file, cfg.test_size, cfg.test_split)):
        if size == 0:
            out.append([])
            continue
        if file:
            problems = take_split(read_jsonl(file, side), split, str(file), side)
        else:
            problems = read_hub(cfg.hub_id or "google-research-datasets/mbpp", cfg.hub_config, split or side)
        if cfg.shuffle_seed is not None:
            random.Random(cfg.shuffle_seed).shuffle(problems)
        out.append(problems if size is None else problems[:size])
    return out[0], out[1]


MBPP_SPLITS = ("train", "test", "validation", "prompt")


@dataclass
class MBPPConfig(DatasetConfig):
    # MBPP's split of each side (by task_id; null: the whole file)
    train_split: Optional[str] = None
    test_split: Optional[str] = None

    def check(self, key: str) -> None:
        super().check(key)
        for k in ("train_split", "test_split"):
            v = getattr(self, k)
            check(v is None or v in MBPP_SPLITS, f"{key}.{k}",
                  f"{v!r} is not one of MBPP's splits {list(MBPP_SPLITS)} or null")


class MBPP(Dataset):
    """``dataset=mbpp``: the hub's MBPP or local JSONL files, split by task_id."""

    Config = MBPPConfig

    def load(self):
        return load_mbpp(self.cfg)
