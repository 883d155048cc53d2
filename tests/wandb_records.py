"""Read what W&B wrote offline (``run-<id>.wandb``) back into Python, for tests.

wandb >= 0.2x no longer ships a Python reader for its transaction log (the old
``wandb.sdk.internal.datastore`` is gone; ``wandb-core`` writes the file).  The format is
LevelDB's log format behind a 7-byte header (``:W&B``, magic 0xBEE1, version): 32 KiB
blocks of records, each ``crc32 (4) | length (2) | type (1) | data``, type FULL/FIRST/
MIDDLE/LAST, and each payload one ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> list[bytes]:
    """The records' payloads, checksums verified."""
    data = Path(path).read_bytes()
    ident, magic, _version = HEADER.unpack_from(data, 0)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path}: not a W&B transaction log"
    pos, out, partial = HEADER.size, [], b""
    while pos + RECORD.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:  # block trailer: zero padding
            pos += left
            continue
        crc, length, kind = RECORD.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero-filled tail (preallocated / padding)
            pos += left
            continue
        body = data[pos + RECORD.size: pos + RECORD.size + length]
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad checksum at {pos}"
        pos += RECORD.size + length
        if kind == FULL:
            out.append(body)
        elif kind == FIRST:
            partial = body
        elif kind == MIDDLE:
            partial += body
        elif kind == LAST:
            out.append(partial + body)
            partial = b""
    return out


@dataclass
class OfflineRun:
    """The parts of an offline run the tests look at."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history_keys: set[str] = field(default_factory=set)
    tables: dict = field(default_factory=dict)  # logged key -> {path, nrows, ncols, ...}
    artifacts: list[dict] = field(default_factory=list)  # name, type, files
    exit_code: int | None = None


def read_run(path: Path) -> OfflineRun:
    """Parse one ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for raw in payloads(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            run.config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            run.history_keys.update(row)
            for key, value in row.items():  # a logged wandb.Table: <key>/_type == "table-file", <key>/path
                if key.endswith("/_type") and value == "table-file":
                    prefix = key[: -len("/_type")]
                    run.tables[prefix] = {k[len(prefix) + 1:]: v for k, v in row.items() if k.startswith(prefix + "/")}
        elif kind == "summary":
            for i in rec.summary.update:
                run.summary[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind == "artifact":
            a = rec.artifact
            run.artifacts.append({"name": a.name, "type": a.type,
                                  "files": [e.path for e in a.manifest.contents]})
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    return run


def table_data(run_files: Path, table: dict) -> dict:
    """The columns and rows of a logged table, from the file wandb wrote under ``files/``."""
    return json.loads((Path(run_files) / "files" / table["path"]).read_text())


def offline_runs(run_dir: Path) -> list[tuple[Path, OfflineRun]]:
    """Every offline W&B run under a job directory: (its directory, what it holds)."""
    return [(d, read_run(next(d.glob("run-*.wandb"))))
            for d in sorted((Path(run_dir) / "wandb").glob("offline-run-*"))]
