"""The three speed benchmarks run CI-sized on the tiny model and print both figures and their ratio.

Nothing here asserts a speed: the figures belong to the benchmarks' own output (README,
closing notes), measured on a quiet machine.  These runs keep the scripts working."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def bench(script: str, *args: str, tmp_path) -> str:
    env = dict(os.environ, CODISTILL_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def test_training_benchmark_prints_codistill_trl_and_bare_with_ratios(tmp_path):
    pytest.importorskip("trl", reason="benchmarks/bench_train.py compares with TRL: pip install '.[bench]'")
    out = bench("bench_train.py", "--ci", "--model", "tiny", tmp_path=tmp_path)
    for name in ("codistill", "trl", "bare"):
        assert re.search(rf"^\s+{name}\s+[\d.]+ tokens/s\s+MFU", out, re.M), out
    assert re.search(r"codistill / TRL SFTTrainer: [\d.]+x \(target >= 1.5x", out), out
    assert re.search(r"codistill / bare loop:\s+[\d.]+x \(target >= 0.95x", out), out


def test_generation_benchmark_prints_batch1_batched_and_hf_backend(tmp_path):
    out = bench("bench_generation.py", "--model", "tiny", "--prompts", "4", "--batch", "4",
                "--max-new-tokens", "8", tmp_path=tmp_path)
    assert "plain model.generate loop, batch 1" in out and "codistill hf backend, batch 4" in out, out
    assert re.search(r"hf backend vs the batch-1 loop: [\d.]+x \(target >= 3x\)", out), out


def test_kd_benchmark_prints_kd_over_sft_step_time(tmp_path):
    out = bench("bench_kd.py", "--student", "tiny", "--steps", "3", "--warmup", "1", "--seq-len", "64",
                tmp_path=tmp_path)
    assert re.search(r"KD \(cached top-\d+\) / SFT step time = [\d.]+x; target <= 1.5x", out), out


def test_onpolicy_benchmark_prints_the_step_split_beside_sft_and_cached_kd(tmp_path):
    out = bench("bench_onpolicy.py", "--student", "tiny", "--steps", "4", "--warmup", "1", "--seq-len", "64",
                "--new-tokens", "8", "--rollout-every", "2", tmp_path=tmp_path)
    for name in ("SFT", "KD cached", "on-policy"):
        assert re.search(rf"^{name}\s+[\d.]+\s+[\d.]+x\s+[\d.]+x$", out, re.M), out
    assert re.search(r"on-policy step split \(means over the timed steps; rollouts \d+ new tokens per row on "
                     r"average\): rollout [\d.]+ s \(\d+%\), judge [\d.]+ s \(\d+%\), "
                     r"teacher [\d.]+ s \(\d+%\), update [\d.]+ s \(\d+%\)", out), out
    assert re.search(r"on-policy / SFT step time = [\d.]+x; on-policy / cached KD = [\d.]+x", out), out
    assert re.search(r"on-policy in rounds of 2: mean [\d.]+ s/step over 2 steps \(whole rounds\) vs per-step "
                     r"sampling mean [\d.]+ s/step = [\d.]+x", out), out
