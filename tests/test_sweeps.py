"""Sweeps run as a user runs them (subprocess, real Hydra, real W&B offline files):
stable sweep directories, resume, failure isolation, Optuna, submitit, report, notebook."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONF, ROOT, run_cli
from wandb_records import offline_runs, table_data

# the smoke experiment made smaller still: every stage runs, each job takes seconds of CPU
FAST = ["experiment=smoke", "eval.baseline=false", "dataset.train_size=2", "dataset.test_size=2", "sampling.n=2",
        "sampling.max_new_tokens=8", "eval.n_samples=0", "eval.k=[1]", "eval.max_new_tokens=8", "task.num_shots=0"]
SWEEP = ["-m", *FAST, "method=none,ekt", "seed=0,1"]


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "multirun" / "smoke").iterdir() if p.is_dir())


def jobs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache):
    """A real 4-job smoke sweep (method=none,ekt x seed=0,1), in its derived directory."""
    cwd = tmp_path_factory.mktemp("sweep_cwd")
    p = run_cli(SWEEP, cwd=cwd, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    [d] = sweep_dirs(cwd)
    return cwd, d, p


# --------------------------------------------------------------------------- units
def test_sweep_id_and_job_dirs():
    from codistill.sweep import job_dir, safe_dirname, sweep_id

    a = sweep_id(["experiment=smoke", "seed=0,1"])
    assert a == sweep_id(["experiment=smoke", "seed=0,1"]) and a.startswith("sweep-") and len(a) == 14
    assert a != sweep_id(["experiment=smoke", "seed=0,2"]) != sweep_id([])
    assert job_dir(0, "") == "0" and job_dir(3, "seed=1") == "3_seed=1"
    assert job_dir(1, "student.path=/x/y,seed=1") == "1_student.path=_x_y,seed=1"  # one path component
    long = ",".join(f"key{i}=value{i}" for i in range(40)) + ",train.lr=0.000125"
    short = safe_dirname(long)
    assert len(short) == 120 and short.startswith("key0=value0") and "train.lr=0.000125-" in short
    assert safe_dirname(long + "1") != short


def _compose_hydra(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from codistill.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_sweep_dir_comes_from_the_overrides_or_sweep_name():
    from codistill.sweep import sweep_id

    cfg = _compose_hydra("experiment=smoke", "seed=1")
    assert cfg.hydra.sweep.dir == f"multirun/smoke/{sweep_id(['experiment=smoke', 'seed=1'])}"
    assert _compose_hydra("experiment=smoke", "sweep_name=lr/scan").hydra.sweep.dir == "multirun/smoke/lr_scan"
    assert "sweep_name" in cfg.hydra.job.config.override_dirname.exclude_keys


def _write_job(d: Path, **m):
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))


def test_summary_names_failed_jobs_and_the_callback_exits_nonzero(tmp_path, capsys):
    from omegaconf import OmegaConf

    from codistill.sweep import SweepSummary, job_metrics, summarize

    _write_job(tmp_path / "0_seed=0", status="ok", **{"eval/pass@1": 0.25})
    _write_job(tmp_path / "1_seed=1", status="failed", error="OSError: no such model")
    _write_job(tmp_path / "2_seed=2", status="running")  # killed: never finished
    _write_job(tmp_path / "10_seed=10", status="ok")
    (tmp_path / "0_seed=0" / "wandb" / "x").mkdir(parents=True)
    (tmp_path / "0_seed=0" / "wandb" / "x" / "metrics.json").write_text("{}")  # not a job
    jobs_ = job_metrics(tmp_path)
    assert [d.name for d, _ in jobs_] == ["0_seed=0", "1_seed=1", "2_seed=2", "10_seed=10"]  # numeric order
    text, bad = summarize(tmp_path, jobs_)
    assert text.splitlines()[0] == f"sweep {tmp_path}: 2/4 jobs ok, 2 not ok"
    assert "[ok] 0_seed=0  pass@1=0.250" in text
    assert f"[failed] 1_seed=1  error: OSError: no such model  ({tmp_path / '1_seed=1' / 'metrics.json'})" in text
    assert "[running] 2_seed=2  error: did not finish" in text
    assert [b.name for b in bad] == ["1_seed=1", "2_seed=2"]
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as e:
        SweepSummary().on_multirun_end(cfg)
    assert e.value.code == 1 and "2/4 jobs ok" in capsys.readouterr().out
    (tmp_path / "1_seed=1" / "metrics.json").write_text(json.dumps({"status": "ok"}))
    (tmp_path / "2_seed=2" / "metrics.json").write_text(json.dumps({"status": "ok"}))
    SweepSummary().on_multirun_end(cfg)  # every job ok: no exit
    assert "4/4 jobs ok" in capsys.readouterr().out


# --------------------------------------------------------------------------- the sweep directory
@pytest.mark.slow
def test_sweep_dir_is_derived_from_the_command_and_holds_one_dir_per_job(sweep):
    cwd, d, p = sweep
    assert d.name.startswith("sweep-") and len(d.name) == len("sweep-") + 8
    js = jobs(d)
    assert len(js) == 4 and all(m["status"] == "ok" for m in js.values()), js
    assert {(m["method"], m["seed"]) for m in js.values()} == {("none", 0), ("none", 1), ("ekt", 0), ("ekt", 1)}
    assert f"sweep multirun/smoke/{d.name}: 4/4 jobs ok" in p.stdout
    assert sorted(os.listdir(cwd)) == ["multirun"]  # no stray outputs/ or wandb/ next to the sweep


@pytest.mark.slow
def test_each_job_has_one_wandb_run_grouped_tagged_named_with_table_and_artifact(sweep):
    _, d, _ = sweep
    for job, m in jobs(d).items():
        [(run_files, run)] = offline_runs(d / job)
        assert run.group == d.name
        assert set(run.tags) >= {f"method:{m['method']}", "teacher:tiny-teacher", "student:tiny",
                                 "dataset:gsm_symbolic"}
        assert run.name.startswith("smoke[") and f"method={m['method']}" in run.name and f"seed={m['seed']}" in run.name
        assert run.job_type == ("eval" if m["method"] == "none" else "distill")
        assert run.exit_code == 0  # wandb.finish() ran
        assert run.summary["eval/pass@1"] == m["eval/pass@1"] and run.summary["status"] == "ok"
        table = table_data(run_files, run.tables["eval/samples"])
        assert table["columns"][:2] == ["problem_id", "problem"] and {"completion", "verdict", "error"} <= set(
            table["columns"])
        assert len(table["data"]) == 2  # 2 problems x 1 greedy sample
        assert all(r[table["columns"].index("verdict")] in ("pass", "error", "failed", "timeout") for r in table["data"])
        if m["method"] == "ekt":
            assert run.summary["data/n_samples"] == 4 and "data/n_kept" in run.summary
            [art] = [a for a in run.artifacts if a["type"] == "dataset"]
            assert art["files"] == ["train_set.jsonl"] and art["name"] == f"train_set-{run.run_id}"
        else:
            assert not [a for a in run.artifacts if a["type"] == "dataset"]


@pytest.mark.slow
def test_rerun_skips_finished_jobs_and_recomputes_the_unfinished_one(sweep, tmp_path, cache):
    cwd, d, _ = sweep
    shutil.copytree(cwd / "multirun", tmp_path / "multirun")  # rerun in a copy: the fixture stays intact
    d2 = tmp_path / "multirun" / "smoke" / d.name
    before = jobs(d2)
    redo = next(j for j, m in before.items() if m["method"] == "ekt" and m["seed"] == 1)
    marked = dict(before[redo], status="failed", error="killed")
    (d2 / redo / "metrics.json").write_text(json.dumps(marked))
    p = run_cli(SWEEP, cwd=tmp_path, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 0, p.stderr[-3000:]
    assert sweep_dirs(tmp_path) == [d2]  # the same command found the same sweep directory
    after = jobs(d2)
    assert p.stdout.count("skipped (") == 3 and f"skipped ({d2 / redo})" not in p.stdout
    for job in before:
        if job != redo:
            assert after[job] == before[job]  # untouched
            assert len(offline_runs(d2 / job)) == 1  # no second W&B run for a skipped job
    assert after[redo]["status"] == "ok" and after[redo]["time/total_s"] != before[redo]["time/total_s"]
    # it resumed from the generation cache: the teacher was not asked again
    assert after[redo]["teacher/cached_prompts"] == after[redo]["data/n_problems"] == 2


# --------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_failing_jobs_are_recorded_and_the_sweep_goes_on_then_exits_nonzero(tmp_path, cache):
    # job 0 runs; job 1 fails in a stage (no such checkpoint); job 2 fails validation (bad value)
    p = run_cli(["-m", *FAST, "method=none", "student.path=/nonexistent", "student.source=tiny,local,bogus"],
                cwd=tmp_path, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    [d] = sweep_dirs(tmp_path)
    js = {re.search(r"student\.source=(\w+)", job).group(1): m for job, m in jobs(d).items()}
    assert set(js) == {"tiny", "local", "bogus"}
    assert js["tiny"]["status"] == "ok"
    assert js["local"]["status"] == "failed" and "/nonexistent" in js["local"]["error"]
    assert "traceback" in js["local"]
    assert js["bogus"]["status"] == "failed" and "student.source" in js["bogus"]["error"]
    assert js["bogus"]["method"] == "none" and js["bogus"]["seed"] == 0
    # the summary at the end names each failed job, why, and where its metrics.json is
    summary = p.stdout[p.stdout.index(f"sweep multirun/smoke/{d.name}: 1/3 jobs ok, 2 not ok"):]
    for job, m in jobs(d).items():
        line = next(ln for ln in summary.splitlines() if f"] {job}" in ln)
        assert line.strip().startswith(f"[{m['status']}]")
        if m["status"] == "failed":
            assert m["error"][:40] in line and str(d / job / "metrics.json") in line


def test_a_single_run_still_raises(tmp_path, cache):
    """Outside a sweep a failure is the run's own exit status (no summary, no swallowing)."""
    p = run_cli([*FAST, "method=none", "student.source=bogus", f"hydra.run.dir={tmp_path}/r"], cwd=tmp_path,
                env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 1 and "student.source" in p.stdout + p.stderr
    assert "jobs ok" not in p.stdout


# --------------------------------------------------------------------------- sweepers and launchers
@pytest.mark.slow
def test_optuna_sweeper_maximises_pass_at_1_over_two_trials(tmp_path, cache):
    p = run_cli(["-m", *FAST, "hydra/sweeper=optuna_pass1", "hydra.sweeper.n_trials=2",
                 "train.lr=tag(log,interval(1e-5,1e-3))"], cwd=tmp_path, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    [d] = sweep_dirs(tmp_path)
    res = yaml.safe_load((d / "optimization_results.yaml").read_text())
    js = jobs(d)
    assert len(js) == 2 and all(m["status"] == "ok" for m in js.values())
    lrs = [yaml.safe_load((d / j / ".hydra" / "config.yaml").read_text())["train"]["lr"] for j in sorted(js)]
    assert len(set(lrs)) == 2 and all(1e-5 <= lr <= 1e-3 for lr in lrs)
    assert res["best_value"] == max(m["eval/pass@1"] for m in js.values())  # what the jobs returned
    assert 1e-5 <= res["best_params"]["train.lr"] <= 1e-3
    assert "Directions: ['maximize']" in p.stdout + p.stderr


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path, cache):
    p = run_cli(["-m", *FAST, "method=none", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
                cwd=tmp_path, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    [d] = sweep_dirs(tmp_path)
    [(job, m)] = jobs(d).items()
    assert m["status"] == "ok" and m["method"] == "none"
    assert list((d / ".submitit").glob("*/*_result.pkl"))  # it really ran as a submitit job
    assert len(offline_runs(d / job)) == 1
    assert f"sweep multirun/smoke/{d.name}: 1/1 jobs ok" in p.stdout


def test_slurm_launcher_takes_nodes_and_gpus_from_the_trainer():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from codistill.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4",
                                           "trainer.num_nodes=2", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] > 0


# --------------------------------------------------------------------------- looking at results
@pytest.mark.slow
def test_report_cli_on_a_real_sweep(sweep, tmp_path):
    _, d, _ = sweep
    p = subprocess.run([sys.executable, "-m", "codistill.report", str(d), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    header = p.stdout.splitlines()[0].split()
    assert header[:7] == ["job", "method", "teacher", "student", "dataset", "seed", "eval/pass@1"]
    assert {"data_kept", "time_s", "status"} <= set(header)
    assert sum(line.split()[header.index("status")] == "ok" for line in p.stdout.splitlines()[1:5]) == 4
    import csv

    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("ekt", "0"), ("ekt", "1"), ("none", "0"), ("none", "1")]
    assert {r["eval/pass@1"] for r in rows} == {str(m["eval/pass@1"]) for m in jobs(d).values()}
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 500 and height >= 400
    assert "ekt" in p.stdout and "none" in p.stdout and "(n=2)" in p.stdout
    # the intervals and the paired difference come from the jobs' eval_samples.jsonl
    ci = list(csv.DictReader((tmp_path / "report_ci.csv").open()))
    assert {(r["config"], r["metric"], r["seeds"]) for r in ci} >= {("ekt", "eval/pass@1", "2"), ("none", "eval/pass@1", "2")}
    assert all(float(r["ci95_lo"]) <= float(r["value"]) <= float(r["ci95_hi"]) for r in ci)
    diffs = list(csv.DictReader((tmp_path / "report_differences.csv").open()))
    assert ("ekt", "none", "pass@1") in {(r["a"], r["b"], r["metric"]) for r in diffs}
    assert "paired differences" in p.stdout


@pytest.mark.slow
def test_notebook_runs_on_a_real_sweep(sweep, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    _, d, _ = sweep
    nb = nbformat.read(ROOT / "notebooks" / "compare_runs.ipynb", as_version=4)
    env = {"CODISTILL_SWEEP_DIR": str(d), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    old = {k: os.environ.get(k) for k in (*env, "WANDB_API_KEY")}
    os.environ.update(env)
    os.environ.pop("WANDB_API_KEY", None)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert f"{d}: 4 jobs, 4 ok" in text and "every job finished" in text and "WANDB_API_KEY not set" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot is shown
    assert (d / "report.png").exists()


def test_a_job_finished_under_another_config_is_not_skipped(tmp_path):
    from omegaconf import OmegaConf

    from codistill.sweep import config_digest, finished

    cfg = OmegaConf.create({"dataset": {"train_size": 16}, "seed": 0, "cache_dir": "/a", "train": {"memory_check": True},
                            "hydra": {"run": {"dir": "x"}}})
    digest = config_digest(cfg)
    assert config_digest(OmegaConf.merge(cfg, {"cache_dir": "/b", "hydra": {"run": {"dir": "y"}}})) == digest
    # the memory gate decides whether a job may start, not what it computes
    assert config_digest(OmegaConf.merge(cfg, {"train": {"memory_check": False}})) == digest
    assert config_digest(OmegaConf.merge(cfg, {"train": {"lr": 0.5}})) != digest
    edited = config_digest(OmegaConf.merge(cfg, {"dataset": {"train_size": 12}}))  # an edited experiment file
    assert edited != digest
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok", "config/digest": digest}))
    assert finished(tmp_path, digest)["status"] == "ok"
    assert finished(tmp_path, edited) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok"}))  # written before digests existed
    assert finished(tmp_path, edited) is not None
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "failed", "config/digest": digest}))
    assert finished(tmp_path, digest) is None
