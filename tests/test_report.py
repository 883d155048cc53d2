"""codistill-report's pure parts on sweep directories written here (the real sweep is in test_sweeps)."""

import json
import struct
from pathlib import Path

import pandas as pd
import pytest

from codistill.report import aggregate, format_table, load_sweep, main, pass_columns, plot, summary, to_markdown


def write_job(sweep: Path, name: str, **m):
    d = sweep / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))


def job(method, seed, p1, p10=None, student="tiny", status="ok", **extra):
    m = {"method": method, "teacher": "qwen", "student": student, "dataset": "gsm8k", "seed": seed,
         "status": status, "eval/pass@1": p1, "eval/pass@1_greedy": p1, "data/n_kept": 7, "time/total_s": 12.5}
    if p10 is not None:
        m["eval/pass@10"] = p10
    m.update(extra)
    return m


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "multirun" / "exp" / "sweep-12345678"
    write_job(s, "0_method=none,seed=0", **job("none", 0, 0.10, 0.30))
    write_job(s, "1_method=none,seed=1", **job("none", 1, 0.20, 0.40))
    write_job(s, "2_method=ekt,seed=0", **job("ekt", 0, 0.30, 0.60, **{"eval_base/pass@1": 0.1}))
    write_job(s, "3_method=ekt,seed=1", **job("ekt", 1, 0.50, 0.80, **{"eval_base/pass@1": 0.2}))
    write_job(s, "4_method=kd,seed=0", **{"method": "kd", "seed": 0, "status": "failed", "error": "OSError: boom"})
    return s


def test_pass_columns_ordered_by_k_trained_first():
    cols = ["eval/pass@10", "x", "eval_base/pass@1", "eval/pass@1", "eval/pass@1_greedy", "eval/pass@2"]
    assert pass_columns(cols) == ["eval/pass@1", "eval_base/pass@1", "eval/pass@2", "eval/pass@10"]
    steps = ["eval/step1/pass@1", "eval/step0/pass@1", "eval/pass@1", "eval/step2/pass@1"]
    assert pass_columns(steps) == ["eval/pass@1", "eval/step1/pass@1", "eval/step2/pass@1"]  # step 0 is pass@1


def test_summary_has_mean_spread_and_data_figures_per_method(tmp_path):
    s = tmp_path / "s"
    for seed, (p0, p1) in enumerate([(0.1, 0.2), (0.3, 0.4)]):
        write_job(s, f"p{seed}", **job("persd", seed, p0, **{"eval/step1/pass@1": p1, "data/problems_solved": 9,
                                                          "data/student_solved": 1, "data/sent_to_teacher": 11}))
        write_job(s, f"n{seed}", **job("none", seed, 0.0))
    table = summary(load_sweep(s)).set_index("method")
    assert table.loc["persd", "pass@1"] == "0.200 ± 0.141" and table.loc["persd", "step1/pass@1"] == "0.300 ± 0.141"
    assert (table.loc["persd", "solved"], table.loc["persd", "sent_to_teacher"], table.loc["persd", "data_kept"]) == \
        ("9", "11", "7")
    assert table.loc["none", "solved"] == "" and table.loc["persd", "seeds"] == 2
    md = to_markdown(summary(load_sweep(s)))
    assert md.splitlines()[0].startswith("| method | seeds | pass@1 | step1/pass@1 |") and md.count("\n") == 3


def test_load_sweep_one_row_per_job_with_every_pass_at_k(sweep):
    df = load_sweep(sweep)
    assert list(df.columns) == ["job", "method", "teacher", "student", "dataset", "seed", "eval/pass@1",
                                "eval_base/pass@1", "eval/pass@10", "data_kept", "time_s", "status", "error",
                                "overrides"]
    assert list(df["method"]) == ["none", "none", "ekt", "ekt", "kd"]
    assert df.loc[df["method"] == "kd", "status"].item() == "failed"
    assert df.loc[df["method"] == "kd", "error"].item() == "OSError: boom"
    text = format_table(df)
    assert "0.300" in text and "OSError: boom" in text and "12.5" in text


