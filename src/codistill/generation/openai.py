"""The OpenAI-compatible backend: any server speaking the ``/v1/completions`` API.

Why ``/completions`` and not ``/chat/completions``: tasks render their prompts locally (the
chat template of the role's tokenizer included, see ``Task.render``), so the server receives
exactly the text the hf backend would feed the model; chat endpoints would apply a template
of their own a second time.  Only the tokenizer is loaded here, never the weights.

Requests run ``max_concurrency`` at a time on threads (one request per prompt, asking for its
``n`` samples with the ``n`` parameter; a server that returns fewer choices is asked again for
the rest, and one that rejects ``n`` is asked once per sample).  Failures that may pass
(HTTP 429, 5xx, timeouts, refused or dropped connections) are retried ``max_retries`` times
with exponential backoff and full jitter; other errors (400, 401, 404) fail at once, naming
the server's answer.  Each request carries a seed derived from (run seed, prompt, sample
index), so servers that honour ``seed`` give the same samples whatever the concurrency.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Optional

from codistill.plugins import check

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "codistill-no-key"  # local servers accept any key; the client insists on one


@dataclass
class OpenAIConfig:
    """``generation=openai``: any OpenAI-compatible server (its ``/completions`` endpoint).

    Prompts are rendered locally (chat template included) with the role's tokenizer, so the
    server gets exactly the text the hf backend would see.  The key is read from the
    environment variable named by ``api_key_env``; never put the key itself in a config.
    """

    base_url: Optional[str] = None  # e.g. http://127.0.0.1:8000/v1
    model: Optional[str] = None  # the served model's name; null: the role's model config `name`
    api_key_env: str = "OPENAI_API_KEY"  # unset variable: a placeholder key (local servers need none)
    max_concurrency: int = 8  # requests in flight at once
    timeout_s: float = 120.0  # per request
    max_retries: int = 5  # on 429, 5xx, timeouts and connection errors
    backoff_s: float = 1.0  # first retry delay; doubles each retry, with full jitter
    backoff_max_s: float = 30.0
    use_n: bool = True  # ask for n samples in one request (repeated requests where a server returns fewer)

    def check(self, key: str) -> None:
        check(bool(self.base_url) and str(self.base_url).startswith(("http://", "https://")), f"{key}.base_url",
               f"an http(s) URL of an OpenAI-compatible server is required, got {self.base_url!r}")
        check(bool(self.api_key_env) and not str(self.api_key_env).startswith("sk-"), f"{key}.api_key_env",
               "must name an environment variable (never the key itself)")
        check(self.max_concurrency >= 1, f"{key}.max_concurrency", "must be >= 1")
        check(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")
        check(self.max_retries >= 0, f"{key}.max_retries", "must be >= 0")
        check(0 <= self.backoff_s <= self.backoff_max_s, f"{key}.backoff_s", "must be in [0, backoff_max_s]")


class OpenAIBackendError(RuntimeError):
    """A request failed for good (a non-retryable answer, or retries exhausted)."""


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max_s, base_s * 2**attempt)]."""
    return rng.uniform(0.0, min(max_s, base_s * (2 ** attempt)))


def request_seed(seed: int, prompt: str, index: int) -> int:
    """A per-(prompt, first sample index) seed in [0, 2**31): independent of order and concurrency."""
    h = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


