"""A content-addressed, append-only cache of generations.

One JSONL file per (model identity, sampling, seed); one line per prompt holding its
completions.  Lines are appended batch by batch (flushed and fsynced), so a run killed
half-way resumes from what it wrote; a torn last line is ignored.  Appends take a file
lock, so parallel sweep jobs sharing a teacher can write to the same file.
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
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from a killed run
                k, comps = rec.get("k"), rec.get("completions")
                if isinstance(k, str) and isinstance(comps, list) and len(comps) > len(found.get(k, [])):
                    found[k] = comps
        return found

    def append(self, items: Iterable[tuple[str, list[str]]]) -> None:
        lines = "".join(json.dumps({"k": self.prompt_key(p), "completions": c}, ensure_ascii=False) + "\n"
                        for p, c in items)
        if not lines:
            return
        with self.lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
