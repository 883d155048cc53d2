"""Throughput figures: FLOPs per token, device peak FLOP/s, model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s / device peak FLOP/s, where the model FLOPs per trained token
are ``6 N + 12 L H T`` (PaLM, appendix B): 6 FLOPs per parameter for the forward and
backward matmuls, plus the attention scores over a context of ``T`` tokens (``L`` layers,
hidden size ``H``).  ``N`` counts the non-embedding parameters (an embedding lookup is not a
matmul; a tied or untied output projection is, and is counted).  Recomputation under
gradient checkpointing is not counted, as usual for MFU.
"""

from __future__ import annotations

import time

# Dense (no sparsity) bf16/fp16 tensor-core peaks, FLOP/s, from the vendors' data sheets.
# Matched against torch.cuda.get_device_name() by substring, most specific first.
GPU_PEAK_BF16: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("A6000", 155e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),  # fp16
    ("T4", 65e12),  # fp16
]


def flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: ``6 N + 12 L H T`` (forward + backward)."""
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_len


def model_flops_per_token(model, seq_len: int) -> float:
    """:func:`flops_per_token` for a transformers model (non-embedding parameters counted,
    frozen ones too: their matmuls still run)."""
    cfg = getattr(model, "config", None)
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and (out is None or out.weight is not emb.weight):
        n -= emb.weight.numel()  # an untied input embedding is a lookup; a tied one is the output matmul
    layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    return flops_per_token(n, layers, hidden, seq_len)


def gpu_peak_flops(name: str) -> float | None:
    """The table's bf16 peak for a device name, or None when unknown."""
    for key, peak in GPU_PEAK_BF16:
        if key.lower() in name.lower():
            return peak
    return None


def precision_dtype(precision: str):
    """The dtype the matmuls of a Lightning ``precision`` run in: bf16 for ``bf16*``, fp16 for
    ``16*``, else fp32."""
    import torch

    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith(("16", "fp16")):
        return torch.float16
    return torch.float32


def measure_matmul_flops(n: int = 1024, repeat: int = 5, dtype=None, device: str = "cpu") -> float:
    """Achieved FLOP/s of an ``n x n`` matmul in ``dtype`` on ``device`` (the best of
    ``repeat``): the practical peak of a CPU, for which no data-sheet figure applies."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def measure_cpu_peak(dtype=None, budget_s: float = 0.25) -> float:
    """The best matmul FLOP/s of this CPU in ``dtype`` over growing sizes (256 .. 2048).

    A small matmul leaves the FMA units idle part of the time (a 135M model's training GEMMs ran
    faster than a 1024^2 one, i.e. "MFU" > 100%), so sizes grow until one product takes about
    ``budget_s``: a dtype without fast arithmetic here (bf16 on a CPU without AVX512-BF16/AMX)
    stops early instead of taking minutes."""
    best = 0.0
    for n in (256, 512, 1024, 2048):
        rate = measure_matmul_flops(n, repeat=3, dtype=dtype)
        best = max(best, rate)
        if 2.0 * n ** 3 / rate > budget_s:
            break
    return best


def device_peak_flops(device, configured: float | None = None, dtype=None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for a torch device and the dtype its matmuls run in
    (``dtype``: a torch dtype or a Lightning precision such as ``bf16-mixed``; default fp32):
    ``configured`` when set, else the GPU table (bf16/fp16 tensor-core peaks), else a matmul
    measured in that dtype (CPUs, GPUs not in the table, fp32 on GPUs).  MFU is only meaningful
    against the peak of the dtype trained in: a bf16 run on a CPU with AVX512-BF16 measured
    against its fp32 peak gave "MFU" > 100%."""
    import torch

    dtype = precision_dtype(dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    short = str(dtype).replace("torch.", "")
    if configured:
        return float(configured), "configured"
    if getattr(device, "type", str(device)) == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak_flops(name) if dtype in (torch.bfloat16, torch.float16) else None
        if peak:
            return peak, f"table:{name}:{short}"
        return measure_matmul_flops(4096, dtype=dtype, device="cuda"), f"measured:{name}:{short}-matmul"
    return measure_cpu_peak(dtype), f"measured:cpu-{short}-matmul"


def mfu(tokens_per_s: float, flops_per_tok: float, peak_flops: float) -> float:
    """Model FLOPs utilisation in [0, 1] (can exceed 1 only if the peak is wrong)."""
    return tokens_per_s * flops_per_tok / peak_flops if peak_flops > 0 else 0.0
