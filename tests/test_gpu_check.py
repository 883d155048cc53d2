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
