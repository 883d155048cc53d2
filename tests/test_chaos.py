"""Chaos (issue 15): a real smoke run (KD, online teacher, 2 epochs of 6 steps, a checkpoint every
2 steps) is killed at chosen points and run again with the same command until it finishes; what
it reports must equal an uninterrupted run's (CPU runs are deterministic), timings aside.

The kill points are deterministic: ``CODISTILL_FAULT`` (codistill.faults) makes the process send
itself the signal there, instead of racing a timer."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow

ARGS = ["experiment=smoke", "method=kd", "method.filter=false", "eval.baseline=false", "train.epochs=2",
        "train.checkpoint_every_n_steps=2"]
# figures that differ between two runs of the same config by nature: speed, time, cache use, paths
VOLATILE = ("tokens_per_s", "mfu", "time/", "run_dir", "cached_prompts", "resumed_from_step")
FILES = ("generations.jsonl", "train_set.jsonl", "eval_samples.jsonl")


def _run(run_dir, cache, fault=None):
    env = dict(os.environ, CODISTILL_CACHE=str(cache))
    env.pop("CODISTILL_FAULT", None)
    if fault:
        env["CODISTILL_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "codistill", *ARGS, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent,
                          env=env, capture_output=True, text=True, timeout=600)


def _figures(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if not any(v_ in k for v_ in VOLATILE)}


def _wandb_run_ids(run_dir):
    """Distinct W&B run ids among the job's offline runs (``offline-run-<time>-<id>``)."""
    return {d.name.rsplit("-", 1)[1] for d in (run_dir / "wandb").glob("offline-run-*")}


def _same_as(reference, run_dir):
    assert _figures(run_dir) == _figures(reference)
    for f in FILES:  # the same teacher samples, training set, and the trained student's completions
        assert (run_dir / f).read_text() == (reference / f).read_text(), f


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, shared by the tests."""
    base = tmp_path_factory.mktemp("reference")
    p = _run(base / "run", base / "cache")
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((base / "run" / "metrics.json").read_text())
    assert m["status"] == "ok" and m["train/steps"] == 12 and m["train/final_kd_loss"] > 0
    return base / "run"


def test_sigkill_in_generation_training_and_evaluation_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    for fault in ("generate_batch:2:kill",  # the teacher's second batch (the first is cached)
                  "train_step:9:kill",  # mid-epoch 2, one step after the step-8 checkpoint
                  "stage:eval:kill"):  # training done: the rerun resumes from the final checkpoint
        p = _run(run_dir, cache, fault)
        assert p.returncode == -9, (fault, p.returncode, p.stderr[-3000:])
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"
        if fault.startswith("train_step"):
            ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            assert ckpt["global_step"] == 8
    p = _run(run_dir, cache)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["train/resumed_from_step"] == 12  # no step trained twice or lost
    assert m["train/tokens_per_s"] > 0
    assert len(_wandb_run_ids(run_dir)) == 1  # four processes, one W&B run for the job
    _same_as(reference, run_dir)


def test_sigterm_saves_records_and_exits_143_and_a_torn_checkpoint_is_set_aside_on_rerun(reference, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    p = _run(run_dir, cache, "train_step:5:term")
    assert p.returncode == 143, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["signal"] == "SIGTERM"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 5  # saved on the signal

    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 3])  # torn (a full disk, an older writer killed mid-write)
    p = _run(run_dir, cache)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"checkpoint {ckpt} cannot be read" in p.stderr + p.stdout
    assert (run_dir / "checkpoints" / "last.ckpt.corrupt").exists()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and "train/resumed_from_step" not in m  # that stage started afresh
    assert len(_wandb_run_ids(run_dir)) == 1
    _same_as(reference, run_dir)
