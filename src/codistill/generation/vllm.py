"""The vLLM backend: an in-process ``vllm.LLM`` over a role's local checkpoint (GPU machines).

vLLM is an optional dependency (``pip install 'codistill[vllm]'``); ``generation=vllm`` fails
validation with a clear message where it is not importable.  The model is read from the
directory :func:`codistill.models.resolve_checkpoint` gives (a packaged GGUF is converted to a
plain checkpoint first; a hub id is passed as is).  A trained student is evaluated with vLLM
from its saved checkpoint (``<run>/student``; codistill.evaluation.student_backend).

vLLM returns completions without the stop string (the hf backend keeps it); tasks cut at the
first stop either way, so the extracted programs agree.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    from importlib.util import find_spec

    return find_spec("vllm") is not None


class VLLMBackend:
    """``generate(prompts, sampling, seed)`` with vLLM; ``checkpoint`` is a directory or hub id."""

    def __init__(self, checkpoint: str, cfg, *, max_context: int, trust_remote_code: bool = False,
                 desc: str = "generate") -> None:
        if not vllm_available():
            raise RuntimeError("generation=vllm needs the vllm package (pip install 'codistill[vllm]' on a GPU "
                               "machine); use generation=hf here")
        from vllm import LLM

        self.desc = desc
        self.llm = LLM(model=checkpoint, tensor_parallel_size=cfg.tensor_parallel_size,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, dtype=cfg.dtype,
                       max_model_len=cfg.max_model_len or max_context, enforce_eager=cfg.enforce_eager,
                       trust_remote_code=trust_remote_code)
        self.last_tokens = 0
        self.last_tokens_per_s = 0.0

    def generate(self, prompts: list[str], sampling, seed: int,
                 on_batch: Callable[[list[tuple[str, list[str]]]], None] | None = None) -> list[list[str]]:
        """``sampling.n`` completions per prompt, in prompt order (vLLM batches them itself)."""
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=float(sampling.temperature),
                                top_p=float(sampling.top_p) if sampling.temperature > 0 else 1.0,
                                max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None, seed=seed)
        t0 = time.perf_counter()
        results = self.llm.generate(prompts, params, use_tqdm=True)
        out = [[c.text for c in sorted(r.outputs, key=lambda c: c.index)] for r in results]
        self.last_tokens = sum(len(c.token_ids) for r in results for c in r.outputs)
        self.last_tokens_per_s = self.last_tokens / max(time.perf_counter() - t0, 1e-9)
        if on_batch:
            on_batch(list(zip(prompts, out)))
        return out
