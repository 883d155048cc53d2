"""Random-weight models of real architectures, and the two ceilings a benchmark is compared with.

Real weights do not travel to a GPU machine (64 MiB per call); a model with the architecture of
Qwen2.5-Coder-0.5B and random weights does the same arithmetic and moves the same bytes, so its
speed is the real model's.  ``benchmarks/configs/<name>.json`` holds each architecture's
config.json (see each file's ``_source``).  A benchmark names one as ``random:<name>``.

The tokenizer is codistill's tiny byte-level BPE (1,536 ids, inside every vocabulary here): token
ids, not text, are what the speed depends on.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
PREFIX = "random:"


def arch_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.json"))


def is_random(spec: str) -> bool:
    return spec.startswith(PREFIX)


def arch_config(name: str, *, max_position_embeddings: int | None = None):
    """The transformers config of ``benchmarks/configs/<name>.json`` (``name`` with or without
    ``random:``); raises ValueError naming the choices for an unknown name."""
    name = name[len(PREFIX):] if is_random(name) else name
    path = CONFIGS / f"{name}.json"
    if not path.exists():
        raise ValueError(f"unknown architecture {name!r}: one of {arch_names()} (benchmarks/configs/)")
    from transformers import AutoConfig

    raw = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_") and k != "architectures"}
    if max_position_embeddings:
        raw["max_position_embeddings"] = max_position_embeddings
    return AutoConfig.for_model(raw.pop("model_type"), **raw)


def random_model(name: str, *, dtype=None, device: str = "cpu", seed: int = 0):
    """A model of that architecture with random weights (``seed``), in ``dtype`` on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = arch_config(name)
    torch.manual_seed(seed)
    dtype = dtype or torch.float32
    with torch.device(device):  # initialised where it runs: 1.8B random weights take seconds on a CPU
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
    return model.to(device)


def tokenizer():
    """codistill's tiny tokenizer, with a pad token (ids < 1536: valid for every architecture here)."""
    from codistill.models.tiny import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


def measure_bandwidth(device: str = "cpu", mib: int = 1024, repeat: int = 5) -> float:
    """Memory bandwidth in bytes/s: the best of ``repeat`` copies of ``mib`` MiB, counting bytes
    read plus bytes written (the device notes' way of measuring the ceiling)."""
    import torch

    n = mib * 2 ** 20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2.0 * n * 4 / best


def decode_bytes_per_step(model, batch: int, context: int) -> int:
    """Bytes one decoding step must read at least: every weight once (an embedding row per
    sequence, not the whole table, when input and output matrices are untied) plus the KV cache
    of ``batch`` sequences of ``context`` tokens."""
    c = getattr(model.config, "text_config", None) or model.config
    elem = next(model.parameters()).element_size()
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight is not emb:
        n -= emb.numel() - batch * emb.shape[1]
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    kv = 2 * c.num_hidden_layers * kv_heads * head_dim * elem * batch * context
    return n * elem + kv


def decode_bound(model, batch: int, prompt_len: float, new_tokens: int, bandwidth: float) -> float:
    """The memory-bandwidth bound on generated tokens/s for ``batch`` sequences decoding
    ``new_tokens`` after prompts of ``prompt_len`` tokens: each step reads
    :func:`decode_bytes_per_step` at the mean context and yields ``batch`` tokens."""
    mean_context = int(prompt_len + new_tokens / 2)
    return batch * bandwidth / decode_bytes_per_step(model, batch, mean_context)
