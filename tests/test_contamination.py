"""Train/test overlap (codistill.datasets.contamination): exact and near duplicates by word
n-gram containment, the config's checks, and the run that fails before training on them."""

from __future__ import annotations

import json
import random
import time

import pytest
from conftest import run_cli

from codistill.config import ConfigError, DecontaminationConfig, validate
from codistill.datasets.contamination import DataContaminationError, check, measure, words
from codistill.tasks.base import Problem

# 40 words: long enough for 13-grams
LONG = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May if each friend bought exactly "
        "one clip from her and nobody bought twice?")
OTHER = ("A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does "
         "it take to make seven robes for the members of the choir who sing at the winter concert?")


def p(pid: str, question: str, **meta) -> Problem:
    return Problem(id=pid, question=question, meta=meta)


def test_words_normalise_case_punctuation_and_whitespace():
    assert words("  Hello,\n  WORLD!  x+y ") == ("hello", "world", "x", "y")


def test_exact_duplicate_hidden_by_formatting_is_found():
    copy = LONG.upper().replace(" ", "  \n").replace(",", " ;")
    r = measure([p("train/1", OTHER), p("train/2", copy)], [p("test/1", LONG), p("test/2", "What is 2 + 2?")])
    assert (r.checked, r.exact, r.near) == (2, 1, 1)
    [m] = r.matches
    assert (m.test_id, m.train_id, m.exact, m.overlap) == ("test/1", "train/2", True, 1.0)


def test_near_duplicate_is_the_share_of_test_ngrams_in_one_training_problem():
    toks = LONG.split()
    near = " ".join(toks[:30] + ["several"] + toks[31:])  # one word changed: 13 of its 13-grams break
    far = " ".join(toks[:20]) + " " + OTHER  # only a third of LONG's n-grams survive
    n_grams = len(words(LONG)) - 12
    r = measure([p("near", near), p("far", far)], [p("t", LONG)], threshold=0.5)
    [m] = r.matches
    assert m.train_id == "near" and not m.exact
    assert m.overlap == pytest.approx((n_grams - 13) / n_grams)
    assert measure([p("far", far)], [p("t", LONG)], threshold=0.5).near == 0
    assert measure([p("far", far)], [p("t", LONG)], threshold=0.2).near == 1  # the threshold decides
    assert measure([p("x", OTHER)], [p("t", LONG)]).near == 0


def test_short_texts_are_compared_whole_only():
    """Fewer words than the n-gram: exact duplicates only (a common snippet is no copy)."""
    r = measure([p("a", "Reverse a string."), p("b", "Reverse a string and count its vowels, then...")],
                [p("t", "reverse a STRING")])
    assert (r.exact, r.near) == (1, 1) and r.matches[0].train_id == "a"
    assert measure([p("b", "Reverse a string and count its vowels")], [p("t", "reverse a string")]).near == 0


def test_reference_code_is_compared_too():
    """Code Alpaca -> HumanEval: a training row whose reference is a HumanEval solution is found
    by its code even when the instruction is worded differently."""
    from codistill.datasets.humaneval import read_humaneval

    he = read_humaneval()
    target = he[0]
    ref = target.meta["prompt"] + target.meta["canonical_solution"]
    train = [p("ca/1", "Write a function that checks whether two numbers in a list are close.", reference=ref),
             p("ca/2", "Add two numbers.", reference="def add(a, b):\n    return a + b\n")]
    r = measure(train, he[:5])
    assert [(m.test_id, m.train_id) for m in r.matches] == [("HumanEval/0", "ca/1")]
    assert r.matches[0].overlap == 1.0


def test_humaneval_against_thousands_of_training_problems_takes_seconds():
    from codistill.datasets.humaneval import read_humaneval

    he = read_humaneval()
    rng = random.Random(0)
    vocab = sorted({w for q in he for w in words(q.question + q.meta["canonical_solution"])})
    train = [p(f"ca/{i}", " ".join(rng.choices(vocab, k=40)), reference=" ".join(rng.choices(vocab, k=80)))
             for i in range(5000)]
    train[1234] = p("ca/1234", "Implement this.", reference=he[7].meta["prompt"] + he[7].meta["canonical_solution"])
    t0 = time.perf_counter()
    r = measure(train, he)
    took = time.perf_counter() - t0
    assert ("HumanEval/7", "ca/1234") in [(m.test_id, m.train_id) for m in r.matches]
    assert took < 30, f"{took:.1f} s"  # about 2 s on one core