class OpenAIBackend:
    """``generate(prompts, sampling, seed)`` against an OpenAI-compatible server.

    ``cfg`` is a :class:`codistill.config.OpenAIConfig`; ``model`` the served model's name.
    """

    in_process = False  # the weights are the server's

    @classmethod
    def from_config(cls, gcfg, mcfg, *, cache_dir, model=None, tokenizer=None,
                    desc: str = "generate") -> "OpenAIBackend":
        from codistill.generation import served_model_name

        return cls(gcfg.openai, served_model_name(gcfg, mcfg), desc=desc)

    @classmethod
    def identity(cls, gcfg, mcfg, model_identity: str, model=None) -> str:
        """``openai:<base_url>:<served name>``: the server's weights and numerics are unknown
        here, so the key is the server (credentials stripped) and the name -- never the API key."""
        from codistill.generation import served_model_name
        from codistill.redact import strip_url_credentials

        url = strip_url_credentials(str(gcfg.openai.base_url).rstrip("/"))
        return f"openai:{url}:{served_model_name(gcfg, mcfg)}"

    def __init__(self, cfg, model: str, *, desc: str = "generate") -> None:
        import openai

        self.cfg = cfg
        self.model = model
        self.desc = desc
        key = os.environ.get(cfg.api_key_env) or PLACEHOLDER_KEY
        # our own retry loop (below) owns retries, so the client makes exactly one attempt
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
        self.use_n = bool(cfg.use_n)
        self.last_tokens = 0
        self.last_tokens_per_s = 0.0
        self.retries = 0  # retried requests in the last generate() call
        self._lock = threading.Lock()
        self._rng = random.Random()

    # ------------------------------------------------------------------ one request
    def _request(self, prompt: str, k: int, sampling, seed: int) -> tuple[list[str], int]:
        """``k`` completions of ``prompt`` (one request, retried); returns (texts, tokens)."""
        import openai

        kwargs = dict(model=self.model, prompt=prompt, max_tokens=sampling.max_new_tokens,
                      temperature=float(sampling.temperature), top_p=float(sampling.top_p), seed=seed)
        if k > 1:
            kwargs["n"] = k
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        attempt = 0
        while True:
            try:
                resp = self.client.completions.create(**kwargs)
                choices = sorted(resp.choices, key=lambda c: c.index)
                tokens = (resp.usage.completion_tokens or 0) if resp.usage is not None else 0
                return [c.text or "" for c in choices][:k], int(tokens)
            except openai.BadRequestError as e:
                if "n" in kwargs and self.use_n:
                    log.warning("%s rejected n=%d (%s); asking once per sample from now on",
                                self.cfg.base_url, k, e.message)
                    self.use_n = False
                    raise _AskSingly() from e
                raise OpenAIBackendError(f"{self.cfg.base_url} (model {self.model!r}): {e}") from e
            except Exception as e:  # noqa: BLE001 - sorted into retryable / fatal below
                if not _retryable(e):
                    raise OpenAIBackendError(f"{self.cfg.base_url} (model {self.model!r}): "
                                             f"{type(e).__name__}: {e}") from e
                if attempt >= self.cfg.max_retries:
                    raise OpenAIBackendError(f"{self.cfg.base_url} (model {self.model!r}): gave up after "
                                             f"{attempt + 1} attempts; last error {type(e).__name__}: {e}") from e
                with self._lock:
                    delay = backoff_delay(attempt, self.cfg.backoff_s, self.cfg.backoff_max_s, self._rng)
                    self.retries += 1
                log.info("retrying in %.2fs (attempt %d of %d): %s: %s", delay, attempt + 2,
                         self.cfg.max_retries + 1, type(e).__name__, e)
                time.sleep(delay)
                attempt += 1

    def _samples(self, prompt: str, sampling, seed: int) -> tuple[list[str], int]:
        """All ``sampling.n`` completions of one prompt."""
        n = sampling.n
        out: list[str] = []
        tokens = 0
        while len(out) < n:
            k = n - len(out) if self.use_n else 1
            try:
                texts, t = self._request(prompt, k, sampling, request_seed(seed, prompt, len(out)))
            except _AskSingly:
                continue
            if not texts:
                raise OpenAIBackendError(f"{self.cfg.base_url} (model {self.model!r}) returned no choices")
            out.extend(texts)
            tokens += t
        return out[:n], tokens

    # ------------------------------------------------------------------ the backend call
    def generate(self, prompts: list[str], sampling, seed: int,
                 on_batch: Callable[[list[tuple[str, list[str]]]], None] | None = None) -> list[list[str]]:
        """``sampling.n`` completions per prompt, in prompt order; ``on_batch`` gets each
        prompt as it finishes (called from this thread)."""
        from tqdm.auto import tqdm

        out: list[list[str] | None] = [None] * len(prompts)
        tokens = 0
        self.retries = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(prompts), desc=self.desc, unit="prompt", leave=False, dynamic_ncols=True)
        pool = ThreadPoolExecutor(max_workers=self.cfg.max_concurrency, thread_name_prefix="openai")
        try:
            pending = {pool.submit(self._samples, p, sampling, seed): i for i, p in enumerate(prompts)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                finished = []
                for fut in done:
                    i = pending.pop(fut)
                    texts, t = fut.result()  # a request that failed for good fails the call
                    out[i] = texts
                    tokens += t
                    finished.append((prompts[i], texts))
                if on_batch:
                    on_batch(finished)
                bar.update(len(finished))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        self.last_tokens = tokens
        self.last_tokens_per_s = tokens / max(time.perf_counter() - t0, 1e-9)
        return out  # type: ignore[return-value]


class _AskSingly(Exception):
    """Internal: the server rejected ``n``; ask again one sample per request."""


Backend = OpenAIBackend  # generation.backend: openai
