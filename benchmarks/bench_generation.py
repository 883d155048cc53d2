#!/usr/bin/env python
"""Generation tokens/s: codistill's hf backend vs plain ``model.generate`` loops (and vLLM where installed).

    .venv/bin/python benchmarks/bench_generation.py [--model smollm2-135m-instruct] [--prompts 16]
        [--max-new-tokens 48] [--batch 16] [--n 1] [--static-cache]

Same model, prompts (HumanEval prompts as plain code to continue), sampling
(temperature 0.8, top-p 0.95, the task's stop strings) and max_new_tokens for every contender:

1. a plain loop: ``model.generate`` one prompt at a time (batch 1), transformers' own top-p and
   stop strings -- what a researcher writes first;
2. a plain batched loop: ``model.generate`` on ``--batch`` left-padded prompts at a time;
3. codistill's ``HFBackend`` at ``--batch`` (length-sorted batches, shared prefill of the n
   samples, FastTopP, TailStopCriteria);
4. vLLM on the same checkpoint, when vllm is importable (GPU machines).

Tokens are the generated tokens up to (not counting) eos/padding.  Prints tokens/s and the ratio of
each to the batch-1 loop (target: the hf backend >= 3x), with the machine's load average: on a
shared machine the absolute figures move, the ratios much less.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch


def load(name: str):
    """(config, model, tokenizer, cache dir); ``random:<arch>``: random weights of an architecture in
    benchmarks/configs/ (bf16 on CUDA, fp32 on CPU), the tiny tokenizer, no config or cache."""
    if name.startswith("random:"):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import archs

        cuda = torch.cuda.is_available()
        model = archs.random_model(name, dtype=torch.bfloat16 if cuda else torch.float32,
                                   device="cuda" if cuda else "cpu").eval()
        return None, model, archs.tokenizer(), None
    from omegaconf import OmegaConf

    from codistill.config import ModelConfig
    from codistill.models import default_cache_dir, load_model, load_tokenizer

    conf = Path(__file__).resolve().parents[1] / "src" / "codistill" / "conf" / "model" / f"{name}.yaml"
    raw = OmegaConf.load(conf)
    raw.pop("defaults", None)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), raw))
    cache = default_cache_dir()
    return cfg, load_model(cfg, cache), load_tokenizer(cfg, cache), cache


def prompts_for(tok, count: int, chat: bool) -> tuple[list[str], list[str]]:
    from codistill.config import TaskConfig
    from codistill.datasets.humaneval import read_humaneval
    from codistill.tasks import build_task

    task = build_task("humaneval", TaskConfig())
    problems = read_humaneval()[:count]
    # the stops that end a function (the task's "\n#", '\n"""' and "\nassert " often end a small
    # model's completion after a few tokens, which leaves little but the prefill to measure)
    stops = [s for s in task.stop if s in ("\ndef ", "\nclass ", "\nif __name__", "\nprint(")]
    return [task.render(p, tok, chat=chat, shots=0).text for p in problems], stops


def count_new(rows: torch.Tensor, end_ids: set[int]) -> int:
    total = 0
    for ids in rows.tolist():
        total += next((i for i, t in enumerate(ids) if t in end_ids), len(ids))
    return total


def plain_loop(model, tok, prompts, sampling, batch: int, seed: int, fixed: bool = False) -> tuple[int, float]:
    """``model.generate`` on ``batch`` prompts at a time, transformers' own top-p and stop strings
    (``fixed``: every sequence generates ``max_new_tokens``)."""
    end = {t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None}
    tok.padding_side = "left"
    kwargs = dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                  max_new_tokens=sampling.max_new_tokens, num_return_sequences=sampling.n,
                  pad_token_id=tok.pad_token_id)
    if sampling.stop:
        kwargs.update(stop_strings=sampling.stop, tokenizer=tok)
    if fixed:
        kwargs.update(min_new_tokens=sampling.max_new_tokens)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    tokens = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(**enc, **kwargs)
            tokens += count_new(out[:, enc.input_ids.shape[1]:], end)
    tok.padding_side = "right"
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - t0


def ours(model, tok, prompts, sampling, batch: int, seed: int, static_cache: bool) -> tuple[int, float]:
    from codistill.generation.hf import HFBackend

    b = HFBackend(model, tok, batch_size=batch, static_cache=static_cache, desc="hf backend")
    t0 = time.perf_counter()
    b.generate(prompts, sampling, seed)
    return b.last_tokens, time.perf_counter() - t0


