#!/usr/bin/env python
"""On-policy distillation step vs an SFT step and a cached-KD step, same student / data / length / batch.

    .venv/bin/python benchmarks/bench_onpolicy.py [--student smollm2-135m-instruct] [--teacher SAME]
        [--batch 4] [--seq-len 256] [--new-tokens 128] [--steps 4] [--warmup 1] [--top-k 64]
        [--rollout-every N]

All three are the real code path: a Lightning Trainer (``codistill.training.build_trainer``, the
run's precision) fitting ``StudentLM`` (SFT), ``KDStudentLM`` with the teacher's top-k log-probs
streamed from the on-disk cache (``method=kd_cached``), and ``OnPolicyStudentLM`` with
``lmbda=1`` (every step on-policy; ``method=on_policy``).  Data: HumanEval problems, the
student's zero-shot prompt + the canonical solution, truncated to ``--seq-len``; the on-policy
step samples ``--new-tokens`` tokens per prompt of the batch from the student's current weights
(temperature 1; exactly that many, so its rows are as long as the SFT rows: prompt left-truncated
to ``--seq-len - --new-tokens`` + the sample; ``--natural-length``: up to that many, ending at eos
or the task's stop strings, as in training), runs them against the problem's tests in the
sandbox (``feedback=failed_only``, so the verdicts are used), and lets the teacher score them.
A callback times every optimizer step; the first ``--warmup`` steps are dropped and the medians
of the rest are reported, and the on-policy steps' mean split into rollout (sampling), judge
(sandbox), teacher scoring (its forward) and update (the rest of the step: student forward +
backward + optimizer), each step's update being its time less its other parts.  With only
SmolLM2 packaged, SmolLM2 is its own teacher (cached KD's step time does not depend on the
teacher; the on-policy teacher forward costs what this teacher costs).
``--rollout-every N`` adds on-policy in rounds (``method.rollout_every=N``: one sampling call of
N x batch rows per N steps); its row reports the *mean* step time over whole rounds (the first
step of a round carries the sampling, the others none), beside per-step on-policy's mean.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_kd import StepTimer as KDStepTimer  # benchmarks/ is on sys.path: scripts run from it
from bench_kd import teacher_card

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("rollout", "judge", "teacher")


class StepTimer(KDStepTimer):
    """Whole-step times, and the on-policy module's split of each step (``last_times``)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[dict] = []
        self.rollout_tokens: list[int] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)
        parts = {p: getattr(module, "last_times", {}).get(p, 0.0) for p in PARTS}
        parts["update"] = max(self.times[-1] - sum(parts.values()), 0.0)  # student forward + backward + step
        self.parts.append(parts)
        self.rollout_tokens += list(getattr(module, "last_rollout_tokens", []))


def compose(args):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from codistill.config import register_configs, validate

    register_configs()
    with initialize_config_dir(str(ROOT / "src" / "codistill" / "conf"), version_base="1.3"):
        cfg = _compose("config", overrides=[
            f"model@student={args.student}", f"model@teacher={teacher_card(args.teacher or args.student)}", "method=on_policy",
            "dataset=humaneval", "dataset.test_size=0",
            f"dataset.train_size={args.batch * (args.warmup + args.steps)}",
            f"train.batch_size={args.batch}", f"train.max_seq_len={args.seq_len}", "train.checkpoint_every_n_epochs=0",
            "train.warmup_steps=0", f"trainer.max_steps={args.warmup + args.steps}",
            "trainer.enable_progress_bar=false", "logger=csv"])
    return validate(cfg)


