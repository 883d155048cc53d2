"""A real smoke run's uncertainty figures: CIs, trained - base, the fit check, W&B summary."""

import json

import pytest
from conftest import run_cli
from wandb_records import offline_runs

from codistill.run import results_table
from codistill.stats import read_samples


def test_kd_smoke_run_reports_cis_the_base_difference_and_the_fit_pass_rate(tmp_path):
    """kd without a filter trains on every teacher sample (tiny models), so the run trains:
    the fit check evaluates the student greedily on the problems it was trained on."""
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=kd", "method.filter=false", "eval.fit_max_problems=4",
                 "logger=wandb", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                env={"CODISTILL_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("error")
    for key in ("eval/pass@1", "eval/pass@2", "eval_base/pass@1", "train/fit_pass@1"):
        assert m[f"{key}_ci95_lo"] <= m[key] <= m[f"{key}_ci95_hi"], key
    # 4 test problems: the interval is wide whatever the figure (Clopper-Pearson 0/4 reaches 0.60)
    assert m["eval/pass@1_ci95_hi"] - m["eval/pass@1_ci95_lo"] >= 0.4
    d = "eval/delta_vs_base/pass@1"
    assert m[d] == m["eval/pass@1"] - m["eval_base/pass@1"]
    assert m[f"{d}_ci95_lo"] <= m[d] <= m[f"{d}_ci95_hi"] and 0 < m[f"{d}_p"] <= 1
    assert m[f"{d}_mde80"] > 0.5 and m[f"{d}_n_problems"] == 4
    # the fit check: greedy only, on 4 of the 6 problems the student was trained on
    trained = {json.loads(line)["problem_id"] for line in (run_dir / "train_set.jsonl").read_text().splitlines()}
    fit = read_samples(run_dir / "eval_fit_samples.jsonl")
    assert m["train/fit_n_problems"] == len(fit) == 4 and {r["problem_id"] for r in fit} <= trained
    assert all([s["kind"] for s in r["samples"]] == ["greedy"] for r in fit)
    assert m["train/fit_pass@1"] == sum(r["samples"][0]["passed"] for r in fit) / 4
    # the run's own summary prints the difference with its interval and what it does not show
    assert "trained - base pass@1" in p.stdout and "(paired, 4 problems)" in p.stdout
    assert "fit pass@1 (trained-on)" in p.stdout
    [(_, run)] = offline_runs(run_dir)
    for key in ("eval/pass@1_ci95_lo", f"{d}_ci95_hi", f"{d}_p", "train/fit_pass@1"):
        assert run.summary[key] == m[key], key


def test_results_table_says_when_the_interval_includes_zero():
    base = {"method": "ekt", "status": "ok", "eval/delta_vs_base/pass@1_n_problems": 20, "eval/pass@1": 0.30,
            "eval/pass@1_ci95_lo": 0.10, "eval/pass@1_ci95_hi": 0.50, "eval_base/pass@1": 0.25,
            "eval/delta_vs_base/pass@1": 0.05, "eval/delta_vs_base/pass@1_p": 0.75,
            "eval/delta_vs_base/pass@1_mde80": 0.31}
    text = results_table({**base, "eval/delta_vs_base/pass@1_ci95_lo": -0.10, "eval/delta_vs_base/pass@1_ci95_hi": 0.20})
    assert "trained student pass@1  0.300 [0.100, 0.500]" in text and "_ci95" not in text
    assert "+0.050 [-0.100, +0.200], p=0.75 (paired, 20 problems)" in text
    assert "does not show that training changed pass@1" in text and "about 0.31 (80% power)" in text
    text = results_table({**base, "eval/delta_vs_base/pass@1_ci95_lo": 0.01, "eval/delta_vs_base/pass@1_ci95_hi": 0.09})
    assert "the interval excludes 0: training raised pass@1" in text
    greedy = {**base, "eval/pass@1_source": "greedy", "eval/pass@1_greedy": 0.30}
    text = results_table({**greedy, "eval/delta_vs_base/pass@1_ci95_lo": 0.01, "eval/delta_vs_base/pass@1_ci95_hi": 0.09})
    assert "pass@1 (greedy)" in text and "pass@1_greedy" not in text  # one line for one figure


def test_fit_max_problems_is_checked_and_fit_problems_are_the_trained_ones(compose, tmp_path):
    from codistill.config import ConfigError, validate
    from codistill.run import fit_problems
    from codistill.tasks.base import Problem

    assert validate(compose("experiment=smoke")).eval.fit_max_problems == 32
    with pytest.raises(ConfigError, match="eval.fit_max_problems"):
        validate(compose("experiment=smoke", "eval.fit_max_problems=-1"))
    probs = [Problem(id=f"t/{i}", question="q", answer=i) for i in range(5)]
    ts = tmp_path / "train_set.jsonl"
    ts.write_text("".join(json.dumps({"problem_id": f"t/{i}"}) + "\n" for i in (4, 1, 4, 3)))
    assert [p.id for p in fit_problems(probs, ts, 2)] == ["t/1", "t/3"]  # split order, trained-on only
    assert [p.id for p in fit_problems(probs, tmp_path / "none.jsonl", 2)] == ["t/0", "t/1"]
