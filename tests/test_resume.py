"""Resumable training (issues 14, 15): exact mid-epoch resume, figures carried over, signals
recorded and exited with 128+signum, SLURM requeue, torn and stale checkpoints set aside.
Real tiny student, real Lightning Trainer; the signals are real (the process sends them to itself
through the CODISTILL_FAULT hook)."""

import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

from codistill import faults, interrupt
from codistill.config import validate

PAIRS = [{"prompt": f"Question: what is {i} plus {i}?\n", "completion": f"def solution():\n    return {i} + {i}\n"}
         for i in range(12)]
# 12 examples, batch 4: 3 steps per epoch, 6 in all; a checkpoint every 2 steps
ARGS = ("experiment=smoke", "train.epochs=2", "train.batch_size=4", "train.lr=1e-2", "train.max_seq_len=64",
        "train.checkpoint_every_n_steps=2")


def _train(rc, run_dir, pairs=PAIRS):
    from codistill.models import load_model, load_tokenizer
    from codistill.training import train_student

    tok = load_tokenizer(rc.student, rc.cache_dir)
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    torch.manual_seed(0)
    m = train_student(model, tok, pairs, rc, run_dir, [])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, m


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


FIGURES = ("train/final_loss", "train/steps", "train/tokens", "train/examples")


@pytest.mark.parametrize("stop_at", [5, 3])  # mid-epoch (epoch 2, one batch after the step-4 checkpoint); epoch end
def test_a_run_stopped_by_sigterm_mid_training_resumes_to_the_same_weights_and_figures(compose, tmp_path, monkeypatch,
                                                                                       stop_at):
    rc = validate(compose(*ARGS))
    ref_w, ref = _train(rc, tmp_path / "ref")
    assert ref["train/steps"] == 6 and "train/resumed_from_step" not in ref

    run_dir = tmp_path / "run"
    monkeypatch.setenv("CODISTILL_FAULT", f"train_step:{stop_at}:term")
    with interrupt.handlers(), pytest.raises(interrupt.Interrupted) as e:
        _train(rc, run_dir)
    assert e.value.signum == signal.SIGTERM and e.value.exit_code == 143
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == stop_at  # saved at the step the signal arrived in, not the last interval
    assert not (run_dir / "checkpoints" / "last.ckpt.tmp").exists()

    monkeypatch.delenv("CODISTILL_FAULT")
    w, m = _train(rc, run_dir)
    assert m["train/resumed_from_step"] == stop_at
    assert _same(w, ref_w)  # the same batches, in the same order, from the same optimizer state
    assert {k: m[k] for k in FIGURES} == {k: ref[k] for k in FIGURES}
    assert m["train/tokens_per_s"] > 0

    # resumed from the final checkpoint (killed in evaluation): no step, the figures of the training
    w2, m2 = _train(rc, run_dir)
    assert m2["train/resumed_from_step"] == 6 and _same(w2, ref_w)
    assert {k: m2[k] for k in FIGURES} == {k: ref[k] for k in FIGURES} and m2["train/tokens_per_s"] > 0


def test_a_checkpoint_under_another_config_or_training_set_is_set_aside(compose, tmp_path, caplog):
    """Issue 14.2: a rerun with train.lr changed must train again, not report the old weights."""
    rc = validate(compose(*ARGS))
    w1, m1 = _train(rc, tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    for changed, pairs in ((validate(compose(*ARGS, "train.lr=1e-9")), PAIRS), (rc, PAIRS[:8])):
        caplog.clear()
        w, m = _train(changed, tmp_path, pairs)
        assert "train/resumed_from_step" not in m and m["train/steps"] == 2 * len(pairs) // 4  # trained afresh
        assert not _same(w, w1)
        assert (tmp_path / "checkpoints" / "last.ckpt.stale").exists() and ckpt.exists()
        assert "another setup" in caplog.text and str(ckpt) in caplog.text
    # keys that do not change training (checkpoint interval, memory gate) do not stop a resume
    _, m = _train(validate(compose(*ARGS, "train.checkpoint_every_n_steps=3", "train.memory_check=false")),
                  tmp_path, PAIRS[:8])
    assert m["train/resumed_from_step"] == 4


def test_a_torn_checkpoint_is_named_moved_aside_and_training_starts_afresh(compose, tmp_path, caplog):
    rc = validate(compose(*ARGS))
    w1, _ = _train(rc, tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])  # a kill mid-write (of a non-atomic writer)
    w, m = _train(rc, tmp_path)
    assert "train/resumed_from_step" not in m and m["train/steps"] == 6 and _same(w, w1)
    assert (tmp_path / "checkpoints" / "last.ckpt.corrupt").stat().st_size == len(data) // 2
    assert f"checkpoint {ckpt} cannot be read" in caplog.text


