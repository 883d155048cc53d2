"""method=stand and method=expert_iteration: what their training sets hold, round by round."""

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_gsm8k(path: Path, rows) -> None:
    path.write_text("".join(json.dumps({"question": q, "answer": f"So {a}.\n#### {a}"}) + "\n" for q, a in rows))


EASY = [("Tom has 2 apples and buys 3 more. How many apples does he have?", 5),
        ("A box holds 6 pens. How many pens are in 4 boxes?", 24),
        ("Sara had 10 candies and ate 4. How many candies are left?", 6),
        ("There are 7 birds on a tree and 5 more arrive. How many birds are there now?", 12),
        ("A book costs 8 dollars. How much do 3 books cost?", 24),
        ("Each car has 4 wheels. How many wheels do 5 cars have?", 20)]
# a gold answer no honest program computes: stays unsolved, so later rounds must sample it again
UNSOLVABLE = [("Ben has 20 marbles and gives away 9. How many marbles does he have left?", 9137),
              ("Lily read 15 pages on Monday and 12 pages on Tuesday. How many pages did she read?", 4411)]


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("override,key", [("method.rounds=0", "method.rounds"),
                                          ("method.base_shots=-1", "method.base_shots"),
                                          ("method.keep=all", "method.keep")])
def test_expert_iteration_config_errors_name_the_key(compose, override, key):
    from codistill.config import ConfigError, validate

    with pytest.raises(ConfigError, match=key):
        validate(compose("experiment=smoke", "method=expert_iteration", override))


def test_stand_and_expert_iteration_compose(compose):
    from codistill.config import validate

    rc = validate(compose("experiment=smoke", "method=stand"))
    assert (rc.method.name, rc.method.keep) == ("stand", "first")
    rc = validate(compose("experiment=smoke", "method=expert_iteration", "method.rounds=3", "method.from_base=false"))
    assert (rc.method.name, rc.method.rounds, rc.method.from_base, rc.method.base_shots) == \
        ("expert_iteration", 3, False, None)


def test_unsolved_keeps_order_and_drops_solved():
    from codistill.methods.expert_iteration import unsolved
    from codistill.tasks.base import Problem

    ps = [Problem(id=str(i), question="q") for i in range(4)]
    assert [p.id for p in unsolved(ps, {"1": 1, "3": 2})] == ["0", "2"]
    assert unsolved(ps, {p.id: 1 for p in ps}) == []


def test_filter_helpers_record_every_sample_and_count_what_passed():
    from codistill.methods.filtering import filter_metrics, generation_rows, pairs_of
    from codistill.tasks.base import Problem
    from codistill.tasks.judge import Judged

    def j(program, passed):
        return Judged(completion=program, program=program, passed=passed, status="ok", value=None, error=None)

    probs = [Problem(id="a", question="qa", answer=1), Problem(id="b", question="qb", answer=2)]
    judged = [[j("x", False), j("y", True), j("y2", True)], [j("z", False)]]
    rows = generation_rows(probs, judged, round=3)
    assert [(r["problem_id"], r["sample"], r["passed"], r["round"]) for r in rows] == \
        [("a", 0, False, 3), ("a", 1, True, 3), ("a", 2, True, 3), ("b", 0, False, 3)]
    assert filter_metrics(judged, 1) == {"data/n_problems": 2, "data/n_samples": 4, "data/n_passing": 2,
                                         "data/n_kept": 1, "data/problems_solved": 1, "data/solve_rate": 0.5}
    assert filter_metrics([], 0)["data/solve_rate"] == 0.0
    assert pairs_of([{"prompt": "p", "completion": "c", "round": 1}]) == [{"prompt": "p", "completion": "c"}]


# --------------------------------------------------------------------------- rounds' training (tiny student)
def _ctx(compose, run_dir: Path, *overrides):
    from codistill.config import validate
    from codistill.methods import RunContext
    from codistill.tasks import build_task

    rc = validate(compose("experiment=smoke", "method=expert_iteration", "train.epochs=2", *overrides))
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(cfg=rc, run_dir=run_dir, task=build_task(rc.dataset.task, rc.task), train=[], test=[],
                      cache_dir=str(run_dir / "cache"))


def _weights(model) -> dict:
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


