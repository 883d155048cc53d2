"""codistill.stats against known values: exact intervals, hand-computed p-values, coverage."""

import json

import numpy as np
import pytest

from codistill import stats as S


def test_clopper_pearson_known_values():
    assert S.clopper_pearson(0, 10) == pytest.approx((0.0, 0.3084971), abs=1e-6)  # 1 - 0.025**(1/10)
    assert S.clopper_pearson(10, 10) == pytest.approx((0.6915029, 1.0), abs=1e-6)
    assert S.clopper_pearson(3, 10) == pytest.approx((0.0667395, 0.6524529), abs=1e-6)  # R: binom.test(3, 10)
    with pytest.raises(ValueError, match="successes <= trials"):
        S.clopper_pearson(11, 10)


def test_all_zero_or_all_one_uses_the_exact_interval_not_a_degenerate_bootstrap():
    e = S.estimate(np.zeros(10))
    assert (e.value, e.how) == (0.0, "clopper-pearson") and e.hi == pytest.approx(0.3084971, abs=1e-6)
    e = S.estimate(np.ones((3, 10)))  # 3 seeds: still 10 problems' worth of evidence
    assert e.how == "clopper-pearson" and e.lo == pytest.approx(0.6915029, abs=1e-6) and e.n_seeds == 3


def test_sign_flip_pvalue_by_hand():
    assert S.sign_flip_pvalue([1, 1, 1]) == 0.25  # 2 of 8 sign assignments reach |sum| = 3
    assert S.sign_flip_pvalue([1, 1, -1, 1, 0, 0]) == 0.625  # zeros drop; |sum| >= 2 in 10 of 16
    assert S.sign_flip_pvalue([0, 0]) == 1.0
    assert S.sign_flip_pvalue([0.5, 0.25]) == 0.5  # 2 of 4 reach 0.75
    mc = S.sign_flip_pvalue([1] * 20)  # Monte Carlo beyond 16 non-zero: never 0, about 2/2**20
    assert 0 < mc <= 2 / (1 + S.N_PERMUTATIONS)


def test_minimum_detectable_effect_formula():
    assert S.minimum_detectable_effect(164) == pytest.approx((1.959964 + 0.841621) * 0.5 / 164 ** 0.5, rel=1e-6)
    assert S.minimum_detectable_effect(4) == pytest.approx(0.7004, abs=1e-4)
    assert S.minimum_detectable_effect(100, sd=1.0) == pytest.approx(0.28016, abs=1e-4)


def test_bootstrap_interval_covers_the_true_rate_about_95_percent():
    rng = np.random.default_rng(1)
    hits = sum(S.estimate((rng.random(60) < 0.3).astype(float), n_boot=400, seed=i).covers(0.3) for i in range(200))
    assert 0.88 <= hits / 200 <= 0.99


def test_several_seeds_widen_the_interval_by_their_spread():
    s = np.array([[0.2] * 20, [0.8] * 20])  # every problem alike; the seeds disagree
    e = S.estimate(s)
    assert e.value == pytest.approx(0.5) and e.lo <= 0.25 and e.hi >= 0.75  # one-seed view: [0.5, 0.5]


def test_paired_difference_pairs_problems():
    rng = np.random.default_rng(0)
    hard = (rng.random(40) < 0.5).astype(float)
    better = np.maximum(hard, (rng.random(40) < 0.3))  # the same problems plus some more
    d = S.paired_difference(better, hard)
    assert d.diff == 0.15 and d.resolved and d.lo > 0
    assert d.p == 2 / 2 ** 6  # 6 problems differ, all one way: 2 of 64 sign assignments as extreme
    same = S.paired_difference(hard, hard)
    assert (same.diff, same.lo, same.hi, same.p) == (0.0, 0.0, 0.0, 1.0) and not same.resolved
    assert same.mde == pytest.approx(S.minimum_detectable_effect(40))  # nothing differs: the planning sd
    tiny = S.paired_difference([1, 0, 1, 0], [0, 0, 1, 0])
    assert not tiny.resolved and tiny.p == 1.0 and tiny.mde > 0.5
    with pytest.raises(ValueError, match="same problems"):
        S.paired_difference([1, 0], [1, 0, 1])


