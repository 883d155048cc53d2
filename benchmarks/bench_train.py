#!/usr/bin/env python
"""Student training throughput: codistill vs TRL's SFTTrainer vs a bare PyTorch loop.

    .venv/bin/python benchmarks/bench_train.py                 # SmolLM2-135M (packaged), 12 steps
    .venv/bin/python benchmarks/bench_train.py --ci            # a few steps, for CI
    .venv/bin/python benchmarks/bench_train.py --model random:qwen2.5-0.5b --steps 30   # on a GPU

All three train the same weights on the same (prompt, completion) pairs at the same sequence
length (256), batch (8 rows) and precision (``auto``: bf16-mixed on CUDA, else what
``codistill.training.resolve_precision`` picks for this CPU), with AdamW at lr 1e-4:

1. codistill: ``codistill.training.train_student`` (Lightning) with ``train.packing=true``
   (and its defaults: grad clipping 1.0, warmup/decay schedule), no loggers or checkpoints.
2. TRL ``SFTTrainer`` with its defaults (prompt-completion data, no packing, padded batches).
3. A bare loop: the very rows codistill trains on (packed), forward, backward, AdamW step,
   nothing else: the ceiling for this model on this machine.

Figure: real (non-padding) tokens trained per second over the steps after ``--warmup``,
from the end of the last warm-up step to the end of the last step (data loading included).
Targets (issue 5): codistill >= 1.5x TRL and >= 0.95x the bare loop.  Also printed: MFU of
each (6N + attention FLOPs per token, device peak from codistill.training.speed).
``--model random:<arch>`` uses random weights of that architecture (no packages needed).
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time

import torch

ARCHS = {  # same architecture as the released models; random weights
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, model_type="llama"),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, model_type="qwen2"),
}


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Code-like (prompt, completion) pairs of mixed length (about 30 to 250 tokens)."""
    rng = random.Random(seed)
    words = ["total", "count", "value", "items", "result", "index", "price", "apples", "pens", "boxes"]
    pairs = []
    for i in range(n):
        a, b = rng.sample(words, 2)
        prompt = f"Question: {a} is {rng.randint(2, 99)} and {b} is {rng.randint(2, 99)}. Write a program.\n"
        lines = [f"    {rng.choice(words)}_{k} = {rng.choice(words)} * {rng.randint(1, 9)} + {k}"
                 for k in range(rng.randint(1, 22))]
        pairs.append({"prompt": prompt, "completion": "def solution():\n" + "\n".join(lines)
                      + f"\n    return {a} + {b}\n"})
    return pairs


def load(model_name: str, cache_dir: str):
    """(model factory, tokenizer, label)."""
    from codistill.models import load_model, load_tokenizer
    from codistill.models.tiny import load_tiny_tokenizer

    if model_name.startswith("random:"):
        from transformers import AutoConfig, AutoModelForCausalLM

        spec = dict(ARCHS[model_name.split(":", 1)[1]])
        cfg = AutoConfig.for_model(spec.pop("model_type"), max_position_embeddings=2048, **spec)
        tok = load_tiny_tokenizer()
        tok.pad_token = tok.pad_token or tok.eos_token

        def factory():
            torch.manual_seed(0)
            return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)

        return factory, tok, f"{model_name} (random weights)"
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from codistill.config import register_configs, validate
    from codistill.run import CONF_DIR

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        rc = validate(compose("config", overrides=[f"student={model_name}", f"cache_dir='{cache_dir}'"]))
    tok = load_tokenizer(rc.student, rc.cache_dir)
    return (lambda: load_model(rc.student, rc.cache_dir, for_training=True)), tok, model_name