EXAMPLES = [{"prompt": f"# Question: {q}\ndef solution():", "completion": f"\n    return {a}"} for q, a in EASY]


def test_rounds_train_from_the_base_or_continue_and_resume_their_own_checkpoints(compose, tmp_path):
    """from_base=true: round 2 restarts from the base student (same data and seed -> round 1's
    weights again); from_base=false: round 2 trains round 1's student further.  Each round
    checkpoints in its own directory, and a rerun resumes from it instead of training again."""
    from codistill.methods.expert_iteration import ExpertIteration

    ctx = _ctx(compose, tmp_path / "base", "method.from_base=true")
    base = _weights(ctx.load("student", for_training=True)[0])
    ctx.release("student")
    method = ExpertIteration(ctx.cfg.method)
    s1, st1 = method.train_round(ctx, None, EXAMPLES, 1)
    w1 = _weights(s1)
    assert st1["train/steps"] >= 2 and not _same(w1, base)
    s2, _ = method.train_round(ctx, s1, EXAMPLES, 2)
    assert s2 is not s1 and _same(_weights(s2), w1)
    for r in (1, 2):
        assert (tmp_path / "base" / "rounds" / str(r) / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "base" / "checkpoints").exists()  # the run's own training stage writes there
    again, st = method.train_round(ctx, None, EXAMPLES, 1)  # a rerun: round 1 is already done
    assert _same(_weights(again), w1) and st["train/steps"] == st1["train/steps"]

    ctx = _ctx(compose, tmp_path / "cont", "method.from_base=false")
    method = ExpertIteration(ctx.cfg.method)
    c1, _ = method.train_round(ctx, None, EXAMPLES, 1)
    assert _same(_weights(c1), w1)  # round 1 always starts from the base student
    c2, _ = method.train_round(ctx, c1, EXAMPLES, 2)
    assert c2 is c1 and not _same(_weights(c2), w1)


def test_a_round_after_one_that_kept_nothing_draws_fresh_samples(compose, tmp_path):
    """Round 1 keeps nothing (the tiny random student cannot hit these golds), so round 2 samples
    the same base student on the same prompts: it must draw new samples, not round 1's from the
    generation cache (issue 14: 24 of 24 were identical)."""
    from codistill.methods.expert_iteration import ExpertIteration, round_seed
    from codistill.tasks.base import Problem

    ctx = _ctx(compose, tmp_path / "run", "method.rounds=2", "sampling.n=3")
    ctx.train = [Problem(id=f"u{i}", question=q, answer=float(a)) for i, (q, a) in enumerate(UNSOLVABLE)]
    result = ExpertIteration(ctx.cfg.method).build(ctx)
    gens = read_jsonl(tmp_path / "run" / "generations.jsonl")
    by_round = {r: [(g["problem_id"], g["sample"], g["completion"]) for g in gens if g["round"] == r] for r in (1, 2)}
    assert len(by_round[1]) == len(by_round[2]) == 6 and not any(g["passed"] for g in gens)
    assert [k[:2] for k in by_round[1]] == [k[:2] for k in by_round[2]]  # the same prompts again
    assert sum(a[2] != b[2] for a, b in zip(by_round[1], by_round[2])) == 6  # every sample drawn afresh
    assert result.metrics["data/round1/seed"] == ctx.cfg.data_seed
    assert result.metrics["data/round2/seed"] == round_seed(ctx.cfg.data_seed, 2) != ctx.cfg.data_seed
    assert len(list((tmp_path / "run" / "cache" / "generations").glob("*.jsonl"))) == 2  # one cache file per round


# --------------------------------------------------------------------------- whole runs
@pytest.mark.slow
def test_stand_on_a_humaneval_split_judges_teacher_code_with_the_tests(tmp_path):
    """The code task: the teacher's zero-shot completions run against the hidden tests."""
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=stand", "dataset=humaneval", "dataset.test_size=2",
                 "dataset.train_size=3", "sampling.n=2", "eval.n_samples=0", "eval.k=[1]", "eval.baseline=false",
                 "logger=csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "c")})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["method"] == "stand"
    assert m["data/split"] == "test=HumanEval/0..1 (2) train=HumanEval/2..4 (3)"
    gens = read_jsonl(run_dir / "generations.jsonl")
    assert [g["problem_id"] for g in gens] == [f"HumanEval/{i}" for i in (2, 2, 3, 3, 4, 4)]
    assert all(g["program"].startswith(("def ", "from ", "import ", "\n")) for g in gens)
    # random weights: nothing passes the tests, so nothing is kept
    assert not any(g["passed"] for g in gens) and m["data/n_kept"] == 0
    assert read_jsonl(run_dir / "train_set.jsonl") == []