def test_the_detectable_effect_never_shrinks_with_a_tiny_observed_spread():
    """One problem of 12 differing by one seed in three has a spread of 0.048: the normal formula
    alone would claim 0.04 resolvable; a sign-flip test over 12 problems cannot reject below 6/12."""
    assert S.sign_test_floor(12) == 0.5 and S.sign_test_floor(164) == pytest.approx(6 / 164)
    assert S.sign_test_floor(4) == 1.0 and S.sign_test_floor(12, alpha=0.01) == pytest.approx(8 / 12)
    a = np.zeros((3, 12))
    a[0, 0] = 1.0  # one seed of three solved one problem
    d = S.paired_difference(a, np.zeros((3, 12)))
    assert d.diff == pytest.approx(1 / 36) and not d.resolved
    assert d.mde == 0.5  # max(2.80 x 0.5 / sqrt(12) = 0.404, 6 / 12)
    big = S.paired_difference(np.ones(164), (np.arange(164) % 2).astype(float))  # 82 differ one way
    assert big.resolved and big.mde == pytest.approx(2.8016 * 0.5015 / 164 ** 0.5, rel=1e-3)


def test_scores_from_samples_rows(tmp_path):
    rows = [{"problem_id": "a", "samples": [{"kind": "greedy", "passed": True},
                                             {"kind": "sampled", "passed": False}, {"kind": "sampled", "passed": True},
                                             {"kind": "greedy", "step": 1, "passed": False}]},
            {"problem_id": "b", "samples": [{"kind": "greedy", "passed": False},
                                             {"kind": "sampled", "passed": False}, {"kind": "sampled", "passed": False}]}]
    p = tmp_path / "eval_samples.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rows = S.read_samples(p)
    assert S.scores(rows) == {"a": 1.0, "b": 0.0}  # greedy, refinement steps left out
    assert S.scores(rows, 1, target=0.25) == {"a": 0.5, "b": 0.0}  # the headline came from sampled ones
    assert S.scores(rows, 2) == {"a": 1.0, "b": 0.0}
    ids, m = S.align([{"a": 1.0, "b": 0.0, "c": 1.0}, {"b": 1.0, "a": 0.0}])
    assert ids == ["a", "b"] and m.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    p.write_text('{"problem_id": "a", "samples": []}\n[1]\n')
    with pytest.raises(ValueError, match=r"eval_samples.jsonl:2: expected an object"):
        S.read_samples(p)


def test_sample_scores_follow_the_headline_source(tmp_path):
    rows = [{"problem_id": "a", "samples": [{"kind": "greedy", "passed": False},
                                             {"kind": "sampled", "passed": False}, {"kind": "sampled", "passed": True}]},
            {"problem_id": "b", "samples": [{"kind": "greedy", "passed": False},
                                             {"kind": "sampled", "passed": False}, {"kind": "sampled", "passed": False}]}]
    p = tmp_path / "eval_samples.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    m = {"eval/pass@1": 0.25, "eval/pass@1_source": "sampled", "eval/pass@1_greedy": 0.0, "eval/pass@2": 0.5,
         "eval_base/pass@1": 0.0}
    assert S.sample_scores(p, m, "eval/") == {"pass@1": {"a": 0.5, "b": 0.0}, "pass@1_greedy": {"a": 0.0, "b": 0.0},
                                              "pass@2": {"a": 1.0, "b": 0.0}}
    assert S.sample_scores(tmp_path / "missing.jsonl", m, "eval/") == {}



def test_an_interval_near_zero_is_never_narrower_than_the_exact_one():
    """One seed of three solving one problem of 12 is no surer than none solving any."""
    a = np.zeros((3, 12))
    a[0, 0] = 1.0
    e, zero = S.estimate(a), S.estimate(np.zeros((3, 12)))
    assert e.value == pytest.approx(1 / 36) and e.how == "bootstrap+exact"
    assert e.lo == 0.0 and e.hi >= zero.hi == pytest.approx(0.2646, abs=1e-3)
    mid = S.estimate((np.arange(40) % 2).astype(float))  # far from the ends both agree closely
    assert mid.lo < 0.5 < mid.hi and mid.hi - mid.lo < 0.4
