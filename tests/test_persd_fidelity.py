"""PERsD as the paper and the PersDistill code run it: the teacher's refinement guidance, the
student's sampled attempt, and, on GSM-style problems, feedback that hides the gold answer and a
filter that drops refinements stating a number instead of computing it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from codistill.config import validate
from codistill.tasks.base import REFINE_GUIDANCE, Problem
from codistill.tasks.gsm import GSMTask

PROBLEMS = [Problem(id="g/0", question="Tom has 3 boxes with 4 apples in each box. How many apples does he have?",
                    answer=12.0),
            Problem(id="g/1", question="A shelf holds 5 rows of 4 books. How many books are on the shelf?",
                    answer=20.0)]


@pytest.mark.parametrize("program, nothing", [
    ("def solution():\n    return 42\n", True),
    ("def solution():\n    \"\"\"The answer.\"\"\"\n    answer = 12\n    return answer\n", True),
    ("def solution():\n    return -3.5\n", True),
    ("def solution():\n    boxes = 3\n    return boxes * 4\n", False),
    ("def solution():\n    return sum([3, 4])\n", False),
    ("def solution():\n    total = 0\n    for _ in range(3):\n        total += 4\n    return total\n", False),
    ("def solution(:\n    return 42\n", False),  # does not parse: not judged here
])
def test_computes_nothing_on_pal_programs(program, nothing):
    assert GSMTask("pal").computes_nothing(program) is nothing


def test_computes_nothing_on_mathqa_programs():
    task = GSMTask("mathqa")
    assert task.computes_nothing("answer = 12\n")
    assert not task.computes_nothing("n0 = 3\nn1 = 4\nanswer = n0 * n1\n")


def test_code_tasks_never_reject_a_program_for_computing_nothing():
    from codistill.tasks.humaneval import HumanEvalTask

    assert not HumanEvalTask().computes_nothing("def f(x):\n    return 42\n")


def test_guidance_is_said_only_when_asked():
    from codistill.models.tiny import load_tiny_tokenizer

    task, tok = GSMTask("pal"), load_tiny_tokenizer()
    attempt = "def solution():\n    return 3 + 4\n"
    fb = "Wrong answer: solution() returned 7, which is not the correct answer."
    for chat in (True, False):
        teacher = task.render_refine(PROBLEMS[0], attempt, fb, tok, chat=chat, guidance=REFINE_GUIDANCE)
        student = task.render_refine(PROBLEMS[0], attempt, fb, tok, chat=chat)
        assert REFINE_GUIDANCE in teacher.text and REFINE_GUIDANCE not in student.text
        assert teacher.prefix == student.prefix and fb in teacher.text


def test_attempt_temperature_defaults_to_the_persdistill_setting(compose):
    for method in ("persd", "persd_refine", "persd_combined"):
        m = validate(compose(f"method={method}")).method
        assert (m.attempt_temperature, m.reveal_answer) == (0.3, False)


def _context(compose, tmp_path, name, *overrides):
    from codistill.methods import RunContext
    from codistill.tasks import build_task

    rc = validate(compose("experiment=smoke", "method=persd_combined", "sampling.n=2",
                          f"cache_dir={tmp_path / 'cache'}", *overrides))
    run_dir = tmp_path / name
    run_dir.mkdir()
    return RunContext(cfg=rc, run_dir=run_dir, task=build_task(rc.dataset.task, rc.task),
                      train=[dataclasses.replace(p) for p in PROBLEMS], test=[], cache_dir=str(tmp_path / "cache"))


def _build(ctx):
    from codistill.methods import build_method

    result = build_method(ctx.cfg).build(ctx)
    read = lambda f: [json.loads(x) for x in (ctx.run_dir / f).read_text().splitlines()]  # noqa: E731
    return result, read("generations.jsonl"), read("train_set.jsonl")


def _put_in_cache(ctx, role: str, sampling, answers: dict[str, list[str]]) -> None:
    """``role``'s completions of the given prompts, written where its generation cache keeps them
    (what an earlier run of that model would have left there)."""
    from codistill.generation import open_cache

    _, _, ident = ctx.backend(role)
    ctx.release(role)
    cache = open_cache(ctx.cache_dir, ident, sampling, ctx.cfg.data_seed)
    cache.path.unlink(missing_ok=True)
    cache.append(answers.items())


def test_persd_on_gsm_hides_the_answer_guides_the_teacher_and_drops_programs_that_compute_nothing(
        compose, tmp_path):
    """Real tiny models and the real sandbox; the models' answers that matter are put in their
    generation caches.  1: the student's attempts return wrong numbers; the teacher's prompts hold
    the guidance and feedback that does not name the gold answer.  2: the teacher answers each
    problem with one program stating the gold number and one computing it: both pass the
    verdict, only the computing one is trained on.  3: reveal_answer=true names the answer; with
    teacher_seed fixed, another seed reads the same (sampled, T=0.3) student attempts."""
    from codistill.config import SamplingConfig

    ctx = _context(compose, tmp_path, "first")
    rc, task = ctx.cfg, ctx.task
    stop = list(rc.sampling.stop or task.stop)
    s_tok = ctx.tokenizer("student")
    attempt_sampling = SamplingConfig(n=1, temperature=rc.method.attempt_temperature, top_p=rc.sampling.top_p,
                                      max_new_tokens=rc.sampling.max_new_tokens, stop=stop)
    _put_in_cache(ctx, "student", attempt_sampling,
                  {task.render(p, s_tok, chat=rc.student.chat, shots=0).text: [f"\n    return {wrong}\n```"]
                   for p, wrong in zip(PROBLEMS, ("3 + 4", "5 + 5"))})
    _, gens, _ = _build(ctx)
    attempts = [g for g in gens if g["stage"] == "student_attempt"]
    assert [a["feedback"] for a in attempts] == [
        "Wrong answer: solution() returned 7, which is not the correct answer.",
        "Wrong answer: solution() returned 10, which is not the correct answer."]
    prompts = {g["problem_id"]: g["prompt"] for g in gens if g["stage"] == "teacher_refinement"}
    assert set(prompts) == {"g/0", "g/1"}
    for a in attempts:
        assert a["feedback"] in prompts[a["problem_id"]] and REFINE_GUIDANCE in prompts[a["problem_id"]]
    assert "12" not in prompts["g/0"] and "20" not in prompts["g/1"]

    # 2. the teacher's answers
    ctx = _context(compose, tmp_path, "second")
    _put_in_cache(ctx, "teacher", dataclasses.replace(rc.sampling, stop=stop),
                  {prompts["g/0"]: ["\n    return 12\n```", "\n    boxes = 3\n    return boxes * 4\n```"],
                   prompts["g/1"]: ["\n    return 20\n```", "\n    rows = 5\n    return rows * 4\n```"]})
    result, gens2, rows = _build(ctx)
    refinements = [g for g in gens2 if g["stage"] == "teacher_refinement"]
    assert [(g["passed"], g["computes_nothing"]) for g in refinements] == [(True, True), (True, False)] * 2
    m = result.metrics
    assert (m["data/n_passing"], m["data/rejected_computes_nothing"], m["data/problems_solved"]) == (4, 2, 2)
    assert sorted((r["problem_id"], r["kind"]) for r in rows) == [
        ("g/0", "persd"), ("g/0", "persd_refine"), ("g/1", "persd"), ("g/1", "persd_refine")]
    assert {r["program"].split("\n")[1].strip() for r in rows} == {"boxes = 3", "rows = 5"}
    student_prompts = [r["prompt"] for r in rows if r["kind"] == "persd_refine"]
    assert student_prompts and all(REFINE_GUIDANCE not in p for p in student_prompts)

    # 3. reveal_answer; another seed with the same teacher_seed
    _, gens3, _ = _build(_context(compose, tmp_path, "third", "method.reveal_answer=true", "seed=1", "teacher_seed=0"))
    assert [g["feedback"] for g in gens3 if g["stage"] == "student_attempt"] == [
        "Wrong answer: solution() returned 7\nExpected: 12", "Wrong answer: solution() returned 10\nExpected: 20"]
