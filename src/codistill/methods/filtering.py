"""Keep what passed: the filter shared by the methods that train on executed samples.

``ekt`` and ``stand`` (teacher samples) and ``expert_iteration`` (the student's own
samples) all judge their samples the same way (:func:`codistill.tasks.judge.judge_completions`)
and turn the passing ones into zero-shot (prompt -> program) training pairs here.
"""

from __future__ import annotations

from codistill.plugins import check, choice
from codistill.tasks.base import Problem, normalize_program
from codistill.tasks.judge import Judged


KEEP_POLICIES = ("first", "unique")


def check_keep(keep: str, max_per_problem: int | None, key: str) -> None:
    """The keep policy shared by the filtering methods (ekt and its kin, expert_iteration, persd)."""
    choice(keep, f"{key}.keep", KEEP_POLICIES)
    check(max_per_problem is None or max_per_problem >= 1, f"{key}.max_per_problem", "must be >= 1 or null")


def select_kept(judged: list[Judged], keep: str, max_per_problem: int | None = None) -> list[Judged]:
    """The passing samples to train on, per the keep policy (pure)."""
    passing = [j for j in judged if j.passed]
    if keep == "first":
        return passing[:1]
    seen, out = set(), []
    for j in passing:
        norm = normalize_program(j.program)
        if norm not in seen:
            seen.add(norm)
            out.append(j)
    return out[:max_per_problem] if max_per_problem else out


def generation_rows(problems: list[Problem], judged: list[list[Judged]], **extra) -> list[dict]:
    """One generations.jsonl row per sample (``extra`` fields, e.g. ``round``, on every row)."""
    return [{**extra, "problem_id": prob.id, "sample": idx, "gold": prob.answer, "completion": j.completion,
             "program": j.program, "status": j.status, "value": j.value, "passed": j.passed, "error": j.error}
            for prob, js in zip(problems, judged) for idx, j in enumerate(js)]


def kept_examples(ctx, problems: list[Problem], judged: list[list[Judged]], *, keep: str,
                  max_per_problem: int | None, source: str, select=None, **extra) -> list[dict]:
    """The train_set.jsonl rows made of the kept samples: the student's zero-shot prompt
    (``prompt``) and the program it learns to write after it (``completion``).  ``select``
    (one problem's samples -> the kept ones) replaces the keep policy (kd: unfiltered)."""
    cfg = ctx.cfg
    s_tok = ctx.tokenizer("student")
    rows = []
    for prob, js in zip(problems, judged):
        for j in (select(js) if select else select_kept(js, keep, max_per_problem)):
            sp = ctx.task.render(prob, s_tok, chat=cfg.student.chat, shots=0)
            rows.append({**extra, "problem_id": prob.id, "question": prob.question, "gold": prob.answer,
                         "program": j.program, "prompt": sp.text, "completion": ctx.task.target(sp, j.program),
                         "source": source})
    return rows


def pairs_of(examples: list[dict]) -> list[dict]:
    """The (prompt, completion) pairs the trainer reads."""
    return [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]


def filter_metrics(judged: list[list[Judged]], n_kept: int) -> dict:
    """Data figures of one judged batch (``judged``: one list of samples per problem)."""
    solved = sum(any(j.passed for j in js) for js in judged)
    return {
        "data/n_problems": len(judged),
        "data/n_samples": sum(len(js) for js in judged),
        "data/n_passing": sum(j.passed for js in judged for j in js),
        "data/n_kept": n_kept,
        "data/problems_solved": solved,
        "data/solve_rate": solved / max(len(judged), 1),
    }
