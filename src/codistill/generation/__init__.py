"""Generation: one call, ``generate(prompts, sampling)``, behind a content-addressed cache.

The cache key is (model identity, sampling settings, seed); a sweep over students or
learning rates therefore reuses the teacher's samples, and a killed run resumes from
the prompts it had finished.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from codistill.generation.cache import GenerationCache, digest

log = logging.getLogger(__name__)


def sampling_key(sampling) -> dict:
    d = dataclasses.asdict(sampling) if dataclasses.is_dataclass(sampling) else dict(sampling)
    d.pop("n", None)  # a line stores its own completions; n is checked per prompt
    return d


def generate(backend, prompts: list[str], sampling, *, seed: int, model_id: str | None,
             cache_root: str | Path | None) -> tuple[list[list[str]], dict]:
    """``sampling.n`` completions for each prompt, from the cache where possible.

    Returns the completions and stats: prompts found in the cache, prompts generated,
    tokens generated, tokens/s.  ``model_id=None`` or ``cache_root=None`` disables the cache.
    """
    n = sampling.n
    cache = GenerationCache(cache_root, model_id, sampling_key(sampling), seed) if model_id and cache_root else None
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
    from codistill import distributed

    if distributed.world_size() > 1:  # ranks split the prompts: agree on rank 0's view of the cache first
        results, todo = distributed.broadcast_object((results, todo))
        stats.update(cached_prompts=len(results), generated_prompts=len(todo))
        if todo:
            t0 = time.perf_counter()
            fresh, stats["tokens"] = distributed.generate_sharded(backend, todo, sampling, seed,
                                                                   on_batch=cache.append if cache else None)
            results.update(zip(todo, fresh))
            stats["tokens_per_s"] = stats["tokens"] / max(time.perf_counter() - t0, 1e-9)
    elif todo:
        fresh = backend.generate(todo, sampling, seed, on_batch=cache.append if cache else None)
        results.update(zip(todo, fresh))
        stats["tokens"] = getattr(backend, "last_tokens", 0)
        stats["tokens_per_s"] = getattr(backend, "last_tokens_per_s", 0.0)
    return [results[p] for p in prompts], stats


__all__ = ["GenerationCache", "digest", "generate", "sampling_key"]
