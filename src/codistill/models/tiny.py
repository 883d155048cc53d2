"""``source: tiny``: a small random Llama model over the byte-level BPE tokenizer codistill ships.

The tokenizer lives in ``codistill/assets/tiny_tokenizer`` and is (re)made by
``scripts/make_tiny_tokenizer.py``.  The model is built from ``cfg.tiny`` with weights drawn
under ``torch.manual_seed(cfg.tiny.init_seed)`` inside a forked RNG, so two loads are
identical and the caller's global RNG state is left untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def tiny_tokenizer_dir() -> Path:
    """The directory of the shipped tiny tokenizer (found via ``importlib.resources``)."""
    path = Path(str(resources.files("codistill") / "assets" / "tiny_tokenizer"))
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"the tiny tokenizer is missing from {path}; "
                                f"regenerate it with `python scripts/make_tiny_tokenizer.py`")
    return path


@lru_cache(maxsize=None)
def _tokenizer_hash(path: str) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        h.update(name.encode())
        h.update((Path(path) / name).read_bytes())
    return h.hexdigest()


def tokenizer_hash() -> str:
    return _tokenizer_hash(str(tiny_tokenizer_dir()))


def tiny_params(tiny: Any) -> dict:
    """``cfg.tiny`` as a plain dict (a dataclass or an OmegaConf node)."""
    if dataclasses.is_dataclass(tiny):
        return dataclasses.asdict(tiny)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(tiny, resolve=True) if OmegaConf.is_config(tiny) else dict(tiny)


def tiny_identity(tiny: Any) -> str:
    blob = json.dumps({"tiny": tiny_params(tiny), "tokenizer": tokenizer_hash(), "arch": "llama"},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir()))


def build_tiny_model(tiny: Any, tokenizer, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    p = tiny_params(tiny)
    if p["hidden_size"] % p["num_heads"]:
        raise ValueError(f"tiny.hidden_size ({p['hidden_size']}) must be divisible by "
                         f"tiny.num_heads ({p['num_heads']})")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p["hidden_size"],
        intermediate_size=p["intermediate_size"],
        num_hidden_layers=p["num_layers"],
        num_attention_heads=p["num_heads"],
        num_key_value_heads=p["num_heads"],
        max_position_embeddings=p["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p["init_seed"])
        model = LlamaForCausalLM(config)
    model.to(dtype)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                         tokenizer.pad_token_id)
    return model
