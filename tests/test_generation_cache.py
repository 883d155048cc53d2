"""The shared generation cache: damaged files and what keys it (issues 15.4, 14.6)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from codistill.config import SamplingConfig
from codistill.generation import open_cache
from codistill.generation.cache import GenerationCache


def _record(prompt: str, comps: list[str]) -> bytes:
    return (json.dumps({"k": GenerationCache.prompt_key(prompt), "completions": comps}, ensure_ascii=False)
            + "\n").encode()


def test_torn_and_corrupt_lines_are_skipped_counted_and_named_and_appends_stay_whole(tmp_path, caplog):
    cache = open_cache(tmp_path, "tiny-x", SamplingConfig(n=1, temperature=0.0), 0)
    whole = _record("p1", ["naïve café"])
    cut = whole.index("é".encode()) + 1  # a kill inside a two-byte character: not valid UTF-8
    cache.path.write_bytes(whole + whole[:cut] + b"\n" + b"\xff\xfe garbage\n" + _record("p2", ["ok"])
                           + b'{"k": "torn ascii tail')
    cache.append([("p3", ["after the tear"])])
    with caplog.at_level(logging.WARNING, logger="codistill.generation.cache"):
        found = cache.load()
    assert found == {GenerationCache.prompt_key("p1"): ["naïve café"], GenerationCache.prompt_key("p2"): ["ok"],
                     GenerationCache.prompt_key("p3"): ["after the tear"]}  # the appended record survived
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cache.path) in warnings[0] and "3 unreadable line" in warnings[0]
    cache.append([("p4", ["again"])])  # the file now ends with a newline: nothing is added before it
    assert cache.path.read_bytes().endswith(b"\"after the tear\"]}\n" + _record("p4", ["again"]))