@pytest.mark.slow
def test_expert_iteration_smoke_run_samples_every_round(tmp_path):
    """Tiny random student: nothing is solved, so every round samples every problem again,
    nothing is trained, and the run still ends ok with the per-round figures."""
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=expert_iteration", "method.rounds=2", "eval.baseline=false",
                 "eval.n_samples=0", "eval.k=[1]", "logger=wandb", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                env={"CODISTILL_CACHE": str(tmp_path / "c")}, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["method"] == "expert_iteration"
    gens = read_jsonl(run_dir / "generations.jsonl")
    assert [g["round"] for g in gens] == [1] * 24 + [2] * 24 and not any(g["passed"] for g in gens)
    assert (m["data/round1/sampled"], m["data/round2/sampled"], m["data/round2/solved"]) == (6, 6, 0)
    assert m["data/n_samples"] == 48 and m["data/n_kept"] == 0 and m["train/skipped"]
    assert read_jsonl(run_dir / "train_set.jsonl") == [] and not (run_dir / "rounds").exists()
    [wb] = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert list(wb.glob("run-*.wandb"))


@pytest.mark.packaged_models
@pytest.mark.slow
def test_stand_keeps_only_passing_zero_shot_teacher_programs(tmp_path, compose):
    """SmolLM2-135M as a zero-shot teacher: its prompts hold no exemplar, only passing
    programs are kept, and the student is trained on them with zero-shot prompts."""
    import dataclasses

    from codistill.config import validate
    from codistill.datasets import load_problems
    from codistill.execution import Program, run_programs
    from codistill.generation import GenerationCache, open_cache
    from codistill.methods.base import RunContext
    from codistill.models import load_tokenizer
    from codistill.tasks import build_task
    from codistill.tasks.gsm import answers_match

    problems = EASY[:4] + UNSOLVABLE[:1]
    write_gsm8k(tmp_path / "train.jsonl", problems)
    write_gsm8k(tmp_path / "test.jsonl", EASY[:1])
    run_dir = tmp_path / "run"
    overrides = ["experiment=smoke", "method=stand", "model@teacher=smollm2-135m-instruct", "dataset=gsm8k",
                 f"dataset.train_file={tmp_path}/train.jsonl", f"dataset.test_file={tmp_path}/test.jsonl",
                 "dataset.train_size=null", "dataset.test_size=null", "sampling.n=3", "sampling.temperature=0.7",
                 "sampling.max_new_tokens=48", "method.keep=unique", "generation.batch_size=15",
                 "eval.enabled=false", "logger=csv",
                 "decontamination.enabled=false"]  # the one test problem is a training problem (not evaluated)
    # the shared cache (CODISTILL_CACHE or ~/.cache/codistill): the packaged model is converted once
    p = run_cli([*overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("error")
    gens, kept = read_jsonl(run_dir / "generations.jsonl"), read_jsonl(run_dir / "train_set.jsonl")
    assert m["data/n_samples"] == len(gens) == 3 * 5
    assert 1 <= len(kept) == m["data/n_kept"] == m["train/examples"]
    gold = {f"gsm8k/train/{i + 1}": a for i, (_, a) in enumerate(problems)}
    results = run_programs([Program(k["program"], entry="solution") for k in kept], timeout_s=5)
    for k, r in zip(kept, results):
        assert r.passed and answers_match(r.value, gold[k["problem_id"]]), (k["program"], r)
        assert k["source"] == "teacher" and k["prompt"].endswith("def solution():") and "Question" not in k["prompt"]
    assert not {g["program"] for g in gens if not g["passed"]} & {k["program"] for k in kept}

    # the teacher was asked zero-shot: the prompts it answered (in the generation cache) hold
    # the zero-shot renders of the training problems, and none of the few-shot ones
    rc = validate(compose(*overrides))
    cache = os.path.expanduser(rc.cache_dir)
    task, (train, _) = build_task(rc.dataset.task, rc.task), load_problems(rc.dataset)
    tok = load_tokenizer(rc.teacher, cache)
    sampling = dataclasses.replace(rc.sampling, stop=list(rc.sampling.stop or task.stop))
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=task, train=train, test=[], cache_dir=cache)
    answered = set(open_cache(cache, ctx.backend("teacher")[2], sampling, rc.seed).load())
    zero_shot, few_shot = ({GenerationCache.prompt_key(task.render(q, tok, chat=rc.teacher.chat, shots=k).text)
                            for q in train} for k in (0, rc.task.num_shots))
    assert len(zero_shot) == 5 and zero_shot <= answered and not answered & few_shot


@pytest.mark.packaged_models
@pytest.mark.slow
def test_expert_iteration_resamples_only_unsolved_problems_and_trains_on_passing_programs(tmp_path):
    """SmolLM2-135M teaches itself for two rounds, continuing from round 1's weights."""
    from codistill.execution import Program, run_programs
    from codistill.tasks.gsm import answers_match

    problems = EASY[:4] + UNSOLVABLE[:1]
    write_gsm8k(tmp_path / "train.jsonl", problems)
    write_gsm8k(tmp_path / "test.jsonl", EASY[:1])
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=expert_iteration", "model@student=smollm2-135m-instruct", "dataset=gsm8k",
                 f"dataset.train_file={tmp_path}/train.jsonl", f"dataset.test_file={tmp_path}/test.jsonl",
                 "dataset.train_size=null", "dataset.test_size=null", "method.rounds=2", "method.from_base=false",
                 "method.base_shots=2", "sampling.n=2", "sampling.temperature=0.7", "sampling.max_new_tokens=48",
                 "generation.batch_size=10", "eval.enabled=false", "logger=csv", f"hydra.run.dir={run_dir}",
                 "decontamination.enabled=false"],  # the one test problem is a training problem (not evaluated)
                cwd=tmp_path, timeout=3600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("error")
    gens, kept = read_jsonl(run_dir / "generations.jsonl"), read_jsonl(run_dir / "train_set.jsonl")
    ids = [f"gsm8k/train/{i + 1}" for i in range(len(problems))]
    gold = dict(zip(ids, [a for _, a in problems]))

    # round 1 samples every problem; round 2 exactly those that round 1 left unsolved
    solved1 = {g["problem_id"] for g in gens if g["round"] == 1 and g["passed"]}
    assert [g["problem_id"] for g in gens if g["round"] == 1] == [i for i in ids for _ in range(2)]
    assert 1 <= len(solved1) <= 4
    assert [g["problem_id"] for g in gens if g["round"] == 2] == [i for i in ids if i not in solved1 for _ in range(2)]
    solved2 = solved1 | {g["problem_id"] for g in gens if g["round"] == 2 and g["passed"]}
    assert (m["data/round1/solved"], m["data/round2/solved"]) == (len(solved1), len(solved2))
    assert m["data/round1/solved"] <= m["data/round2/solved"] == m["data/problems_solved"]
    assert m["data/round1/sampled"] == 5 and m["data/round2/sampled"] == 5 - len(solved1)

    # the training set: only passing student programs, one per solved problem, tagged with its round
    assert len(kept) == m["data/n_kept"] == m["train/examples"] == len(solved2)
    results = run_programs([Program(k["program"], entry="solution") for k in kept], timeout_s=5)
    for k, r in zip(kept, results):
        assert r.passed and answers_match(r.value, gold[k["problem_id"]]), (k["program"], r)
        assert k["source"] == "student" and k["round"] == (1 if k["problem_id"] in solved1 else 2)
        assert k["prompt"].endswith("def solution():") and "Question" not in k["prompt"]
    assert ids[4] not in {k["problem_id"] for k in kept}  # the unsolvable one
    # round 1 was trained here, in its own directory; round 2 by the run's training stage
    assert m["train/round1/examples"] == len(solved1) and m["train/round1/steps"] >= 1
    assert (run_dir / "rounds" / "1" / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and m["train/steps"] >= 1
