"""The papers' settings and their offline reproductions, as experiment configs.

Every experiment composes with every method it sweeps (validated, nothing loaded), pins the
settings the papers state, and the offline reproductions run end to end as tiny sweeps (tiny
random models, two problems) -- the same config files a user runs at full size."""

import json

import pytest
from omegaconf import OmegaConf

from codistill.config import validate
from conftest import run_cli

SWEEPS = {
    "ekt_gsm8k_paper": ["ekt", "kd", "expert_iteration"],
    "persd_humaneval_paper": ["stand", "persd", "persd_refine", "persd_combined"],
    "repro_ekt_offline": ["none", "ekt", "expert_iteration", "stand", "kd_cached"],
    "repro_kd_offline": ["none", "ekt", "kd_cached"],
    "repro_persd_offline": ["none", "stand", "persd", "persd_refine", "persd_combined"],
    "repro_onpolicy_offline": ["kd_cached", "on_policy", "on_policy_failed_only", "on_policy_weighted"],
}

NAME = {"kd_cached": "kd", "on_policy_failed_only": "on_policy", "on_policy_weighted": "on_policy"}  # group options that are variants of a method


@pytest.mark.parametrize("experiment", sorted(SWEEPS))
def test_experiment_sweeps_its_methods_and_each_composes(compose, experiment, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # the PERsD paper's API teacher
    cfg = compose(f"experiment={experiment}")
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) if "hydra" in cfg else None
    if params is None:  # compose() drops the hydra node: read the file's own sweep
        from conftest import CONF

        params = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    assert str(params["method"]).split(",") == SWEEPS[experiment]
    for method in SWEEPS[experiment]:
        rc = validate(compose(f"experiment={experiment}", f"method={method}"))
        assert rc.method.name == NAME.get(method, method) and rc.experiment_name == experiment


def test_ekt_paper_settings(compose):
    rc = validate(compose("experiment=ekt_gsm8k_paper"))
    assert (rc.teacher.name, rc.student.name, rc.dataset.name) == ("gpt-j-6b", "gpt-neo-1.3b", "gsm8k")
    assert (rc.task.prompt_style, rc.sampling.n, rc.sampling.temperature, rc.method.keep) == ("mathqa", 100, 0.6, "first")
    t = rc.train
    assert (t.lr, t.weight_decay, t.warmup_steps, t.epochs, t.batch_size * t.grad_accum, t.mask_prompt) == \
        (1e-4, 0.1, 100, 140, 32, False)
    assert rc.eval.n_samples == 100 and 100 in rc.eval.k