def time_fit(name: str, module, dm, rc, run_dir: Path, warmup: int) -> StepTimer:
    from codistill.training import build_trainer

    trainer = build_trainer(rc, run_dir, [], max_epochs=1000)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=dm)
    print(f"[{name}] step times (s): {' '.join(f'{t:.2f}' for t in timer.times)}; "
          f"median after warmup {statistics.median(timer.times[warmup:]):.3f}", flush=True)
    return timer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="smollm2-135m-instruct")
    ap.add_argument("--teacher", default=None, help="a teacher of the same tokenizer (default: the student)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128, help="on-policy rollout length (at most)")
    ap.add_argument("--natural-length", action="store_true",
                    help="rollouts end at eos / the task's stop strings (default: exactly --new-tokens, so the "
                         "on-policy rows are as long as the SFT rows)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--rollout-every", type=int, default=1,
                    help="also time on-policy in rounds of N steps (one sampling call of N x batch rows)")
    args = ap.parse_args()

    from codistill.datasets import load_problems
    from codistill.models import load_model, load_tokenizer, model_identity
    from codistill.tasks import build_task
    from codistill.training import PairDataModule, StudentLM
    from codistill.training.kd import KDSpec, kd_modules, precompute_topk
    from codistill.training.on_policy import OnPolicySpec
    from codistill.training.vocab import shared_vocab_size

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)))
    rc = compose(args)
    cache = os.path.expanduser(rc.cache_dir)
    tok = load_tokenizer(rc.student, cache)
    vocab = shared_vocab_size(load_tokenizer(rc.teacher, cache), tok, teacher_name=rc.teacher.name,
                              student_name=rc.student.name)
    task = build_task("humaneval", rc.task)
    problems, _ = load_problems(rc.dataset)
    rendered = [task.render(p, tok, chat=rc.student.chat, shots=0) for p in problems]
    examples = [{"prompt": r.text, "completion": p.meta["canonical_solution"], "problem": i}
                for i, (p, r) in enumerate(zip(problems, rendered))]

    def datamodule():
        return PairDataModule(examples, tok, batch_size=args.batch, max_len=args.seq_len, mask_prompt=True, seed=0)

    dm = datamodule()
    n_tok = dm.n_tokens / len(dm.items)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"student {rc.student.name}, teacher {rc.teacher.name}, batch {args.batch}, seq len <= {args.seq_len} "
          f"(SFT/KD rows: mean {n_tok:.0f} tokens), rollouts <= {args.new_tokens} new tokens, {args.steps} timed "
          f"steps after {args.warmup}, {device}, torch threads {torch.get_num_threads()}", flush=True)

    teacher = load_model(rc.teacher, cache).to(device)
    results: dict[str, StepTimer] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, _ = precompute_topk(teacher, dm.items, root=tmp, teacher_id=model_identity(rc.teacher), k=args.top_k,
                                   temperature=1.0, vocab_size=vocab, batch_size=args.batch)
        pre_s = time.perf_counter() - t0
        student = load_model(rc.student, cache, for_training=True)
        results["SFT"] = time_fit("SFT", StudentLM(student, lr=1e-5, weight_decay=0.0, warmup_steps=0), datamodule(),
                                  rc, Path(tmp) / "sft", args.warmup)
        student = load_model(rc.student, cache, for_training=True)
        dm_kd, module = kd_modules(student, datamodule(), rc, KDSpec(vocab_size=vocab, topk_dir=str(store)))
        results["KD cached"] = time_fit("KD cached", module, dm_kd, rc, Path(tmp) / "kd", args.warmup)
        student = load_model(rc.student, cache, for_training=True)
        def on_policy_spec(every: int) -> OnPolicySpec:
            return OnPolicySpec(beta=0.5, temperature=1.0, vocab_size=vocab, teacher=teacher, lmbda=1.0,
                                feedback="failed_only", max_new_tokens=args.new_tokens, rollout_temperature=1.0,
                                fixed_length=not args.natural_length, examples=examples, task=task,
                                problems=problems, rendered=rendered, rollout_every=every, max_len=args.seq_len,
                                timeout_s=rc.task.timeout_s, memory_mb=rc.task.memory_mb)

        dm_on, module = kd_modules(student, datamodule(), rc, on_policy_spec(1))
        results["on-policy"] = time_fit("on-policy", module, dm_on, rc, Path(tmp) / "onpolicy", args.warmup)
        if args.rollout_every > 1:
            student = load_model(rc.student, cache, for_training=True)
            dm_r, module = kd_modules(student, datamodule(), rc, on_policy_spec(args.rollout_every))
            results[f"rounds of {args.rollout_every}"] = time_fit("rounds", module, dm_r, rc, Path(tmp) / "rounds",
                                                                  args.warmup)

    med = {name: statistics.median(t.times[args.warmup:]) for name, t in results.items()}
    if args.rollout_every > 1:  # a round's steps differ by design (the first samples for all): its mean
        n = args.rollout_every
        first = -(-args.warmup // n) * n  # the first round that starts after the warmup steps
        rounds = results[f"rounds of {n}"].times[first:]
        whole = rounds[:len(rounds) // n * n] or rounds  # give --steps >= 2 x N for a whole round
        med[f"rounds of {n}"] = statistics.mean(whole)
    sft = med["SFT"]
    print(f"\nteacher top-{args.top_k} precompute (cached KD, once per teacher + data set): {pre_s:.1f} s "
          f"for {len(dm.items)} sequences")
    print(f"{'mode':<10} {'s/step':>8} {'vs SFT':>7} {'vs KD':>6}   (medians; rounds: the mean over whole rounds)")
    for name, s in med.items():
        print(f"{name:<10} {s:8.3f} {s / sft:6.2f}x {s / med['KD cached']:5.2f}x")
    on = results["on-policy"]
    timed = on.parts[args.warmup:]
    total = sum(on.times[args.warmup:])
    parts = {p: sum(x[p] for x in timed) / len(timed) for p in (*PARTS, "update")}
    print(f"\non-policy step split (means over the timed steps; rollouts {statistics.mean(on.rollout_tokens):.0f} "
          f"new tokens per row on average): " + ", ".join(
              f"{p} {s:.3f} s ({100 * s * len(timed) / total:.0f}%)" for p, s in parts.items()))
    print(f"on-policy / SFT step time = {med['on-policy'] / sft:.2f}x; "
          f"on-policy / cached KD = {med['on-policy'] / med['KD cached']:.2f}x")
    if args.rollout_every > 1:  # means: a round's first step samples for the whole round
        per_step = statistics.mean(on.times[args.warmup:])
        print(f"on-policy in rounds of {n}: mean {statistics.mean(whole):.3f} s/step over {len(whole)} steps "
              f"(whole rounds) vs per-step sampling mean {per_step:.3f} s/step = "
              f"{statistics.mean(whole) / per_step:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