def test_aggregate_mean_and_spread_over_seeds(sweep):
    agg = aggregate(load_sweep(sweep)).set_index(["config", "metric"])
    assert agg.loc[("ekt", "eval/pass@1"), "mean"] == pytest.approx(0.40)
    assert agg.loc[("ekt", "eval/pass@1"), "std"] == pytest.approx(0.1414213, rel=1e-5)  # sample std
    assert agg.loc[("none", "eval/pass@10"), "mean"] == pytest.approx(0.35)
    assert agg.loc[("none", "eval/pass@1"), "n"] == 2
    assert "kd" not in {c for c, _ in agg.index}  # failed jobs carry no figures


def test_configs_name_what_the_sweep_varied(tmp_path):
    s = tmp_path / "s"
    write_job(s, "0", **job("ekt", 0, 0.1, student="a"))
    write_job(s, "1", **job("ekt", 0, 0.2, student="b"))
    agg = aggregate(load_sweep(s))
    assert set(agg["config"]) == {"ekt | student=a", "ekt | student=b"}


def test_plot_is_a_png(sweep, tmp_path):
    out = plot(load_sweep(sweep), tmp_path / "p.png")
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] >= 500


def test_cli_writes_csv_and_png_and_rejects_a_missing_dir(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "5 jobs, 4 ok, 1 not ok" in out and "ekt" in out and "0.400 ± 0.141" in out
    assert (tmp_path / "out" / "report.csv").read_text().startswith("job,method,teacher,student,dataset,seed,")
    assert (tmp_path / "out" / "report.png").exists()
    assert "| ekt | 2 | 0.400 ± 0.141 |" in (tmp_path / "out" / "report.md").read_text()
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- uncertainty
def write_samples(d: Path, passed: list[int], name: str = "eval_samples.jsonl"):
    """One greedy sample per problem p0, p1, ... with the given 0/1 results."""
    (d / name).write_text("".join(json.dumps({"problem_id": f"p{i}", "samples": [{"kind": "greedy", "passed": bool(v)}]})
                                  + "\n" for i, v in enumerate(passed)))


def job_with_samples(sweep: Path, name: str, method: str, seed: int, passed: list[int], base: list[int] | None = None,
                     **extra):
    m = job(method, seed, sum(passed) / len(passed), **extra)
    if base is not None:
        m["eval_base/pass@1"] = sum(base) / len(base)
    write_job(sweep, name, **m)
    write_samples(sweep / name, passed)
    if base is not None:
        write_samples(sweep / name, base, "eval_base_samples.jsonl")


def test_report_gives_intervals_differences_and_says_when_the_test_set_is_too_small(tmp_path, capsys):
    s = tmp_path / "s"
    none, ekt = [1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]
    for seed in (0, 1):
        job_with_samples(s, f"{seed}_none", "none", seed, none, **{"seed/teacher": 0})
        job_with_samples(s, f"{seed}_ekt", "ekt", seed, ekt, base=none, **{"seed/teacher": 0})
    assert main([str(s), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    ci = pd.read_csv(tmp_path / "out" / "report_ci.csv").set_index(["config", "metric"])
    assert ci.loc[("ekt", "eval/pass@1"), "value"] == 0.25 and ci.loc[("ekt", "eval/pass@1"), "seeds"] == 2
    assert ci.loc[("ekt", "eval/pass@1"), "ci95_lo"] < 0.25 < ci.loc[("ekt", "eval/pass@1"), "ci95_hi"]
    assert ci.loc[("ekt", "eval_base/pass@1"), "value"] == 0.125
    diffs = pd.read_csv(tmp_path / "out" / "report_differences.csv")
    assert list(zip(diffs["a"], diffs["b"])) == [("ekt", "none"), ("ekt", "base student")]
    row = diffs.iloc[0]
    assert row["diff"] == 0.125 and row["p"] == 1.0 and not row["resolved"]  # one problem differs: p = 2/2
    # 8 problems: a sign-flip test needs 6 of them differing one way (6/8), above 2.80 x 0.5 / sqrt(8) = 0.50
    assert row["mde80"] == pytest.approx(0.75)
    assert "not resolvable at this size: the test set of 8 problems resolves differences of about 0.75" in out
    assert "no difference is resolved: the methods are not ranked" in out
    assert "ekt: seeds 0, 1 varied the student's training/eval seed only; the teacher pass was shared" in out
    assert "none: seeds 0, 1 varied the untrained student's evaluation sampling only" in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## paired differences" in md and "| ekt | none | pass@1 | 8 | +0.125 |" in md


def test_a_resolved_difference_names_its_direction_and_pairs_without_none(tmp_path, capsys):
    s = tmp_path / "s"
    job_with_samples(s, "0_kd", "kd", 0, [0] * 20)
    job_with_samples(s, "1_ekt", "ekt", 0, [1] * 12 + [0] * 8)
    assert main([str(s)]) == 0
    out = capsys.readouterr().out
    assert "kd vs ekt (pass@1): -0.600 [" in out and "p=0.000488: kd lower (the interval excludes 0)" in out  # 2/2**12
    ci = pd.read_csv(s / "report_ci.csv").set_index(["config", "metric"])
    kd = ci.loc[("kd", "eval/pass@1")]
    assert kd["interval"] == "clopper-pearson" and kd["ci95_hi"] == pytest.approx(0.1684, abs=1e-4)
    assert ci.loc[("kd", "eval/pass@1_greedy"), "value"] == 0.0  # the greedy figure has its interval too
    assert "\nseeds: " not in out and "not ranked" not in out


def test_a_bad_samples_file_is_named_and_the_table_is_kept(tmp_path, capsys):
    s = tmp_path / "s"
    job_with_samples(s, "0_ekt", "ekt", 0, [1, 0])
    (s / "0_ekt" / "eval_samples.jsonl").write_text('{"problem_id": "p0", "samples": []}\nnot json\n')
    assert main([str(s)]) == 2
    assert "eval_samples.jsonl:2: not JSON" in capsys.readouterr().err
    assert (s / "report.csv").exists() and (s / "report.png").exists()


@pytest.mark.parametrize("extra, says", [
    ({}, "ekt: seeds 0, 1 varied `seed`; metrics.json does not record the teacher's seed"),
    ({"seed/teacher": "seed", "seed/teacher_mode": "per_seed"},
     "ekt: seeds 0, 1 varied the student's training/eval seed and the teacher's sampling (teacher seeds 0, 1) "
     "(seed/teacher_mode: per_seed)")])
def test_seeds_note_says_what_the_seeds_varied(tmp_path, extra, says):
    from codistill.report import seeds_note

    s = tmp_path / "s"
    for seed in (0, 1):
        m = {k: (seed if v == "seed" else v) for k, v in extra.items()}
        write_job(s, f"{seed}", **job("ekt", seed, 0.1, **m))
    assert seeds_note(load_sweep(s), s) == [says]


def test_variants_of_one_method_are_configurations_not_seeds(tmp_path, capsys):
    """Three on_policy jobs of one seed that differ in a swept option (a method group option, or
    method.feedback on the command line) are three rows with one seed each, not one with three."""
    s = tmp_path / "s"
    runs = [("0_kd", "kd", ["method=kd_cached"]), ("1_on", "on_policy", ["method=on_policy"]),
            ("2_on_failed", "on_policy", ["method=on_policy_failed_only"]),
            ("3_on_weighted", "on_policy", ["method=on_policy_weighted"])]
    for name, method, overrides in runs:
        job_with_samples(s, name, method, 0, [1, 0, 0, 0])
        (s / name / ".hydra").mkdir()
        (s / name / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in ["seed=0", *overrides, "experiment=repro_onpolicy_offline"]))
    assert main([str(s), "--out", str(tmp_path / "out")]) == 0
    ci = pd.read_csv(tmp_path / "out" / "report_ci.csv")
    rows = ci[ci["metric"] == "eval/pass@1"]
    assert sorted(rows["config"]) == ["kd", "on_policy", "on_policy_failed_only", "on_policy_weighted"]
    assert set(rows["seeds"]) == {1}
    t = tmp_path / "t"  # a swept method option on the command line
    for i, fb in enumerate(["none", "failed_only"]):
        job_with_samples(t, f"{i}_fb", "on_policy", 0, [1, 0, 0, 0])
        (t / f"{i}_fb" / ".hydra").mkdir()
        (t / f"{i}_fb" / ".hydra" / "overrides.yaml").write_text(
            f"- seed=0\n- method=on_policy\n- method.feedback={fb}\n- hydra.run.dir=/x/{i}\n")
    assert main([str(t), "--out", str(tmp_path / "out2")]) == 0
    rows = pd.read_csv(tmp_path / "out2" / "report_ci.csv")
    assert sorted(set(rows["config"])) == ["on_policy | method.feedback=failed_only", "on_policy | method.feedback=none"]
    assert "overrides" in pd.read_csv(tmp_path / "out2" / "report.csv").columns  # what each job set, in the CSV
