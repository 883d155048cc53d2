"""HumanEval+ and MBPP+ (EvalPlus): the same problems with EvalPlus's extended tests.

A line of EvalPlus's JSONL (``HumanEvalPlus.jsonl``, ``MbppPlus.jsonl``) is
``{"task_id": "HumanEval/0", "prompt": ..., "entry_point": "has_close_elements",
"canonical_solution": ..., "base_input": [[arg, ...], ...], "plus_input": [[arg, ...], ...],
"atol": 0, "contract": ..., "assertion": ...}``: the tests are *inputs*; the expected output of
each is what the reference (``prompt + canonical_solution``) returns (differential testing,
codistill.tasks.evalplus).  ``base_input`` are the original benchmark's tests, ``plus_input``
EvalPlus's extra ones.

Where the problems come from: ``dataset.file`` (a local file in that format; ``.jsonl`` or
``.jsonl.gz``), else the evalplus package's own loaders (``get_human_eval_plus`` /
``get_mbpp_plus``, which download the release once into evalplus's cache).  evalplus is not a
dependency of codistill (it pulls in openai, anthropic, google-generativeai, tree-sitter...):
without it, ``dataset.file`` is required and the error says so.

MBPP+ inputs whose Python type JSON cannot hold (tuples, sets, complex numbers) are restored
with evalplus's own ``mbpp_deserialize_inputs`` when evalplus is importable; without it a
local MBPP+ file's inputs stay as JSON gives them (lists), which changes a few dozen of its
problems (documented in the README).

Split: as ``dataset=humaneval``: the first ``test_size`` problems (file order) are the test
split, the next ``train_size`` the train split (null test_size: all of them).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from codistill.config import DatasetConfig
from codistill.datasets.base import Dataset
from codistill.datasets.gsm8k import DataFileError
from codistill.tasks.base import Problem

#: the fields EvalPlus's completeness check asks of every problem (``contract`` is optional here:
#: codistill does not generate inputs)
REQUIRED = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")
FLAVOURS = {"humaneval_plus": "humaneval", "mbpp_plus": "mbpp"}


def evalplus_available() -> bool:
    """Whether evalplus's loaders import: ``make install`` puts evalplus in without its
    dependencies (for its checker), and its data module needs them (wget, tempdir, appdirs)."""
    try:
        import evalplus.data  # noqa: F401
    except ImportError:
        return False
    return True


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """(``file:line``, record) for every non-blank line of an EvalPlus JSONL file (gz or not)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileError(f"dataset.file: {path} does not exist (an EvalPlus JSONL file is expected)")
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                out.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataFileError(f"{where}: not valid JSON ({e.msg})") from None
    if not out:
        raise DataFileError(f"dataset.file: {path} holds no problems")
    return out


def mbpp_parts(prompt: str, assertion: str | None) -> tuple[str, list[str]]:
    """(the task's description, its assert lines) from an MBPP+ ``prompt`` (a docstring holding the
    description and one example assert) and ``assertion`` (the original asserts)."""
    text = prompt.strip().strip('"').strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    desc = "\n".join(ln for ln in lines if not ln.strip().startswith("assert ")).strip()
    shown = [ln.strip() for ln in lines if ln.strip().startswith("assert ")]
    tests = [ln.strip() for ln in (assertion or "").splitlines() if ln.strip().startswith("assert ")]
    return desc, tests or shown


