"""Generation: one call, ``generate(prompts, sampling)``, behind a content-addressed cache.

``generate`` draws ``sampling.n`` completions per *distinct* prompt (a prompt listed twice gets
the same completions twice).  :func:`generate_each` draws one independent completion per list
entry instead, identical prompts included: for independent chains (refinement at evaluation).

The cache key is (model identity, sampling settings, seed -- none for greedy decoding); a sweep over students or
learning rates therefore reuses the teacher's samples, and a killed run resumes from
the prompts it had finished.

Backends (``generation.backend``; :func:`build_backend` makes one): ``hf`` (transformers, the
model in this process), ``vllm`` (in-process vLLM on a GPU), ``openai`` (an OpenAI-compatible
server).  :func:`backend_identity` puts into the key every input besides the weights, prompts,
sampling and seed that changes the samples, so runs of one model under other numerics never mix
in a shared cache: hf adds the dtype the model was loaded in, its device, its quantization, the
batch size (it decides which prompts share a batch, hence padding and the batch's RNG seed) and
the static-cache switch (``<model>|hf:...``); vLLM its dtype, tensor parallelism, context length
and eager switch (``<model>|vllm:...``); an openai server's weights and numerics are unknown
here, so its key is the server (credentials stripped) and the served name
(``openai:<base_url>:<model>``) -- never the API key.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from codistill.generation.cache import GenerationCache, digest

log = logging.getLogger(__name__)


# How sampled batches are seeded (hf: :func:`codistill.generation.hf.batch_seed`, from the run's
# seed and the batch's prompts).  Part of the cache key of sampled generations, so a cache written
# under the former per-batch-index seeding is not resumed into; greedy entries do not depend on it.
RNG_SCHEME = "batch-prompts"


def sampling_key(sampling) -> dict:
    d = dataclasses.asdict(sampling) if dataclasses.is_dataclass(sampling) else dict(sampling)
    d.pop("n", None)  # a line stores its own completions; n is checked per prompt
    return d


def open_cache(cache_root: str | Path, model_id: str, sampling, seed: int) -> GenerationCache:
    """The cache file holding ``model_id``'s generations under ``sampling`` and ``seed``."""
    sampled = sampling.temperature > 0
    # greedy decoding does not depend on the seed: one cache entry serves every seed of a sweep
    return GenerationCache(cache_root, model_id, sampling_key(sampling), seed if sampled else 0,
                           RNG_SCHEME if sampled else None)


def generate(backend, prompts: list[str], sampling, *, seed: int, model_id: str | None,
             cache_root: str | Path | None) -> tuple[list[list[str]], dict]:
    """``sampling.n`` completions for each prompt, from the cache where possible.

    Returns the completions and stats: prompts found in the cache, prompts generated,
    tokens generated, tokens/s.  ``model_id=None`` or ``cache_root=None`` disables the cache.
    """
    n = sampling.n
    cache = open_cache(cache_root, model_id, sampling, seed) if model_id and cache_root else None
    found = cache.load() if cache else {}
    results: dict[str, list[str]] = {}
    todo: list[str] = []
    for p in dict.fromkeys(prompts):  # unique, in order
        got = found.get(GenerationCache.prompt_key(p)) if cache else None
        if got is not None and len(got) >= n:
            results[p] = got[:n]
        else:
            todo.append(p)
    stats = {"cached_prompts": len(results), "generated_prompts": len(todo), "tokens": 0, "tokens_per_s": 0.0}
    if cache and results:
        log.info("generation cache %s: %d of %d prompts already done", cache.path.name, len(results),
                 len(results) + len(todo))
    from codistill import distributed, faults

    def on_batch(rows) -> None:  # each finished batch is cached at once: a killed pass loses one batch
        if cache:
            cache.append(rows)
        faults.hit("generate_batch")

    if distributed.world_size() > 1:  # ranks split the prompts: agree on rank 0's view of the cache first
        results, todo = distributed.broadcast_object((results, todo))
        stats.update(cached_prompts=len(results), generated_prompts=len(todo))
        if todo:
            t0 = time.perf_counter()
            fresh, stats["tokens"] = distributed.generate_sharded(backend, todo, sampling, seed,
                                                                   on_batch=on_batch)
            results.update(zip(todo, fresh))
            stats["tokens_per_s"] = stats["tokens"] / max(time.perf_counter() - t0, 1e-9)
    elif todo:
        fresh = backend.generate(todo, sampling, seed, on_batch=on_batch)
        results.update(zip(todo, fresh))
        stats["tokens"] = getattr(backend, "last_tokens", 0)
        stats["tokens_per_s"] = getattr(backend, "last_tokens_per_s", 0.0)
    return [results[p] for p in prompts], stats


def chain_seed(seed: int, chain: int) -> int:
    """The sampling seed of chain ``chain`` (pure): ``seed`` for chain 0, a value derived from
    (seed, chain) for the others.  Part of the cache key, so each chain has its own entries."""
    return seed if chain == 0 else int(digest({"seed": seed, "chain": chain})[:15], 16)


