"""The transformers backend: batched, left-padded sampling of n completions per prompt.

Per-step overhead beside the model's forward pass is kept small (measured at batch 20 on
Qwen2.5-0.5B fp32 on 2 CPU cores: top-p sorting 152k logits per row took 0.15 s of a 0.9 s
step, transformers' stop-string check 0.11 s):

- :class:`FastTopP` is transformers' ``TopPLogitsWarper`` computed over the top-k candidates
  (k doubled until the nucleus fits) instead of a sort of the whole vocabulary;
- :class:`TailStopCriteria` is transformers' ``StopStringCriteria`` (a stop string that
  overlaps the newest token) decided on the decoded text of the last few tokens only.

Both keep transformers' semantics, so greedy outputs are unchanged (tests/test_generation.py);
sampled outputs can differ only where a float rounding moves a token across the top-p boundary.

``static_cache`` (``cache_implementation="static"``) is off by default: on CPU it measured
within noise of the dynamic cache (SmolLM2-135M fp32, 8 HumanEval prompts, batch 8, 2 cores:
16.8 vs 15.3-15.9 tokens/s, benchmarks/bench_generation.py --static-cache), and it disables the
shared prefill of the n samples.  ``batch_size="auto"``: on CUDA from the free memory and the KV cache a
sequence needs, on CPU 16 (larger batches stop paying on a few cores).
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from codistill.generation.cache import digest

log = logging.getLogger(__name__)

CPU_AUTO_BATCH = 16


class FastTopP(LogitsProcessor):
    """Nucleus (top-p) filtering, the same mask as transformers' ``TopPLogitsWarper``.

    A token is removed when the probability mass of the tokens ranked at or below it,
    itself included, is <= 1 - ``top_p`` (the top token is always kept).  That mass is
    (mass outside the top k) + (reverse cumulative sum inside the top k); when the k-th
    candidate is itself removed, every token outside the top k is removed too, so only k
    values are sorted.  k starts at ``k`` and doubles until that holds for every row.
    """

    def __init__(self, top_p: float, k: int = 256) -> None:
        self.top_p = float(top_p)
        self.k = int(k)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        logz = torch.logsumexp(scores.float(), dim=-1, keepdim=True)
        k = min(self.k, vocab)
        while True:
            vals, idx = scores.topk(k, dim=-1)  # descending
            probs = (vals.float() - logz).exp()
            rest = (1.0 - probs.sum(-1, keepdim=True)).clamp(min=0.0) if k < vocab else torch.zeros_like(logz)
            below = rest + probs.flip(-1).cumsum(-1).flip(-1)  # mass ranked at or below each candidate
            remove = below <= (1 - self.top_p)
            remove[..., 0] = False  # min_tokens_to_keep = 1
            if k == vocab or bool(remove[..., -1].all()):
                break
            k = min(2 * k, vocab)
        mask = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, idx, remove)
        return scores.masked_fill(mask, -float("inf"))


class TailStopCriteria(StoppingCriteria):
    """Stop a row when one of ``stops`` overlaps its newest token.

    The same rule as transformers' ``StopStringCriteria`` (an occurrence that ends inside the
    newest token; compared on real token sequences in the tests), checked on the text of the last
    ``max(len(stop)) + 2`` tokens: two small ``batch_decode`` calls per step.
    """

    def __init__(self, tokenizer, stops: list[str]) -> None:
        self.tok = tokenizer
        self.stops = [s for s in stops if s]
        self.window = max((len(s) for s in self.stops), default=0) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, -self.window:].tolist()
        kw = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
        texts = self.tok.batch_decode(tail, **kw)
        heads = self.tok.batch_decode([t[:-1] for t in tail], **kw)
        done = [stop_overlaps_end(text, len(head), self.stops) for text, head in zip(texts, heads)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stop_overlaps_end(text: str, start: int, stops: list[str]) -> bool:
    """Whether some stop occurs in ``text`` ending after ``start`` (``text[start:]`` is the
    newest token's text): it ends inside the newest token, wherever it starts."""
    return any(text.find(s, max(0, start - len(s) + 1)) != -1 for s in stops)


def sampling_processors(model, temperature: float, top_p: float) -> LogitsProcessorList:
    """transformers' temperature -> top-k -> top-p warpers, in its order, with FastTopP for top-p.

    top-k is the model's ``generation_config.top_k``, else transformers' default (50), as
    ``generate`` would apply it."""
    from transformers import GenerationConfig, TemperatureLogitsWarper, TopKLogitsWarper

    top_k = getattr(model.generation_config, "top_k", None)
    if top_k is None:
        top_k = GenerationConfig._get_default_generation_params().get("top_k")
    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    procs.append(FastTopP(top_p))
    return procs


def auto_batch_size(model, seq_len: int, *, fraction: float = 0.6, cap: int = 512) -> int:
    """Sequences per batch: on CUDA ``fraction`` of the free memory over the KV cache (and the
    last-position logits) one sequence of ``seq_len`` tokens needs; on CPU :data:`CPU_AUTO_BATCH`."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_AUTO_BATCH
    c = model.config
    c = getattr(c, "text_config", None) or c
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    elem = next(model.parameters()).element_size()
    per_seq = 2 * c.num_hidden_layers * kv_heads * head_dim * elem * seq_len + 2 * 4 * c.vocab_size
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(fraction * free // per_seq)))


class HFBackend:
    """``generate(prompts, sampling, seed)`` on a loaded transformers model.

    Prompts are sorted by length (less padding) and run ``batch_size // n`` at a time with
    all their ``n`` samples, the prompt prefilled once per batch.  ``on_batch`` is called
    with the prompts of each finished batch, so the caller can persist them (kill-and-resume).
    """

    in_process = True  # samples the model loaded in this process (RunContext.load)

    @classmethod
    def from_config(cls, gcfg, mcfg, *, cache_dir, model=None, tokenizer=None,
                    desc: str = "generate") -> "HFBackend":
        if model is None or tokenizer is None:
            raise ValueError("generation=hf needs the loaded model and tokenizer")
        return cls(model, tokenizer, batch_size=gcfg.batch_size, static_cache=gcfg.static_cache, desc=desc)

    @classmethod
    def identity(cls, gcfg, mcfg, model_identity: str, model=None) -> str:
        """``<model>|hf:...``: the loaded model's dtype, device and quantization, the batch size and
        the static-cache switch (:func:`codistill.generation.hf_numerics`)."""
        from codistill.generation import fields_key, hf_numerics

        if model is None:
            raise ValueError("the hf generation-cache identity needs the loaded model (its dtype and device)")
        return f"{model_identity}|hf:{fields_key(hf_numerics(model, gcfg))}"

    def __init__(self, model, tokenizer, *, batch_size: int | str = 16, desc: str = "generate",
                 share_prefill: bool = True, static_cache: bool = False, fast_sampling: bool = True) -> None:
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size  # an int, or "auto" (see auto_batch_size)
        self.static_cache = static_cache
        self.fast_sampling = fast_sampling  # FastTopP and TailStopCriteria instead of transformers' own
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
        batch_size = self.batch_size
        if batch_size == "auto":
            batch_size = auto_batch_size(self.model, max(lengths, default=0) + sampling.max_new_tokens)
            log.info("generation.batch_size=auto: %d sequences per batch", batch_size)
        per_batch = max(1, int(batch_size) // n)
        device = next(self.model.parameters()).device
        greedy = sampling.temperature == 0
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if self.fast_sampling and sampling.top_p < 1.0:
                # transformers applies custom processors before its own warpers, so the warpers
                # that come before top-p (temperature, top-k) move into the list with FastTopP
                kwargs.update(temperature=1.0, top_k=0, top_p=1.0,
                              logits_processor=sampling_processors(self.model, sampling.temperature, sampling.top_p))
        if sampling.stop:
            if self.fast_sampling:
                kwargs.update(stopping_criteria=StoppingCriteriaList([TailStopCriteria(self.tok, list(sampling.stop))]))
            else:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tok)
        if self.static_cache:
            kwargs.update(cache_implementation="static")
        out: list[list[str]] = [[] for _ in prompts]
        tokens = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(prompts) * n, desc=self.desc, unit="sample", leave=False, dynamic_ncols=True)
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            batch = [prompts[i] for i in idx]
            enc = self.tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(batch_seed(seed, batch))
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
        if n > 1 and self.share_prefill and width > 1 and not self.static_cache:
            try:
                from transformers import DynamicCache

                cache = DynamicCache()
                pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
                kw = {_cache_kwarg(self.model): cache}
                self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                           use_cache=True, **kw)
                cache.batch_repeat_interleave(n)
                gen = self.model.generate(input_ids=ids.repeat_interleave(n, 0),
                                          attention_mask=mask.repeat_interleave(n, 0), **kw, **kwargs)
                return gen[:, width:]
            except Exception as e:  # a model whose cache does not support this
                log.warning("shared prefill unavailable (%s: %s); prefilling every sample", type(e).__name__, e)
                self.share_prefill = False
        gen = self.model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                                  **kwargs)
        return gen[:, width:]


def batch_seed(seed: int, prompts: list[str]) -> int:
    """The RNG seed of one generation batch: a function of the run's seed and the batch's prompts,
    not of the batch's position.  A pass resumed from the generation cache (which stores whole
    batches) forms the same later batches and so draws the same samples as an uninterrupted one."""
    return int(digest({"seed": seed, "prompts": prompts})[:15], 16)


def _cache_kwarg(model) -> str:
    """The name a model takes its KV cache under: transformers 5.x renamed ``past_key_values``
    to ``cache`` (the old name warns on every call); older versions know only the old one."""
    try:
        return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    except (TypeError, ValueError):
        return "past_key_values"


Backend = HFBackend  # generation.backend: hf