def problem_from_record(record: object, where: str, flavour: str, deserialize=None) -> Problem:
    """A Problem from one EvalPlus row; errors name ``where`` and the missing field."""
    if not isinstance(record, dict):
        raise DataFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for k in REQUIRED:
        if k not in record:
            raise DataFileError(f"{where}: missing field {k!r} (EvalPlus's format needs {list(REQUIRED)})")
    for k in ("base_input", "plus_input"):
        v = record[k]
        if not isinstance(v, list) or not all(isinstance(x, (list, tuple)) for x in v):
            raise DataFileError(f"{where}: {k!r} must be a list of argument lists")
    if not record["base_input"]:
        raise DataFileError(f"{where}: 'base_input' is empty (a problem needs at least one base test)")
    if not isinstance(record["atol"], (int, float)) or isinstance(record["atol"], bool):
        raise DataFileError(f"{where}: 'atol' must be a number, got {record['atol']!r}")
    task_id = str(record["task_id"])
    base, plus = record["base_input"], record["plus_input"]
    if deserialize is not None:
        base, plus = deserialize(task_id, base), deserialize(task_id, plus)
    meta = {"prompt": record["prompt"], "entry_point": record["entry_point"],
            "canonical_solution": record["canonical_solution"], "atol": float(record["atol"]),
            "base_input": base, "plus_input": plus, "evalplus": flavour,
            "contract": record.get("contract", "")}
    if flavour == "humaneval":
        from codistill.datasets.humaneval import check_statements
        from codistill.tasks.examples import docstring_examples

        meta["visible_tests"] = docstring_examples(record["prompt"], record["entry_point"])
        test = record.get("test")
        meta["tests"] = check_statements(test, record["entry_point"]) if test else list(meta["visible_tests"])
        if test:
            meta["test_setup"] = f"{test.rstrip()}\n\ncandidate = {record['entry_point']}\n"
        return Problem(id=task_id, question=record["prompt"], answer=None, meta=meta)
    desc, tests = mbpp_parts(record["prompt"], record.get("assertion"))
    meta.update({"tests": tests, "visible_tests": tests[:1], "setup": "", "reference": record["canonical_solution"]})
    return Problem(id=task_id, question=desc, answer=None, meta=meta)


def _mbpp_deserializer():
    try:  # evalplus's data module needs its own dependencies (wget, tempdir, appdirs)
        from evalplus.data.mbpp import mbpp_deserialize_inputs
    except ImportError:
        return None
    return mbpp_deserialize_inputs


def read_file(path: str | Path, flavour: str) -> list[Problem]:
    """The problems of a local EvalPlus JSONL file, in file order; repeated task_ids are refused."""
    deserialize = _mbpp_deserializer() if flavour == "mbpp" else None
    problems, seen = [], {}
    for where, rec in read_records(path):
        p = problem_from_record(rec, where, flavour, deserialize)
        if p.id in seen:
            raise DataFileError(f"{where}: task_id {p.id} repeats {seen[p.id]}")
        seen[p.id] = where
        problems.append(p)
    return problems


def read_package(flavour: str) -> list[Problem]:
    """The problems from evalplus's own loaders (they download the release once, then read it
    from evalplus's cache; get_mbpp_plus restores MBPP+'s input types itself)."""
    if not evalplus_available():
        raise DataFileError(f"dataset={flavour}_plus: set dataset.file=<an EvalPlus JSONL file> "
                            f"(e.g. {'HumanEvalPlus' if flavour == 'humaneval' else 'MbppPlus'}.jsonl from the "
                            "EvalPlus release), or install evalplus with its dependencies (pip install evalplus) to fetch it")
    from evalplus.data import get_human_eval_plus, get_mbpp_plus

    try:
        rows = get_human_eval_plus() if flavour == "humaneval" else get_mbpp_plus()
    except Exception as e:  # wget / network errors, a corrupt cache
        raise DataFileError(f"dataset={flavour}_plus: evalplus could not fetch the dataset ({type(e).__name__}: "
                            f"{e}); download it once and set dataset.file=<its JSONL>") from e
    return [problem_from_record(r, f"evalplus:{tid}", flavour) for tid, r in rows.items()]


def load_evalplus(cfg) -> tuple[list[Problem], list[Problem]]:
    """(train, test) for ``dataset=humaneval_plus`` / ``mbpp_plus``."""
    flavour = FLAVOURS[cfg.name]
    problems = read_file(cfg.file, flavour) if cfg.file else read_package(flavour)
    n_test = len(problems) if cfg.test_size is None else cfg.test_size
    test, rest = problems[:n_test], problems[n_test:]
    return (rest if cfg.train_size is None else rest[:cfg.train_size]), test


@dataclass
class EvalPlusConfig(DatasetConfig):
    file: Optional[str] = None  # a local file in EvalPlus's JSONL format (null: the evalplus package's)


class EvalPlus(Dataset):
    """``dataset=humaneval_plus`` / ``mbpp_plus``: EvalPlus's extended tests."""

    Config = EvalPlusConfig

    def load(self):
        return load_evalplus(self.cfg)
