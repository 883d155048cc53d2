"""The transformers backend: batched, left-padded sampling of n completions per prompt."""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class HFBackend:
    """``generate(prompts, sampling, seed)`` on a loaded transformers model.

    Prompts are sorted by length (less padding) and run ``batch_size // n`` at a time with
    all their ``n`` samples, the prompt prefilled once per batch.  ``on_batch`` is called
    with the prompts of each finished batch, so the caller can persist them (kill-and-resume).
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 16, desc: str = "generate",
                 share_prefill: bool = True) -> None:
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size
        self.desc = desc
        self._end_ids = {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None}
        self.last_tokens = 0
        self.share_prefill = share_prefill
        self.last_tokens_per_s = 0.0

    def generate(self, prompts: list[str], sampling, seed: int,
                 on_batch: Callable[[list[tuple[str, list[str]]]], None] | None = None) -> list[list[str]]:
        """``sampling.n`` completions per prompt, in prompt order.  The tokenizer pads on the
        left while this runs and gets its own padding side back afterwards (it is shared with
        training)."""
        side = self.tok.padding_side
        self.tok.padding_side = "left"
        try:
            return self._generate(prompts, sampling, seed, on_batch)
        finally:
            self.tok.padding_side = side

    @torch.no_grad()
    def _generate(self, prompts, sampling, seed, on_batch) -> list[list[str]]:
        n = sampling.n
        lengths = [len(self.tok(p, add_special_tokens=False).input_ids) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))  # longest first: fail fast on memory
        # a batch holds whole prompts with all their samples, so each prompt is prefilled once
        per_batch = max(1, self.batch_size // n)
        device = next(self.model.parameters()).device
        greedy = sampling.temperature == 0
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tok)
        out: list[list[str]] = [[] for _ in prompts]
        tokens = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(prompts) * n, desc=self.desc, unit="sample", leave=False, dynamic_ncols=True)
        for b, start in enumerate(range(0, len(order), per_batch)):
            idx = order[start:start + per_batch]
            enc = self.tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(device)
            torch.manual_seed(seed * 1_000_003 + b)
            new = self._generate_batch(enc.input_ids, enc.attention_mask, n, kwargs)
            finished = []
            for row in range(new.shape[0]):
                i = idx[row // n]
                ids = new[row].tolist()
                length = next((t for t, tid in enumerate(ids) if tid in self._end_ids), len(ids))
                out[i].append(self.tok.decode(ids[:length], skip_special_tokens=True))
                tokens += length
                if len(out[i]) == n:
                    finished.append((prompts[i], list(out[i])))
            if on_batch and finished:
                on_batch(finished)
            bar.update(new.shape[0])
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
        bar.close()
        self.last_tokens_per_s = tokens / max(time.perf_counter() - t0, 1e-9)
        self.last_tokens = tokens
        return out

    def _generate_batch(self, ids: torch.Tensor, mask: torch.Tensor, n: int, kwargs: dict) -> torch.Tensor:
        """``n`` continuations of each row; the new tokens only.

        With ``n`` > 1 the prompts are run through the model once and their KV cache is
        repeated ``n`` times, instead of prefilling every copy (the prompt, often few-shot,
        dominates the cost).  Falls back to plain expansion where a model's cache cannot.
        """
        width = ids.shape[1]
        if n > 1 and self.share_prefill and width > 1:
            try:
                from transformers import DynamicCache

                cache = DynamicCache()
                pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
                self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                           past_key_values=cache, use_cache=True)
                cache.batch_repeat_interleave(n)
                gen = self.model.generate(input_ids=ids.repeat_interleave(n, 0),
                                          attention_mask=mask.repeat_interleave(n, 0),
                                          past_key_values=cache, **kwargs)
                return gen[:, width:]
            except Exception as e:  # a model whose cache does not support this
                log.warning("shared prefill unavailable (%s: %s); prefilling every sample", type(e).__name__, e)
                self.share_prefill = False
        gen = self.model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                                  **kwargs)
        return gen[:, width:]
