"""Evaluation figures: greedy and sampled pass@k are named apart, the headline ``eval/pass@1``
says where it comes from, and no pass@k is estimated from fewer than k samples."""

from types import SimpleNamespace

import pytest

from codistill.config import ConfigError, validate
from codistill.evaluation import pass_metrics


def judged(*passes_per_problem):
    """Per problem, one judged sample per verdict (only ``passed`` is read)."""
    return [[SimpleNamespace(passed=p) for p in ps] for ps in passes_per_problem]


def figures(ev, greedy, sampled, n):
    out = pass_metrics(greedy, "greedy", 1, ev, prefix="eval/") if ev.greedy else {}
    if ev.n_samples:
        out.update(pass_metrics(sampled, "sampled", n, ev, prefix="eval/"))
    return out


def test_greedy_beside_samples_is_named_apart_and_the_headline_is_sampled():
    """Issue 14: a greedy pass@1 of 1.0 beside 2 samples at T>0 (one right of two per problem):
    the headline pass@1 and pass@2 come from the same samples, so pass@1 <= pass@2."""
    ev = SimpleNamespace(greedy=True, n_samples=2, k=[1, 2])
    m = figures(ev, judged([True], [True]), judged([True, False], [False, False]), 2)
    assert m == {"eval/pass@1_greedy": 1.0, "eval/pass@1": 0.25, "eval/pass@2": 0.5, "eval/pass@1_source": "sampled"}
    assert m["eval/pass@1"] <= m["eval/pass@2"]


def test_greedy_alone_is_the_headline():
    ev = SimpleNamespace(greedy=True, n_samples=0, k=[1])
    m = figures(ev, judged([True], [False], [False], [True]), None, 0)
    assert m == {"eval/pass@1_greedy": 0.5, "eval/pass@1": 0.5, "eval/pass@1_source": "greedy"}


def test_k_above_n_is_refused_at_evaluation():
    ev = SimpleNamespace(greedy=False, n_samples=2, k=[1, 5])
    with pytest.raises(ValueError, match=r"eval\.k: pass@5 .*eval\.n_samples"):
        pass_metrics(judged([True, False]), "sampled", 2, ev, prefix="eval/")


@pytest.mark.parametrize("overrides", [("eval.n_samples=2", "eval.k=[1,2,4]"), ("eval.n_samples=0", "eval.k=[2]")])
def test_k_above_n_is_refused_naming_both_keys(compose, overrides):
    with pytest.raises(ConfigError, match=r"eval\.k: pass@\d+ needs eval\.n_samples >= \d+.*got eval\.n_samples="):
        validate(compose(*overrides))