def test_fault_spec_is_checked():
    assert faults.parse("train_step:3") == ("train_step", "3", signal.SIGKILL)
    assert faults.parse("stage:eval:term") == ("stage", "eval", signal.SIGTERM)
    for bad in ("train_step", "train_step:3:boom", "a:b:c:d"):
        with pytest.raises(ValueError, match="CODISTILL_FAULT"):
            faults.parse(bad)


def _cli(args, tmp_path, **env):
    e = dict(os.environ, CODISTILL_CACHE=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "codistill", *args], cwd=tmp_path, env=e, capture_output=True,
                          text=True, timeout=600)


def _fake_scontrol(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_sigterm_in_a_sweep_records_interrupted_exits_143_stops_the_sweep_and_requeues_under_slurm(tmp_path):
    """SIGTERM before training (a scheduler's preemption): job 0 records status interrupted and
    the signal, the sweep stops there (job 1 never starts) and exits 143; under SLURM the job is
    requeued with ``scontrol requeue <job id>``."""
    sweep = tmp_path / "sweep"
    p = _cli(["-m", "experiment=smoke", "method=none", "eval.baseline=false", "logger=csv", "seed=0,1",
              f"hydra.sweep.dir={sweep}"], tmp_path, CODISTILL_FAULT="stage:eval:term", SLURM_JOB_ID="4242",
             PATH=_fake_scontrol(tmp_path))
    assert p.returncode == 143, p.stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit())
    assert len(jobs) == 1  # the sweep stopped at the interrupted job
    m = json.loads((jobs[0] / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["signal"] == "SIGTERM"
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert "interrupted by SIGTERM" in p.stderr


def test_sigint_exits_130_and_records_it_without_requeue(tmp_path):
    run_dir = tmp_path / "run"
    p = _cli(["experiment=smoke", "method=none", "eval.baseline=false", "logger=csv", f"hydra.run.dir={run_dir}"],
             tmp_path, CODISTILL_FAULT="stage:eval:int", PATH=_fake_scontrol(tmp_path))
    assert p.returncode == 130, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["signal"] == "SIGINT"
    assert not (tmp_path / "scontrol.log").exists()  # not under SLURM


def test_an_expert_iteration_round_rerun_under_another_lr_trains_again(compose, tmp_path):
    """Issue 14.2 for expert iteration's own per-round checkpoints (rounds/<r>/checkpoints)."""
    from codistill.methods.expert_iteration import ExpertIteration
    from test_selftrain import EXAMPLES, _ctx, _weights

    ctx = _ctx(compose, tmp_path)
    w1 = _weights(ExpertIteration(ctx.cfg.method).train_round(ctx, None, EXAMPLES, 1)[0])
    ctx = _ctx(compose, tmp_path, "train.lr=1e-9")
    s, st = ExpertIteration(ctx.cfg.method).train_round(ctx, None, EXAMPLES, 1)
    assert "train/resumed_from_step" not in st and st["train/steps"] >= 2
    assert (tmp_path / "rounds" / "1" / "checkpoints" / "last.ckpt.stale").exists()
    assert any(not torch.equal(a, b) for a, b in zip(_weights(s).values(), w1.values()))  # not the old student