def vllm_run(cfg, cache, prompts, sampling, seed: int) -> tuple[int, float]:
    from codistill.config import VLLMConfig
    from codistill.generation.vllm import VLLMBackend
    from codistill.models import resolve_checkpoint

    b = VLLMBackend(resolve_checkpoint(cfg, cache), VLLMConfig(), max_context=cfg.max_context)
    b.generate(prompts[:2], sampling, seed)  # warm-up (CUDA graphs)
    t0 = time.perf_counter()
    b.generate(prompts, sampling, seed)
    return b.last_tokens, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="a conf/model/<name>.yaml, or random:<benchmarks/configs/NAME.json>")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch", default="16",
                    help="sequences per batch for the batched contenders (default: generation.batch_size's default), "
                         "or auto (the hf backend's choice from free memory; the plain loop gets the same number)")
    ap.add_argument("--fixed-length", action="store_true",
                    help="no stop strings; the plain loop generates exactly --max-new-tokens (random weights end "
                         "early only by drawing eos)")
    ap.add_argument("--json", default=None, help="also write the figures (and the bandwidth bound) to this JSON file")
    ap.add_argument("--n", type=int, default=1, help="samples per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--static-cache", action="store_true", help="the hf backend with a static KV cache")
    ap.add_argument("--skip-batch1", action="store_true", help="skip the (slow) batch-1 loop")
    args = ap.parse_args(argv)

    from codistill.config import SamplingConfig

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg, model, tok, cache = load(args.model)
    # completion-style prompts (the function to continue): a chat model's answer opens with ```,
    # a stop string, so chat prompts would measure little but the prefill
    prompts, stops = prompts_for(tok, args.prompts, chat=False)
    if args.fixed_length:
        stops = []
    from codistill.generation.hf import auto_batch_size

    prompt_lens = [len(tok(p, add_special_tokens=False).input_ids) for p in prompts]
    batch = (auto_batch_size(model, max(prompt_lens) + args.max_new_tokens) if args.batch == "auto"
             else int(args.batch))
    backend_batch = "auto" if args.batch == "auto" else batch
    sampling = SamplingConfig(n=args.n, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, stop=stops)
    device = next(model.parameters()).device
    print(f"model {args.model} ({next(model.parameters()).dtype}, {device}), {len(prompts)} HumanEval prompts, "
          f"n={args.n}, max_new_tokens={args.max_new_tokens}, temperature 0.8, top-p 0.95, stops {stops!r}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ours(model, tok, prompts[:1], SamplingConfig(n=1, max_new_tokens=4), 1, 0, False)  # warm-up

    rows: list[tuple[str, int, float]] = []
    if not args.skip_batch1:
        rows.append(("plain model.generate loop, batch 1", *plain_loop(model, tok, prompts, sampling, 1, args.seed)))
    per = max(1, batch // args.n)
    rows.append((f"plain model.generate loop, batch {per * args.n}",
                 *plain_loop(model, tok, prompts, sampling, per, args.seed, args.fixed_length)))
    rows.append((f"codistill hf backend, batch {args.batch}" + (f" ({batch})" if args.batch == "auto" else "")
                 + (" (static cache)" if args.static_cache else ""),
                 *ours(model, tok, prompts, sampling, backend_batch, args.seed, args.static_cache)))
    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() and cfg is not None:
        rows.append(("vLLM", *vllm_run(cfg, cache, prompts, sampling, args.seed)))
    else:
        print("vLLM: not installed here (or no CUDA): skipped")

    base = rows[0][1] / rows[0][2] if rows[0][2] > 0 else 0.0
    print(f"\n{'contender':48s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>8s} {'vs ' + rows[0][0][:24]:>30s}")
    for name, tokens, secs in rows:
        rate = tokens / secs if secs > 0 else 0.0
        print(f"{name:48s} {tokens:7d} {secs:8.1f} {rate:8.1f} {rate / base if base else 0:29.2f}x")
    hf = next(r for r in rows if r[0].startswith("codistill"))
    if not args.skip_batch1:
        ratio = (hf[1] / hf[2]) / base if base else 0.0
        print(f"\nhf backend vs the batch-1 loop: {ratio:.2f}x (target >= 3x): {'MET' if ratio >= 3 else 'NOT MET'}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import archs

    bw = archs.measure_bandwidth(device.type, mib=1024 if device.type == "cuda" else 256)
    bound = archs.decode_bound(model, min(batch, len(prompts) * args.n), sum(prompt_lens) / len(prompt_lens),
                               args.max_new_tokens, bw)
    print(f"memory-bandwidth bound at batch {batch}: {bound:.0f} tokens/s ({bw / 1e12:.2f} TB/s measured, "
          f"weights + KV cache read once per step); hf backend at {hf[1] / hf[2] / bound:.1%} of it")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       "dtype": str(next(model.parameters()).dtype), "prompts": len(prompts), "n": args.n,
                       "max_new_tokens": args.max_new_tokens, "batch": args.batch, "batch_resolved": batch,
                       "fixed_length": args.fixed_length, "prompt_tokens_mean": sum(prompt_lens) / len(prompt_lens),
                       "rows": [{"name": n, "tokens": t, "seconds": s, "tokens_per_s": t / s if s else 0.0}
                                for n, t, s in rows],
                       "bandwidth_bytes_per_s": bw, "bound_tokens_per_s": bound,
                       "hf_fraction_of_bound": hf[1] / hf[2] / bound}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