def test_persd_paper_settings(compose, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(Exception, match="openai.base_url"):  # no server named: fails before anything loads
        validate(compose("experiment=persd_humaneval_paper"))
    rc = validate(compose("experiment=persd_humaneval_paper", "generation.openai.base_url=http://127.0.0.1:1/v1"))
    assert rc.student.name == "starcoder" and rc.dataset.name == "code_alpaca"
    assert rc.teacher.backend == "openai" and rc.student.backend in (None, "hf")
    assert rc.eval_dataset is not None and rc.eval_dataset.name == "humaneval"
    assert (rc.train.lr, rc.train.epochs, rc.train.mask_prompt) == (5e-6, 20, True)
    assert (rc.eval.n_samples, rc.eval.temperature) == (20, 0.2) and not rc.eval.greedy


TINY = ["model@teacher=tiny-teacher", "model@student=tiny", "seed=0", "sampling.n=2", "sampling.max_new_tokens=16",
        "eval.max_new_tokens=16", "train.epochs=1", "train.save_student=false", "trainer.enable_progress_bar=false",
        "logger=csv"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment, sizes", [
    ("repro_ekt_offline", ["dataset.train_size=2", "dataset.test_size=2", "eval.n_samples=2", "eval.k=[1,2]"]),
    ("repro_persd_offline", ["dataset.train_size=2", "dataset.test_size=2"]),
    ("repro_kd_offline", ["dataset.train_size=2", "dataset.test_size=2", "eval.n_samples=2", "eval.k=[1,2]"]),
    ("repro_onpolicy_offline", ["dataset.train_size=2", "dataset.test_size=2"]),
])
def test_offline_reproduction_runs_every_method_end_to_end(tmp_path, experiment, sizes):
    """The reproduction's own config, shrunk to tiny models and two problems: one job per method."""
    sweep = tmp_path / "sweep"
    p = run_cli(["-m", f"experiment={experiment}", *TINY, *sizes, f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = [json.loads((d / "metrics.json").read_text()) for d in sorted(sweep.iterdir())
            if (d / "metrics.json").exists()]
    assert sorted(m["method"] for m in jobs) == sorted(NAME.get(m, m) for m in SWEEPS[experiment])
    assert all(m["status"] == "ok" for m in jobs), [m.get("error") for m in jobs]
    if experiment == "repro_persd_offline":
        assert all("eval/step1/pass@1" in m for m in jobs)
        assert all(m["data/split"] for m in jobs)
    if experiment == "repro_onpolicy_offline":  # every job also scores the base student (no method=none row)
        assert sorted(m.get("onpolicy/feedback", "kd") for m in jobs) == ["failed_only", "kd", "none", "weighted"]
        assert all("eval_base/pass@1" in m and "eval/delta_vs_base/pass@1_ci95_lo" in m for m in jobs)


def test_a_role_can_have_its_own_backend(compose, tmp_path):
    """teacher.backend=openai: the teacher is sampled through the server (no weights loaded here)
    while the student keeps the `generation` group's backend."""
    from codistill.generation.hf import HFBackend
    from codistill.generation.openai import OpenAIBackend
    from codistill.methods import RunContext

    rc = validate(compose("experiment=smoke", "teacher.backend=openai",
                          "generation.openai.base_url=http://127.0.0.1:1/v1"))
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=None, train=[], test=[], cache_dir=str(tmp_path))
    teacher, _, t_id = ctx.backend("teacher")
    student, _, s_id = ctx.backend("student")
    assert isinstance(teacher, OpenAIBackend) and isinstance(student, HFBackend)
    assert t_id.startswith("openai:http://127.0.0.1:1/v1:") and not s_id.startswith("openai:")
    assert not any(key[0] == "teacher" and key[1] in (False, True) for key in ctx._models)  # no teacher weights


@pytest.mark.slow
def test_evaluation_on_another_dataset(tmp_path):
    """dataset@eval_dataset=humaneval: trained on GSM-style problems, evaluated on HumanEval's tests."""
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=none", "dataset@eval_dataset=humaneval", "eval.max_problems=2",
                 "eval.n_samples=0", "eval.k=[1]", "logger=csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["eval_dataset"] == "humaneval" and m["data/n_test_problems"] == 2
    assert m["data/split"].startswith("test=HumanEval/0..1 (2)")
    rows = [json.loads(line) for line in (run_dir / "eval_samples.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert all(s["status"] in ("passed", "failed", "error", "timeout", "killed") for r in rows for s in r["samples"])


@pytest.mark.slow
def test_repro_ekt_offline_takes_gsm8k_from_local_files(tmp_path):
    """The EKT reproduction's config with `dataset=gsm8k` and GSM8K-format JSONL files (what a user
    with the real GSM8K does): the problems come from the files, the rest of the config stays."""
    rows = [("Tom has 3 apples and buys 4 more. How many apples does he have?", 7),
            ("A box holds 6 eggs. How many eggs are in 5 boxes?", 30),
            ("Sara had 20 dollars and spent 8. How many dollars are left?", 12)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": f"So {a}.\n#### {a}"}) + "\n" for q, a in rows))
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=repro_ekt_offline", "method=ekt", *TINY, "dataset=gsm8k",
                 f"dataset.train_file={tmp_path}/train.jsonl", f"dataset.test_file={tmp_path}/test.jsonl",
                 "dataset.train_size=2", "dataset.test_size=2", "eval.n_samples=2", "eval.k=[1,2]",
                 "decontamination.enabled=false",  # one file's rows on both sides: only the loading is tested
                 f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("error")
    assert (m["dataset"], m["experiment"], m["data/n_test_problems"]) == ("gsm8k", "repro_ekt_offline", 2)
    assert "eval/pass@2" in m
    gens = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert {g["problem_id"] for g in gens} <= {"gsm8k/train/1", "gsm8k/train/2", "gsm8k/train/3"}
    assert "def solution():" in gens[0]["program"]  # the reproduction's PAL prompt
