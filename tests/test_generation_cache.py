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


# --------------------------------------------------------------------------- what keys the cache (14.6)
def _teacher_key(compose, tmp_path, *overrides) -> str:
    """The generation-cache key of the teacher's samples, as a method opens it (the real load)."""
    from codistill.config import validate
    from codistill.methods.base import RunContext
    from codistill.tasks import build_task

    rc = validate(compose("experiment=smoke", *overrides))
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=build_task(rc.dataset.task, rc.task), train=[], test=[],
                     cache_dir=str(tmp_path))
    _, _, ident = ctx.backend("teacher")
    return open_cache(tmp_path, ident, rc.sampling, rc.seed).key


KEY_SCRIPT = """
import sys
from hydra import compose, initialize_config_dir
from codistill.config import register_configs, validate
from codistill.generation import open_cache
from codistill.methods.base import RunContext
from codistill.tasks import build_task
register_configs()
with initialize_config_dir(sys.argv[1], version_base="1.3"):
    rc = validate(compose("config", overrides=["experiment=smoke", "teacher.dtype=float32"]))
ctx = RunContext(cfg=rc, run_dir=sys.argv[2], task=build_task(rc.dataset.task, rc.task), train=[], test=[],
                 cache_dir=sys.argv[2])
print(open_cache(sys.argv[2], ctx.backend("teacher")[2], rc.sampling, rc.seed).key)
"""


def test_hf_key_holds_the_numerics_and_is_stable_across_processes(compose, tmp_path):
    from conftest import CONF

    fp32 = _teacher_key(compose, tmp_path, "teacher.dtype=float32")
    assert fp32 != _teacher_key(compose, tmp_path, "teacher.dtype=bfloat16")  # only the dtype differs
    assert fp32 != _teacher_key(compose, tmp_path, "teacher.dtype=float32", "generation.batch_size=4")
    assert fp32 != _teacher_key(compose, tmp_path, "teacher.dtype=float32", "generation.static_cache=true")
    # on CPU batch_size=auto is 16: the same batches, the same samples, the same key
    assert (_teacher_key(compose, tmp_path, "teacher.dtype=float32", "generation.batch_size=16")
            == _teacher_key(compose, tmp_path, "teacher.dtype=float32", "generation.batch_size=auto"))
    other = subprocess.run([sys.executable, "-c", KEY_SCRIPT, str(CONF), str(tmp_path)], capture_output=True,
                           text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip().splitlines()[-1] == fp32  # the same config in another process: the same key


def test_vllm_and_openai_keys(monkeypatch):
    """vLLM: its numerics are in the key; openai: the server and name, never the key or a URL password."""
    from codistill.config import GenerationConfig, ModelConfig, OpenAIConfig, VLLMConfig
    from codistill.generation import backend_identity

    m = ModelConfig(name="smol", source="tiny")
    keys = {backend_identity(GenerationConfig(backend="vllm", vllm=VLLMConfig(dtype=d, tensor_parallel_size=tp)),
                             m, "id") for d in ("bfloat16", "float16") for tp in (1, 2)}
    assert len(keys) == 4 and all(k.startswith("id|vllm:") for k in keys)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdefXYZ")
    o = GenerationConfig(backend="openai", openai=OpenAIConfig(base_url="http://me:pw123@h:1/v1/"))
    ident = backend_identity(o, m, "id")
    assert ident == "openai:http://h:1/v1:smol"  # the server and the served name; no key, no password
    assert backend_identity(o, m, "id") == ident  # stable
    assert backend_identity(o, m, None) is None  # cache off
