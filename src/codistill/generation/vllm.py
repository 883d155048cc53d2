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
from dataclasses import dataclass
from typing import Callable, Optional

from codistill.plugins import check, choice

log = logging.getLogger(__name__)


@dataclass
class VLLMConfig:
    """``generation=vllm``: an in-process vLLM ``LLM`` over the role's local checkpoint (GPU)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    max_model_len: Optional[int] = None  # null: the model config's max_context
    enforce_eager: bool = False

    def check(self, key: str) -> None:
        check(self.tensor_parallel_size >= 1, f"{key}.tensor_parallel_size", "must be >= 1")
        check(0 < self.gpu_memory_utilization <= 1, f"{key}.gpu_memory_utilization", "must be in (0, 1]")
        from codistill.config import DTYPES

        choice(self.dtype, f"{key}.dtype", DTYPES)
        check(self.max_model_len is None or self.max_model_len >= 16, f"{key}.max_model_len", "must be >= 16")
        check(vllm_available(), key.rsplit(".", 1)[0] + ".backend",
              "generation=vllm needs the vllm package (GPU machines: pip install 'codistill[vllm]'); "
              "it is not importable here - use generation=hf")


def vllm_available() -> bool:
    from importlib.util import find_spec

    return find_spec("vllm") is not None


class VLLMBackend:
    """``generate(prompts, sampling, seed)`` with vLLM; ``checkpoint`` is a directory or hub id."""

    in_process = False  # loads the role's checkpoint itself

    @classmethod
    def from_config(cls, gcfg, mcfg, *, cache_dir, model=None, tokenizer=None,
                    desc: str = "generate") -> "VLLMBackend":
        from codistill.models import resolve_checkpoint

        if mcfg.source == "tiny":
            raise ValueError("generation=vllm cannot load a tiny (in-memory) model; use generation=hf")
        return cls(resolve_checkpoint(mcfg, cache_dir), gcfg.vllm, max_context=mcfg.max_context,
                   trust_remote_code=bool(mcfg.trust_remote_code), desc=desc)

    @classmethod
    def identity(cls, gcfg, mcfg, model_identity: str, model=None) -> str:
        """``<model>|vllm:...``: its dtype, tensor parallelism, context length and eager switch."""
        from codistill.generation import fields_key

        v = gcfg.vllm
        return f"{model_identity}|vllm:" + fields_key({"dtype": v.dtype, "tensor_parallel_size": v.tensor_parallel_size,
                                                       "max_model_len": v.max_model_len or mcfg.max_context,
                                                       "enforce_eager": bool(v.enforce_eager)})

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


Backend = VLLMBackend  # generation.backend: vllm
