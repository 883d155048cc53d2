"""The PERsD family: what each method's training set contains, on real models and real execution.

The student (SmolLM2-135M-Instruct) fails most HumanEval problems; the teacher
(Qwen2.5-Coder-0.5B-Instruct) refines its failed attempts given the execution feedback.  The
three methods share the generation cache (same student attempts, same teacher prompts), so only
the first pays for generation.
"""

import json
from pathlib import Path

import pytest

from conftest import run_cli

# easy problems (SmolLM2 fails them greedy; the 0.5B coder solves them greedy)
EASY = ["HumanEval/7", "HumanEval/30", "HumanEval/42"]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cache_root():
    """The user's cache: the converted models and the content-addressed generation cache."""
    from codistill.models import default_cache_dir

    return default_cache_dir()


@pytest.mark.slow
@pytest.mark.packaged_models
@pytest.mark.parametrize("method", ["persd", "persd_refine", "persd_combined"])
def test_training_set_holds_passing_refinements_of_failed_problems(method, compose, cache_root, tmp_path):
    from codistill.config import validate
    from codistill.datasets.humaneval import read_humaneval
    from codistill.execution import run_programs
    from codistill.methods import RunContext, build_method
    from codistill.tasks import build_task

    cfg = compose(f"method={method}", "dataset=humaneval", "model@teacher=qwen2.5-coder-0.5b-instruct",
                  "model@student=smollm2-135m-instruct", "sampling.n=2", "sampling.temperature=0.6",
                  "sampling.max_new_tokens=160", "generation.batch_size=4", f"cache_dir={cache_root}")
    rc = validate(cfg)
    task = build_task(rc.dataset.task, rc.task)
    by_id = {p.id: p for p in read_humaneval()}
    train = [by_id[i] for i in EASY]
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=task, train=train, test=[], cache_dir=str(cache_root))
    result = build_method(rc).build(ctx)

    gens = _read(tmp_path / "generations.jsonl")
    rows = _read(tmp_path / "train_set.jsonl")
    attempts = {g["problem_id"]: g for g in gens if g["stage"] == "student_attempt"}
    refinements = [g for g in gens if g["stage"] == "teacher_refinement"]
    failed = {pid for pid, g in attempts.items() if not g["passed"]}
    m = result.metrics
    assert set(attempts) == set(EASY)
    assert m["data/student_solved"] + m["data/sent_to_teacher"] == len(EASY) == m["data/n_problems"]
    assert m["data/sent_to_teacher"] == len(failed) >= 2, "the student should fail most of these problems"
    # only failed problems went to the teacher, sampling.n refinements each, with the feedback in the prompt
    assert {g["problem_id"] for g in refinements} == failed
    assert len(refinements) == 2 * len(failed) == m["data/n_samples"]
    for g in refinements:
        a = attempts[g["problem_id"]]
        assert a["feedback"] and a["feedback"] in g["prompt"] and a["program"].strip() in g["prompt"]
    assert m["data/n_passing"] == sum(g["passed"] for g in refinements) >= 1, "the teacher refined nothing"

    # the training set: passing refinements of failed problems only, in the method's kind(s)
    kinds = {"persd": {"persd"}, "persd_refine": {"persd_refine"},
             "persd_combined": {"persd", "persd_refine"}}[method]
    assert rows and len(rows) == len(result.pairs) == m["data/n_kept"]
    assert {r["kind"] for r in rows} == kinds
    passing = {(g["problem_id"], g["program"]) for g in refinements if g["passed"]}
    s_tok = ctx.tokenizer("student")
    for r, pair in zip(rows, result.pairs):
        assert (r["prompt"], r["completion"]) == (pair["prompt"], pair["completion"])
        assert r["problem_id"] in failed and (r["problem_id"], r["program"]) in passing
        prob, a = by_id[r["problem_id"]], attempts[r["problem_id"]]
        if r["kind"] == "persd":  # the plain task, as the student sees it at test time
            prompt = task.render(prob, s_tok, chat=True, shots=0)
        else:  # the task + the student's failed attempt + its feedback
            prompt = task.render_refine(prob, a["program"], a["feedback"], s_tok, chat=True)
            assert a["program"].strip() in r["prompt"] and a["feedback"] in r["prompt"]
        assert r["prompt"] == prompt.text
        assert r["completion"] == task.target(prompt, r["program"])
    if method == "persd_combined":  # both pairs for every kept refinement
        per = {}
        for r in rows:
            per.setdefault((r["problem_id"], r["program"]), set()).add(r["kind"])
        assert all(v == {"persd", "persd_refine"} for v in per.values())
    # every kept program really passes the hidden tests
    res = run_programs([task.check_program(by_id[r["problem_id"]], r["program"]) for r in rows], timeout_s=10)
    assert all(x.passed for x in res)


@pytest.mark.slow
def test_smoke_run_of_persd_refine_with_multi_step_eval(tmp_path):
    """The whole pipeline on tiny models: status ok, per-step eval figures, both jsonl files."""
    proc = run_cli(["experiment=smoke", "dataset=humaneval", "dataset.test_size=1", "dataset.train_size=2",
                    "method=persd_refine", "eval.refine_steps=1", "eval.baseline=false", "eval.n_samples=0",
                    "eval.k=[1]", "sampling.n=2", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["data/n_problems"] == 2
    assert metrics["data/student_solved"] + metrics["data/sent_to_teacher"] == 2
    assert metrics["eval/step0/pass@1"] == metrics["eval/pass@1"]
    assert "eval/step1/pass@1" in metrics and "eval/step1/greedy_n_refined" in metrics
    stages = {g["stage"] for g in _read(tmp_path / "run" / "generations.jsonl")}
    assert "student_attempt" in stages
    assert (tmp_path / "run" / "train_set.jsonl").exists()
