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
import importlib
import logging
import pkgutil
import time
from pathlib import Path
from typing import Callable, Protocol

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


class Backend(Protocol):
    """What a generation backend is (``generation.backend``): the module
    ``codistill.generation.<name>`` declares ``Backend = <its class>`` (a backend outside the
    package is named by its dotted class).  ``generate`` draws ``sampling.n`` completions per
    prompt, in prompt order, and calls ``on_batch`` with each finished batch's
    ``(prompt, completions)`` rows so they are cached at once; ``last_tokens`` /
    ``last_tokens_per_s`` are the figures of the last call.  ``from_config`` builds it for a role
    (``model``/``tokenizer``: the loaded weights, for a backend that is ``in_process``);
    ``identity`` is its generation-cache key: every input besides weights, prompts, sampling and
    seed that changes the samples."""

    in_process: bool
    last_tokens: int
    last_tokens_per_s: float

    def generate(self, prompts: list[str], sampling, seed: int,
                 on_batch: Callable[[list[tuple[str, list[str]]]], None] | None = None) -> list[list[str]]: ...

    @classmethod
    def from_config(cls, gcfg, mcfg, *, cache_dir: str | Path, model=None, tokenizer=None,
                    desc: str = "generate") -> "Backend": ...

    @classmethod
    def identity(cls, gcfg, mcfg, model_identity: str, model=None) -> str: ...


def check_backend_name(name: str, key: str) -> None:
    """``name`` is a backend: a module ``codistill.generation.<name>`` or a dotted class whose
    package is installed -- checked without importing it (hf would load torch)."""
    from importlib.util import find_spec

    from codistill.plugins import check

    if "." in name:
        check(find_spec(name.split(".")[0]) is not None, key, f"{name}: package {name.split('.')[0]!r} not importable")
        return
    known = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_BACKENDS)
    check(name in known, key, f"{name!r} is not one of {known} (or a backend class as package.module.Class)")


NOT_BACKENDS = ("cache",)  # the modules of this package that are not backends


def backend_class(name: str) -> type[Backend]:
    """The backend class ``generation.backend`` (or a role's ``backend``) names."""
    from codistill.plugins import locate

    if "." in name:
        return locate(name, "generation.backend")
    return importlib.import_module(f"{__name__}.{name}").Backend


def backend_identity(gcfg, mcfg, model_identity: str | None, model=None) -> str | None:
    """The generation-cache identity of sampling ``mcfg`` with backend ``gcfg.backend``
    (None when ``model_identity`` is None, i.e. the cache is off).  hf needs the loaded ``model``:
    its dtype and device are read from it, as resolved, not from the config's ``auto``."""
    if model_identity is None:
        return None
    return backend_class(gcfg.backend).identity(gcfg, mcfg, model_identity, model=model)


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


def fields_key(d: dict) -> str:
    return ",".join(f"{k}={d[k]}" for k in sorted(d))


def build_backend(gcfg, mcfg, *, cache_dir: str | Path, model=None, tokenizer=None, desc: str = "generate"):
    """A backend for sampling from the model ``mcfg`` as ``gcfg`` (a GenerationConfig) says.

    hf needs the loaded ``model`` and ``tokenizer``; vllm loads the checkpoint itself (packaged
    models resolve to their converted directory); openai loads nothing.
    """
    return backend_class(gcfg.backend).from_config(gcfg, mcfg, cache_dir=cache_dir, model=model, tokenizer=tokenizer,
                                                   desc=desc)


__all__ = ["Backend", "GenerationCache", "backend_class", "backend_identity", "build_backend", "check_backend_name",
           "chain_seed", "digest", "generate",
           "generate_each", "hf_numerics", "sampling_key", "served_model_name"]
