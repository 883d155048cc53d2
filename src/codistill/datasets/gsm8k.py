"""GSM8K: the hub dataset ``openai/gsm8k`` or local JSONL files in its own format.

A line is ``{"question": ..., "answer": "...reasoning... #### 1,234"}``; the gold label is
the number after ``####`` (commas allowed).  A bad line is reported with file and line.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from codistill.datasets.base import Dataset
from codistill.tasks.base import Problem
from codistill.tasks.gsm import parse_number

_FINAL = re.compile(r"####\s*(.+?)\s*$")


class DataFileError(ValueError):
    """A data file has a bad line; the message names the file and the line."""


def gold_from_solution(answer: str) -> float | None:
    """The number after ``####`` in a GSM8K answer field, or None."""
    m = _FINAL.search(answer.strip())
    return parse_number(m.group(1)) if m else None


def _problem(record: object, where: str, pid: str) -> Problem:
    if not isinstance(record, dict):
        raise DataFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("question", "answer") if not isinstance(record.get(k), str)]
    if missing:
        raise DataFileError(f"{where}: missing or non-string field(s) {missing}")
    gold = gold_from_solution(record["answer"])
    if gold is None:
        raise DataFileError(f"{where}: 'answer' does not end in '#### <number>': {record['answer'][-60:]!r}")
    return Problem(id=pid, question=record["question"].strip(), answer=gold,
                   meta={"solution": record["answer"]})


def jsonl_records(path: str | Path, side: str):
    """``(lineno, where, record)`` for each non-blank line of a local JSONL file, where ``where``
    is ``path:line`` for error messages; a missing or empty file names ``dataset.<side>_file``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset.{side}_file: no such file: {path}")
    records = 0
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFileError(f"{where}: invalid JSON ({e.msg})") from None
            records += 1
            yield lineno, where, record
    if not records:  # a run on no problems would report status ok with nothing learned or measured
        raise DataFileError(f"dataset.{side}_file: {path} holds no records (the file is empty)")


def read_jsonl(path: str | Path, split: str) -> list[Problem]:
    """Problems from a local GSM8K-format JSONL file; errors name ``path:line``."""
    return [_problem(record, where, f"gsm8k/{split}/{lineno}") for lineno, where, record in jsonl_records(path, split)]


def read_hub(hub_id: str, hub_config: str | None, split: str) -> list[Problem]:
    import datasets  # the Hugging Face library (absolute import)

    ds = datasets.load_dataset(hub_id, hub_config or "main", split=split)
    return [_problem(r, f"{hub_id}[{split}][{i}]", f"gsm8k/{split}/{i}") for i, r in enumerate(ds)]


def load_gsm8k(cfg) -> tuple[list[Problem], list[Problem]]:
    out = []
    for split, file, size in (("train", cfg.train_file, cfg.train_size), ("test", cfg.test_file, cfg.test_size)):
        if size == 0:
            out.append([])
            continue
        problems = read_jsonl(file, split) if file else read_hub(cfg.hub_id or "openai/gsm8k", cfg.hub_config, split)
        if cfg.shuffle_seed is not None:
            random.Random(cfg.shuffle_seed).shuffle(problems)
        out.append(problems if size is None else problems[:size])
    return out[0], out[1]


class GSM8K(Dataset):
    """``dataset=gsm8k``: the hub's ``openai/gsm8k`` or local JSONL files in its format."""

    def load(self):
        return load_gsm8k(self.cfg)