def test_check_records_the_pairs_and_fails_above_the_fraction(tmp_path):
    train = [p("train/1", LONG), p("train/2", OTHER)]
    test = [p("test/1", LONG), p("test/2", "Something else entirely.")]
    metrics: dict = {}
    with pytest.raises(DataContaminationError, match=r"1/2 test problems .* test/1 ~ train/1 \(exact, question\)"):
        check(DecontaminationConfig(max_near_dup_fraction=0.4), train, test, tmp_path, metrics)
    assert metrics["data/contamination/near"] == 1 and metrics["data/contamination/fraction"] == 0.5
    rows = [json.loads(x) for x in (tmp_path / "contamination.jsonl").read_text().splitlines()]
    assert rows == [{"test_id": "test/1", "train_id": "train/1", "overlap": 1.0, "field": "question", "exact": True}]
    # at or below the allowed fraction: recorded, not fatal; disabled: nothing measured
    assert check(DecontaminationConfig(max_near_dup_fraction=0.5), train, test, tmp_path, {}).near == 1
    off: dict = {}
    assert check(DecontaminationConfig(enabled=False), train, test, tmp_path, off) is None
    assert off == {"data/contamination/enabled": False}


@pytest.mark.parametrize("override, key", [
    ("decontamination.ngram=0", "decontamination.ngram"),
    ("decontamination.near_dup_threshold=0", "decontamination.near_dup_threshold"),
    ("decontamination.max_near_dup_fraction=1.5", "decontamination.max_near_dup_fraction"),
])
def test_config_checks_name_the_key(compose, override, key):
    with pytest.raises(ConfigError, match=key):
        validate(compose(override))
    rc = validate(compose())
    assert (rc.decontamination.enabled, rc.decontamination.ngram, rc.decontamination.near_dup_threshold,
            rc.decontamination.max_near_dup_fraction) == (True, 13, 0.5, 0.1)


def test_seed_metrics_say_what_the_seeds_vary(compose):
    assert validate(compose("seed=3")).seed_metrics() == {"seed/teacher": 3, "seed/teacher_mode": "per-run"}
    assert validate(compose("seed=3", "teacher_seed=0")).seed_metrics() == {"seed/teacher": 0,
                                                                          "seed/teacher_mode": "shared"}


def test_a_run_training_on_its_test_problems_fails_before_any_model_loads(tmp_path):
    """One GSM8K file on both sides: the run fails in the data stage naming the pairs, before the
    baseline evaluation (experiment=smoke has eval.baseline=true) or the method loads a model."""
    rows = [(LONG, 5), (OTHER, 14), ("Tom has 2 apples and buys 3 more. How many apples does he have?", 5)]
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": f"#### {a}"}) + "\n" for q, a in rows))
    run_dir = tmp_path / "run"
    proc = run_cli(["experiment=smoke", "dataset=gsm8k", f"dataset.train_file={data}", f"dataset.test_file={data}",
                    "dataset.train_size=null", "dataset.test_size=null", "logger=csv", f"hydra.run.dir={run_dir}"],
                   cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode != 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("DataContaminationError: 3/3 test problems")
    assert "gsm8k/test/1 ~ gsm8k/train/1 (exact, question)" in m["error"]
    assert (m["data/contamination/exact"], m["data/contamination/near"], m["data/contamination/checked"]) == (3, 3, 3)
    assert (m["seed/teacher"], m["seed/teacher_mode"]) == (0, "per-run")
    assert len((run_dir / "contamination.jsonl").read_text().splitlines()) == 3
    assert not (run_dir / "eval_base_samples.jsonl").exists() and not (run_dir / "generations.jsonl").exists()
    assert not (tmp_path / "cache" / "generations").exists()
