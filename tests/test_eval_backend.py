"""Which backend evaluates the trained student: vLLM over the saved checkpoint where the
student is sampled with vLLM, hf over the in-memory model otherwise (vLLM itself is not run)."""

from __future__ import annotations

import dataclasses

import pytest

from codistill.config import ConfigError, validate
from codistill.evaluation import student_backend as sb


@pytest.fixture
def rc(compose):
    return validate(compose("experiment=smoke", "train.save_student=true"))


def with_backend(rc, backend: str, **train):
    return dataclasses.replace(rc, generation=dataclasses.replace(rc.generation, backend=backend),
                               train=dataclasses.replace(rc.train, **train))


def test_trained_student_under_vllm_is_evaluated_from_its_saved_checkpoint(rc, tmp_path):
    assert sb.choose(with_backend(rc, "vllm"), trained=True, run_dir=tmp_path) == sb.EvalBackend("vllm", tmp_path / "student")
    assert sb.choose(with_backend(rc, "vllm"), trained=False, run_dir=tmp_path).kind == "hf"  # untrained: as before
    assert sb.choose(rc, trained=True, run_dir=tmp_path).kind == "hf"  # hf stays the default
    student_vllm = dataclasses.replace(rc, student=dataclasses.replace(rc.student, backend="vllm"))
    assert sb.choose(student_vllm, trained=True, run_dir=tmp_path).kind == "vllm"


def test_vllm_evaluation_without_save_student_is_a_config_error(rc, tmp_path):
    bad = with_backend(rc, "vllm", save_student=False)
    with pytest.raises(ConfigError, match="train.save_student"):
        sb.check(bad)
    with pytest.raises(ConfigError, match="train.save_student"):
        sb.choose(bad, trained=True, run_dir=tmp_path)
    sb.check(dataclasses.replace(bad, method=dataclasses.replace(bad.method, name="none")))  # nothing trained


def test_build_hands_vllm_the_saved_checkpoint(rc, tmp_path, monkeypatch):
    import torch

    from codistill.generation import vllm as vllm_mod

    calls = []

    class Recorder:
        def __init__(self, checkpoint, cfg, *, max_context, trust_remote_code, desc):
            calls.append((checkpoint, cfg, max_context, desc))

    choice = sb.choose(with_backend(rc, "vllm"), trained=True, run_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no saved student checkpoint"):
        sb.build(choice, with_backend(rc, "vllm"))
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "config.json").write_text("{}")
    monkeypatch.setattr(vllm_mod, "VLLMBackend", Recorder)
    model = torch.nn.Linear(2, 2)
    backend = sb.build(choice, with_backend(rc, "vllm"), model)
    assert isinstance(backend, Recorder) and calls[0][0] == str(tmp_path / "student")
    assert calls[0][2] == rc.student.max_context and calls[0][3] == "eval"
    assert sb.build(sb.EvalBackend("hf"), rc, model) is None
