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

    Prompts are expanded ``n`` times, sorted by length (less padding), and run in batches
    of ``batch_size``.  ``on_batch`` is called as soon as every sample of a prompt is done,
    so the caller can persist finished prompts (kill-and-resume).
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 16, desc: str = "generate") -> None:
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size
        self.desc = desc
        self._end_ids = {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None}
        self.last_tokens = 0
        self.last_tokens_per_s = 0.0

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling, seed: int,
                 on_batch: Callable[[list[tuple[str, list[str]]]], None] | None = None) -> list[list[str]]:
        n = sampling.n
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
        lengths = [len(self.tok(p, add_special_tokens=False).input_ids) for p in prompts]
        jobs.sort(key=lambda ij: (-lengths[ij[0]], ij[0], ij[1]))  # longest first: fail fast on memory
        out: list[list[str | None]] = [[None] * n for _ in prompts]
        remaining = [n] * len(prompts)
        self.tok.padding_side = "left"
        device = next(self.model.parameters()).device
        greedy = sampling.temperature == 0
        tokens = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(jobs), desc=self.desc, unit="sample", leave=False, dynamic_ncols=True)
        for b, start in enumerate(range(0, len(jobs), self.batch_size)):
            batch = jobs[start:start + self.batch_size]
            enc = self.tok([prompts[i] for i, _ in batch], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(device)
            torch.manual_seed(seed * 1_000_003 + b)
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                          pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
            if not greedy:
                kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tok)
            gen = self.model.generate(**enc, **kwargs)
            new = gen[:, enc.input_ids.shape[1]:]
            finished = []
            for row, (i, j) in enumerate(batch):
                ids = new[row].tolist()
                length = next((t for t, tid in enumerate(ids) if tid in self._end_ids), len(ids))
                text = self.tok.decode(ids[:length], skip_special_tokens=True)
                tokens += length
                out[i][j] = text
                remaining[i] -= 1
                if remaining[i] == 0:
                    finished.append((prompts[i], list(out[i])))
            if on_batch and finished:
                on_batch(finished)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
        bar.close()
        self.last_tokens_per_s = tokens / max(time.perf_counter() - t0, 1e-9)
        self.last_tokens = tokens
        return [list(c) for c in out]  # type: ignore[arg-type]