def generate_each(backend, prompts: list[str], sampling, *, seed: int, model_id: str | None,
                  cache_root: str | Path | None) -> tuple[list[str], dict]:
    """One completion per entry of ``prompts``, drawn independently even where prompts repeat.

    The j-th occurrence of a prompt in the list is its chain j: chain j's prompts are drawn in
    one :func:`generate` call with :func:`chain_seed` (seed, j), so two entries of one prompt
    come from different random streams and different cache entries, and a rerun draws the same
    ones.  Greedy decoding has one answer per prompt; every chain gets it (the greedy cache key
    has no seed).  Stats are summed over the calls."""
    one = dataclasses.replace(sampling, n=1)
    seen: dict[str, int] = {}
    chain = []
    for p in prompts:
        chain.append(seen.get(p, 0))
        seen[p] = chain[-1] + 1
    out: list[str | None] = [None] * len(prompts)
    stats = {"cached_prompts": 0, "generated_prompts": 0, "tokens": 0, "tokens_per_s": 0.0}
    t0 = time.perf_counter()
    for c in range(max(chain, default=-1) + 1):
        idx = [i for i, ci in enumerate(chain) if ci == c]
        comps, st = generate(backend, [prompts[i] for i in idx], one, seed=chain_seed(seed, c), model_id=model_id,
                             cache_root=cache_root)
        for i, cs in zip(idx, comps):
            out[i] = cs[0]
        for k in ("cached_prompts", "generated_prompts", "tokens"):
            stats[k] += st[k]
    stats["tokens_per_s"] = stats["tokens"] / max(time.perf_counter() - t0, 1e-9)
    return out, stats


def served_model_name(gcfg, mcfg) -> str:
    """The model name sent to an OpenAI-compatible server: ``generation.openai.model``, else the
    role's model config ``name``."""
    return gcfg.openai.model or mcfg.name


def backend_identity(gcfg, mcfg, model_identity: str | None, model=None) -> str | None:
    """The generation-cache identity of sampling ``mcfg`` with backend ``gcfg.backend``
    (None when ``model_identity`` is None, i.e. the cache is off).  hf needs the loaded ``model``:
    its dtype and device are read from it, as resolved, not from the config's ``auto``."""
    if model_identity is None:
        return None
    if gcfg.backend == "hf":
        if model is None:
            raise ValueError("the hf generation-cache identity needs the loaded model (its dtype and device)")
        return f"{model_identity}|hf:{_fields(hf_numerics(model, gcfg))}"
    if gcfg.backend == "vllm":
        v = gcfg.vllm
        return (f"{model_identity}|vllm:" + _fields({"dtype": v.dtype, "tensor_parallel_size": v.tensor_parallel_size,
                                                      "max_model_len": v.max_model_len or mcfg.max_context,
                                                      "enforce_eager": bool(v.enforce_eager)}))
    if gcfg.backend == "openai":
        from codistill.redact import strip_url_credentials

        url = strip_url_credentials(str(gcfg.openai.base_url).rstrip("/"))
        return f"openai:{url}:{served_model_name(gcfg, mcfg)}"
    raise ValueError(f"generation.backend: unknown backend {gcfg.backend!r}")


def hf_numerics(model, gcfg) -> dict:
    """What decides an hf backend's samples besides weights, prompts, sampling and seed: the
    parameters' dtype and device type, quantization, the batch size (``auto`` as it resolves off
    CUDA; on CUDA it follows free memory, so it stays ``auto``) and the static-cache switch."""
    from codistill.generation.hf import CPU_AUTO_BATCH

    p = next(model.parameters())
    device = p.device.type
    batch = gcfg.batch_size
    if batch == "auto" and device != "cuda":
        batch = CPU_AUTO_BATCH
    quant = None
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        quant = "4bit" if getattr(model, "is_loaded_in_4bit", False) else "8bit"
    elif getattr(model, "hf_quantizer", None) is not None:
        quant = type(model.hf_quantizer).__name__
    return {"dtype": str(p.dtype).removeprefix("torch."), "device": device, "quantization": quant,
            "batch_size": batch, "static_cache": bool(gcfg.static_cache)}


def _fields(d: dict) -> str:
    return ",".join(f"{k}={d[k]}" for k in sorted(d))


def build_backend(gcfg, mcfg, *, cache_dir: str | Path, model=None, tokenizer=None, desc: str = "generate"):
    """A backend for sampling from the model ``mcfg`` as ``gcfg`` (a GenerationConfig) says.

    hf needs the loaded ``model`` and ``tokenizer``; vllm loads the checkpoint itself (packaged
    models resolve to their converted directory); openai loads nothing.
    """
    if gcfg.backend == "hf":
        from codistill.generation.hf import HFBackend

        if model is None or tokenizer is None:
            raise ValueError("generation=hf needs the loaded model and tokenizer")
        return HFBackend(model, tokenizer, batch_size=gcfg.batch_size, static_cache=gcfg.static_cache, desc=desc)
    if gcfg.backend == "vllm":
        from codistill.generation.vllm import VLLMBackend
        from codistill.models import resolve_checkpoint

        if mcfg.source == "tiny":
            raise ValueError("generation=vllm cannot load a tiny (in-memory) model; use generation=hf")
        return VLLMBackend(resolve_checkpoint(mcfg, cache_dir), gcfg.vllm, max_context=mcfg.max_context,
                           trust_remote_code=bool(mcfg.trust_remote_code), desc=desc)
    if gcfg.backend == "openai":
        from codistill.generation.openai import OpenAIBackend

        return OpenAIBackend(gcfg.openai, served_model_name(gcfg, mcfg), desc=desc)
    raise ValueError(f"generation.backend: unknown backend {gcfg.backend!r}")


__all__ = ["GenerationCache", "backend_identity", "build_backend", "chain_seed", "digest", "generate",
           "generate_each", "hf_numerics", "sampling_key", "served_model_name"]
