"""student.push_to_hub: the model card written from the run, the upload at its boundary (HfApi's
calls replaced by a local stand-in that records them and keeps the files), and the no-network
case, where the run's results are saved first and the failure is recorded, not raised."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_cli

from codistill.config import ConfigError, validate
from codistill.publishing import model_card, publish

METRICS = {"method": "ekt", "teacher": "tiny-teacher", "student": "tiny", "dataset": "humaneval_plus", "seed": 3,
           "status": "ok", "data/n_kept": 17, "data/n_samples": 40, "data/problems_solved": 9, "data/n_problems": 10,
           "data/n_test_problems": 5, "eval/pass@1": 0.4, "eval/pass@1_ci95_lo": 0.1, "eval/pass@1_ci95_hi": 0.7,
           "eval/plus/pass@1": 0.2, "eval/plus/pass@1_ci95_lo": 0.0, "eval/plus/pass@1_ci95_hi": 0.5,
           "eval_base/pass@1": 0.0, "eval/pass@1_source": "sampled"}


def test_model_card_says_teacher_method_data_and_pass_at_k_with_intervals():
    card = model_card("me/student", METRICS, "method:\n  name: ekt\ntrain:\n  lr: 0.0001\n")
    assert card.startswith("---\nlibrary_name: transformers")
    for text in ("# me/student", "**ekt**", "teacher **tiny-teacher**", "dataset **humaneval_plus**", "seed 3",
                 "training examples kept: 17", "9/10 training problems solved", "| eval/pass@1 | 0.400 [0.100, 0.700] |",
                 "| eval/plus/pass@1 | 0.200 [0.000, 0.500] |", "| eval_base/pass@1 | 0.000 |", "  lr: 0.0001"):
        assert text in card, text
    assert card.index("eval/pass@1 |") < card.index("eval/plus/pass@1 |") < card.index("eval_base/pass@1 |")


@pytest.fixture
def saved_student(tmp_path):
    student = tmp_path / "run" / "student"
    student.mkdir(parents=True)
    (student / "config.json").write_text("{}")
    (student / "model.safetensors").write_bytes(b"weights")
    return tmp_path / "run"


def test_publish_uploads_the_student_folder_with_its_card(saved_student, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    hub, calls = tmp_path / "hub", []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        calls.append(("upload_folder", repo_id, kw))
        shutil.copytree(folder_path, hub / repo_id)
        return type("CommitInfo", (), {"commit_url": f"local://{repo_id}/commit/1"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = publish("me/student", saved_student, METRICS, "seed: 3\n")
    assert out == {"publish/repo_id": "me/student", "publish/url": "local://me/student/commit/1"}
    assert [c[:2] for c in calls] == [("create_repo", "me/student"), ("upload_folder", "me/student")]
    assert calls[0][2]["exist_ok"] is True and calls[0][2]["private"] is True
    assert (hub / "me/student/model.safetensors").read_bytes() == b"weights"
    assert "| eval/pass@1 | 0.400 [0.100, 0.700] |" in (hub / "me/student/README.md").read_text()


def test_publish_records_a_failed_upload_instead_of_raising(saved_student, monkeypatch):
    from huggingface_hub import HfApi

    def refuse(self, *a, **kw):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    out = publish("me/student", saved_student, METRICS, "seed: 3\n")
    assert "publish/url" not in out
    assert "me/student" in out["publish/error"] and "ConnectionError" in out["publish/error"]
    assert f"hf upload me/student {saved_student / 'student'}" in out["publish/error"]


def test_push_to_hub_config_checks(compose):
    with pytest.raises(ConfigError, match="student.push_to_hub.*train.save_student=true"):
        validate(compose("experiment=smoke", "student.push_to_hub=me/student"))  # smoke saves no student
    with pytest.raises(ConfigError, match="teacher.push_to_hub"):
        validate(compose("experiment=smoke", "+teacher.push_to_hub=me/teacher"))
    assert validate(compose("experiment=smoke")).student.push_to_hub is None  # off by default


def test_without_network_the_run_keeps_its_results_and_records_the_failed_push(tmp_path):
    """The real hub client, pointed at a local port where nothing listens."""
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=kd", "method.filter=false", "eval.baseline=false", "train.save_student=true",
                 "student.push_to_hub=me/student", "dataset.train_size=3", "eval.fit_max_problems=0",
                 f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}", "logger=csv"], cwd=tmp_path,
                env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "0"})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and "eval/pass@1" in m and "publish/url" not in m
    assert "'me/student' failed" in m["publish/error"] and "results are saved" in m["publish/error"]
    assert "publish" in p.stdout and "FAILED" in p.stdout
    assert "| eval/pass@1 |" in (run_dir / "student" / "README.md").read_text()
    assert "hf_not_a_real_token" not in (run_dir / "metrics.json").read_text()