def steady_rate(marks: list[tuple[float, int]], warmup: int) -> float:
    """Tokens/s from per-step (end time, tokens of that step) marks, after ``warmup`` steps."""
    if len(marks) <= warmup:
        return 0.0
    t_start = marks[warmup - 1][0] if warmup > 0 else marks[0][0]
    steps = marks[warmup:] if warmup > 0 else marks[1:]
    dt = marks[-1][0] - t_start
    return sum(t for _, t in steps) / dt if dt > 0 else 0.0


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- codistill
def run_codistill(factory, tok, pairs, args, precision, device):
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from codistill.config import register_configs, validate
    from codistill.run import CONF_DIR
    from codistill.training import train_student

    marks: list[tuple[float, int]] = []

    class Timer(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            sync()
            marks.append((time.perf_counter(), int(batch["attention_mask"].sum())))

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        rc = validate(compose("config", overrides=[
            "student=tiny", "trainer=gpu" if device == "cuda" else "trainer=cpu", f"trainer.precision={precision}",
            f"trainer.max_steps={args.steps}", "trainer.enable_progress_bar=false",
            f"trainer.log_every_n_steps={max(args.steps, 1)}", "train.packing=true",
            f"train.batch_size={args.batch}", f"train.max_seq_len={args.seq}", "train.epochs=1000",
            "train.checkpoint_every_n_epochs=0", "train.lr=1e-4", f"train.compile={str(args.compile).lower()}"]))
    model = factory()
    with tempfile.TemporaryDirectory() as d:
        m = train_student(model, tok, pairs, rc, __import__("pathlib").Path(d), [], callbacks=[Timer()])
    return steady_rate(marks, args.warmup), model, m


# --------------------------------------------------------------------------- bare loop
def run_bare(factory, tok, pairs, args, precision, device):
    from codistill.training.data import PairDataModule

    dm = PairDataModule(pairs, tok, batch_size=args.batch, max_len=args.seq, mask_prompt=False, packing=True)
    loader = dm.train_dataloader()
    model = factory().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    half = precision.startswith("bf16")
    marks: list[tuple[float, int]] = []
    it = iter(loader)
    for _ in range(args.steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=half):
            loss = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                         use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        marks.append((time.perf_counter(), int(batch["attention_mask"].sum())))
    return steady_rate(marks, args.warmup), model


# --------------------------------------------------------------------------- TRL
def run_trl(factory, tok, pairs, args, precision, device):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    marks: list[tuple[float, int]] = []

    class Timer(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            sync()
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    with tempfile.TemporaryDirectory() as d:
        cfg = SFTConfig(output_dir=d, per_device_train_batch_size=args.batch, max_length=args.seq,
                        max_steps=args.steps, learning_rate=1e-4, logging_strategy="no", save_strategy="no",
                        report_to=[], bf16=precision.startswith("bf16"), use_cpu=device != "cuda",
                        dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
                        disable_tqdm=True, seed=0)
        model = factory()
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                             callbacks=[Timer()])
        trainer.train()
    # num_input_tokens_seen is cumulative: per-step tokens are its differences
    per_step = [(t, n - (marks[i - 1][1] if i else 0)) for i, (t, n) in enumerate(marks)]
    return steady_rate(per_step, args.warmup), model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="a student config name, or random:smollm2-135m / random:qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true", help="train.compile=true for codistill")
    ap.add_argument("--only", default="codistill,trl,bare")
    ap.add_argument("--ci", action="store_true", help="a few steps only (CI-sized)")
    ap.add_argument("--cache-dir", default=os.environ.get("CODISTILL_CACHE", "~/.cache/codistill"))
    args = ap.parse_args()
    if args.ci:
        args.steps, args.warmup = 4, 1
    from codistill.training import resolve_precision
    from codistill.training.speed import device_peak_flops, mfu, model_flops_per_token

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(args.precision, "gpu" if device == "cuda" else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    factory, tok, label = load(args.model, args.cache_dir)
    pairs = make_pairs(max(64, args.batch * args.steps * 3))
    probe = factory()
    fpt = model_flops_per_token(probe, args.seq)
    n_params = sum(p.numel() for p in probe.parameters())
    del probe
    peak, peak_src = device_peak_flops(torch.device(device))
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU x{os.cpu_count()}"
    print(f"model {label} ({n_params / 1e6:.0f}M params), {name}, precision {precision}, seq {args.seq}, "
          f"batch {args.batch}, {args.steps} steps ({args.warmup} warm-up), load average {load_avg:.1f}")
    print(f"device peak {peak / 1e12:.2f} TFLOP/s ({peak_src}); {fpt / 1e9:.2f} GFLOP per token")
    figures = {}
    for which in args.only.split(","):
        fn = {"codistill": run_codistill, "trl": run_trl, "bare": run_bare}[which]
        t0 = time.perf_counter()
        out = fn(factory, tok, pairs, args, precision, device)
        figures[which] = out[0]
        print(f"  {which:<10} {out[0]:10.1f} tokens/s   MFU {mfu(out[0], fpt, peak):6.1%}   "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        del out
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    c = figures.get("codistill")
    if c and figures.get("trl"):
        r = c / figures["trl"]
        print(f"codistill / TRL SFTTrainer: {r:.2f}x (target >= 1.5x: {'met' if r >= 1.5 else 'NOT met'})")
    if c and figures.get("bare"):
        r = c / figures["bare"]
        print(f"codistill / bare loop:      {r:.2f}x (target >= 0.95x: {'met' if r >= 0.95 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
