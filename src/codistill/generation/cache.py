"""A content-addressed, append-only cache of generations.

One JSONL file per (model identity, sampling, seed); one line per prompt holding its
completions.  Lines are appended batch by batch (flushed and fsynced), so a run killed
half-way resumes from what it wrote.  Appends take a file lock, so parallel sweep jobs sharing a
teacher can write to the same file.

The file is shared by every run that uses the same teacher, so one damaged line must not break
them all: it is read as bytes and decoded line by line, and a line that is not valid UTF-8 JSON
of the expected shape (a write torn by a kill, even inside a multi-byte character) is skipped,
counted, and reported in one warning naming the file.  An append first ends a torn tail with a
newline, so the new records never glue onto it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

from filelock import FileLock

log = logging.getLogger(__name__)


def digest(obj: object) -> str:
    """A stable sha256 of a JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class GenerationCache:
    def __init__(self, root: str | Path, model_id: str, sampling: dict, seed: int, rng: str | None = None) -> None:
        ident = {"model": model_id, "sampling": sampling, "seed": seed}
        if rng is not None:  # how sampled batches are seeded: files of another scheme are not mixed in
            ident["rng"] = rng
        self.key = digest(ident)
        self.dir = Path(root).expanduser() / "generations"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{self.key[:32]}.jsonl"
        self.lock = FileLock(str(self.path) + ".lock")
        self.meta = ident
        meta_path = self.dir / f"{self.key[:32]}.meta.json"
        if not meta_path.exists():
            meta_path.write_text(json.dumps(self.meta, indent=1))

    @staticmethod
    def prompt_key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode()).hexdigest()

    def load(self) -> dict[str, list[str]]:
        """prompt key -> completions (the longest list seen for that prompt)."""
        found: dict[str, list[str]] = {}
        if not self.path.exists():
            return found
        bad = 0
        for line in self.path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            rec = parse_line(line)
            if rec is None:  # torn by a killed run, or otherwise damaged
                bad += 1
                continue
            k, comps = rec
            if len(comps) > len(found.get(k, [])):
                found[k] = comps
        if bad:
            log.warning("generation cache %s: skipped %d unreadable line(s) (torn or corrupt); "
                        "their prompts are generated again", self.path, bad)
        return found

    def append(self, items: Iterable[tuple[str, list[str]]]) -> None:
        lines = "".join(json.dumps({"k": self.prompt_key(p), "completions": c}, ensure_ascii=False) + "\n"
                        for p, c in items)
        if not lines:
            return
        with self.lock:
            with self.path.open("ab") as f:
                if f.tell() > 0 and not _ends_with_newline(self.path):
                    f.write(b"\n")  # a torn tail: end it, so the first new record stays whole
                f.write(lines.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def parse_line(line: bytes) -> tuple[str, list[str]] | None:
    """(prompt key, completions) of one cache line, or None when it is not a whole record."""
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    k, comps = rec.get("k"), rec.get("completions")
    if not isinstance(k, str) or not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
        return None
    return k, comps


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
