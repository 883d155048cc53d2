"""The GPU check (scripts/gpu_check.sh) in its CI-sized --cpu mode, and the MFU peak it reports.

MFU is only meaningful against the peak of the dtype the matmuls run in: on a CPU with
AVX512-BF16, bf16 training measured against the fp32 matmul peak reported "MFU" > 100%."""

import json
import os
import subprocess
import sys

import pytest
import torch

from codistill.config import validate
from codistill.training import speed
from conftest import ROOT

PAIRS = [{"prompt": f"Question: what is {i} plus {i}?\n", "completion": f"def solution():\n    return {i} + {i}\n"}
         for i in range(8)]


def test_cpu_peak_is_measured_in_the_dtype_trained_in(monkeypatch):
    seen = []
    monkeypatch.setattr(speed, "measure_matmul_flops",
                        lambda n, repeat=5, dtype=None, device="cpu": seen.append(dtype) or 1e9)
    peak, src = speed.device_peak_flops(torch.device("cpu"), dtype="bf16-mixed")
    assert seen and set(seen) == {torch.bfloat16} and src == "measured:cpu-bfloat16-matmul"
    seen.clear()
    _, src = speed.device_peak_flops(torch.device("cpu"), dtype="32-true")
    assert set(seen) == {torch.float32} and src == "measured:cpu-float32-matmul"
    assert speed.device_peak_flops(torch.device("cpu"), 5e12, dtype="bf16-mixed") == (5e12, "configured")


def test_training_reports_mfu_against_the_peak_of_its_precision(compose, tmp_path):
    from codistill.models import load_model, load_tokenizer
    from codistill.training import train_student

    rc = validate(compose("experiment=smoke", "trainer.precision=bf16-mixed", "train.max_seq_len=64",
                          "train.checkpoint_every_n_epochs=0"))
    m = train_student(load_model(rc.student, rc.cache_dir, for_training=True), load_tokenizer(rc.student, rc.cache_dir),
                      PAIRS, rc, tmp_path, [])
    assert m["train/peak_flops_source"] == "measured:cpu-bfloat16-matmul"
    assert m["train/steps"] > 0 and 0 < m["train/mfu"] < 1


@pytest.mark.slow
def test_gpu_check_cpu_mode_runs_every_step_and_writes_the_report(tmp_path):
    """``scripts/gpu_check.sh --cpu``: the one-call GPU check, CI-sized, so the GPU call is the only
    thing left to do.  CUDA-only steps are recorded as skipped (or ok where there is CUDA)."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    p = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(out), "--work",
                        str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(x.name for x in out.iterdir()) == ["report.json", "report.md", "steps.log"]  # $OUT: <= 8 files
    report = json.loads((out / "report.json").read_text())
    steps = report["steps"]
    cuda = torch.cuda.is_available()
    assert set(steps) == {"pipeline:cpu", "pipeline:lora", "pipeline:gpu", "pipeline:ddp", "pipeline:fsdp", "train",
                          "train:profile", "generation", "kd", "on_policy"}
    for name in ("pipeline:gpu", "pipeline:ddp", "pipeline:fsdp"):
        assert steps[name]["status"] == ("ok" if cuda else "skipped: no CUDA"), steps[name]
    for name in ("pipeline:cpu", "pipeline:lora", "train", "train:profile", "generation", "kd"):
        assert steps[name]["status"] == "ok", (name, steps[name])
    assert steps["on_policy"]["status"] in ("ok", "skipped: not available (method=on_policy does not compose)")
    assert steps["pipeline:lora"]["figures"]["train/trainable_params"] < \
        steps["pipeline:cpu"]["figures"]["train/trainable_params"]
    train = steps["train"]["figures"]
    assert set(train["tokens_per_s"]) >= {"codistill", "bare"} and all(v > 0 for v in train["tokens_per_s"].values())
    assert train["peak_source"].startswith("measured:cpu-") and 0 < train["mfu"]["codistill"] < 1
    profile = steps["train:profile"]["figures"]["profile"]
    assert profile and any(row["op"] == "aten::mm" for row in profile)  # the matmuls are among the top operators
    assert report["ceilings"]["bf16_matmul_tflops"] > 0 and report["ceilings"]["copy_tb_per_s"] > 0
    gen = steps["generation"]["figures"]
    assert gen["bound_tokens_per_s"] > 0 and all(r["tokens"] > 0 for r in gen["rows"])
    assert set(steps["kd"]["figures"]["step_s"]) == {"SFT", "KD cached", "KD online"}
    md = (out / "report.md").read_text()
    assert "| train | ok |" in md and "| kd | ok |" in md
    assert "===== train: rc 0" in (out / "steps.log").read_text()
