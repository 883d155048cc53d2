"""Uncertainty of pass@k figures: confidence intervals, paired differences, detectable effects.

A test set of a few dozen problems cannot tell 0.30 from 0.35, so every figure the project
prints carries its uncertainty.  The unit of resampling is the *problem* (the test set is a
sample of problems; the completions of one problem are not independent of each other), and,
where a configuration ran with several seeds, the *seed* too.

The inputs are per-problem scores: a problem's unbiased pass@k estimate from its ``n``
samples of which ``c`` passed (:func:`problem_scores`; a greedy completion is ``n = 1``,
``c`` in {0, 1}), one row per seed, one column per problem -- the same problems, in the same
order, in every row and for every method being compared (:func:`align`).

Every function here is pure (numpy in, numbers out) and deterministic: the bootstrap and the
Monte Carlo test draw from a fixed-seed generator, so a report is reproducible to the digit.
The helpers at the end read those scores from a run's ``eval_samples.jsonl``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from codistill.execution.passk import pass_at_k

N_BOOTSTRAP = 2000
SEED = 20240607
#: sign-flip test: every one of the 2**m sign assignments up to this many non-zero differences
EXACT_MAX = 16
N_PERMUTATIONS = 20000
#: the spread of per-problem differences assumed when the data show none (see minimum_detectable_effect)
PLANNING_SD = 0.5


@dataclass(frozen=True)
class Estimate:
    """A pass@k figure with its 95% interval; ``how`` names the interval's method."""

    value: float
    lo: float
    hi: float
    n_problems: int
    n_seeds: int
    how: str  # "bootstrap" | "bootstrap+exact" | "clopper-pearson"

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


@dataclass(frozen=True)
class Difference:
    """``a - b`` over the same problems: the mean difference, its 95% interval, the two-sided
    p-value of the paired sign-flip test, and the minimum detectable effect of the test set."""

    diff: float
    lo: float
    hi: float
    p: float
    n_problems: int
    mde: float

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the data support a difference (in the sign of ``diff``)."""
        return not (self.lo <= 0.0 <= self.hi)

    def __str__(self) -> str:
        return f"{self.diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}], p={self.p:.3g}"


# --------------------------------------------------------------------------- per-problem scores
def problem_scores(n: np.ndarray | list[int], c: np.ndarray | list[int], k: int) -> np.ndarray:
    """Each problem's unbiased pass@k (execution/passk.py) from its ``n`` samples, ``c`` correct."""
    return np.array([pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n, c)], dtype=float)


def _as_matrix(scores) -> np.ndarray:
    """Scores as (seeds, problems): a 1-D array is one seed."""
    s = np.asarray(scores, dtype=float)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"scores must be (seeds, problems) with at least one of each, got shape {s.shape}")
    if np.isnan(s).any() or (s < 0).any() or (s > 1).any():
        raise ValueError("scores must lie in [0, 1] (a problem's pass@k)")
    return s


def align(runs: list[dict[str, float]]) -> tuple[list[str], np.ndarray]:
    """The problems every run scored (in the first run's order) and the (runs, problems) matrix."""
    if not runs:
        raise ValueError("align: no runs")
    common = [pid for pid in runs[0] if all(pid in r for r in runs[1:])]
    return common, np.array([[r[pid] for pid in common] for r in runs], dtype=float).reshape(len(runs), len(common))


# --------------------------------------------------------------------------- intervals
def clopper_pearson(successes: float, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion.

    ``lo = Beta(alpha/2; x, n-x+1)``, ``hi = Beta(1-alpha/2; x+1, n-x)`` quantiles, with the
    closed forms at the ends: ``x = 0`` gives ``[0, 1 - (alpha/2)**(1/n)]`` (0/10: [0, 0.3085]).
    Used where the bootstrap degenerates: every resample of all-0 (or all-1) results is 0 (1),
    and as a floor on its width near the ends (:func:`estimate`).
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"clopper_pearson: need 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    # a fractional count (a mean over seeds or samples times the problems) takes the same beta quantiles
    from scipy.stats import beta

    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def _weights(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """Bootstrap resamples as counts: row ``i`` says how often each of ``n`` units was drawn."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(float)


def bootstrap_means(scores, *, n_boot: int = N_BOOTSTRAP, seed: int = SEED,
                    problem_weights: np.ndarray | None = None) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean score, resampling seeds and problems.

    With several seeds the resampling is two-way: each replicate draws seeds with
    replacement and problems with replacement (the same problems for every seed drawn, since
    the seeds answered the same test set) -- the variation between seeds and the variation
    between problems both reach the interval.  With one seed it is the plain bootstrap over
    problems.  ``problem_weights`` (n_boot, problems): shared draws, for paired comparisons.
    """
    s = _as_matrix(scores)
    n_seeds, n_problems = s.shape
    rng = np.random.default_rng(seed)
    wp = _weights(rng, n_problems, n_boot) if problem_weights is None else problem_weights
    ws = _weights(rng, n_seeds, n_boot) if n_seeds > 1 else np.ones((n_boot, 1))
    return np.einsum("bs,sp,bp->b", ws, s, wp) / (n_seeds * n_problems)


def estimate(scores, *, alpha: float = 0.05, n_boot: int = N_BOOTSTRAP, seed: int = SEED) -> Estimate:
    """The mean score (pass@k) with a ``1 - alpha`` interval.

    A percentile bootstrap (:func:`bootstrap_means`); where every score is 0 (or every one is
    1) the bootstrap has no spread to show, and the exact Clopper-Pearson interval of 0 (n) out
    of n problems is given instead -- n problems, not seeds x problems: the seeds of one
    problem are not independent trials, so counting them would narrow the interval unduly.
    Near the ends the bootstrap is too narrow as well (one seed of three solving one problem of
    12: [0, 0.056], against [0, 0.265] for none solved), so the interval is the union of the
    bootstrap's and the Clopper-Pearson interval of ``mean x n`` (fractional) successes out of
    ``n`` problems (``how``: ``bootstrap+exact`` where the exact one widened it).
    """
    s = _as_matrix(scores)
    value = float(s.mean())
    n_seeds, n_problems = s.shape
    if (s == 0).all() or (s == 1).all():
        lo, hi = clopper_pearson(0 if (s == 0).all() else n_problems, n_problems, alpha)
        return Estimate(value, lo, hi, n_problems, n_seeds, "clopper-pearson")
    reps = bootstrap_means(s, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    lo, hi = float(min(lo, value)), float(max(hi, value))
    e_lo, e_hi = clopper_pearson(min(max(value * n_problems, 0.0), float(n_problems)), n_problems, alpha)
    kind = "bootstrap+exact" if e_lo < lo - 1e-12 or e_hi > hi + 1e-12 else "bootstrap"
    return Estimate(value, min(lo, e_lo), max(hi, e_hi), n_problems, n_seeds, kind)


# --------------------------------------------------------------------------- paired comparisons
def sign_flip_pvalue(d, *, n_perm: int = N_PERMUTATIONS, seed: int = SEED, exact_max: int = EXACT_MAX) -> float:
    """Two-sided p-value of the paired sign-flip (permutation) test of mean(d) = 0.

    Under the null of no difference each problem's difference is as likely to have either
    sign, so the observed ``|sum(d)|`` is compared with ``|sum(±d)|`` over sign assignments:
    all ``2**m`` of them when the ``m`` non-zero differences are at most ``exact_max`` (zeros
    flip to themselves), else ``n_perm`` random ones, counted as ``(1 + hits) / (1 + n_perm)``
    so that a Monte Carlo p-value is never 0.  E.g. d = (1, 1, 1): 2 of the 8 assignments reach
    |sum| >= 3, p = 0.25.
    """
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    m = len(d)
    if m == 0:
        return 1.0
    observed = abs(d.sum()) - 1e-12 * max(1.0, abs(d).sum())  # ties count as "as extreme"
    if m <= exact_max:
        signs = 1 - 2 * ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1)
        return float((np.abs(signs @ d) >= observed).mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 2000):
        signs = rng.choice([-1.0, 1.0], size=(min(2000, n_perm - start), m))
        hits += int((np.abs(signs @ d) >= observed).sum())
    return (1 + hits) / (1 + n_perm)


def minimum_detectable_effect(n_problems: int, sd: float = PLANNING_SD, *, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest true difference in pass rate that a paired comparison over ``n_problems``
    detects with probability ``power`` at two-sided level ``alpha`` (normal approximation):

        MDE = (z_{1-alpha/2} + z_{power}) * sd / sqrt(n)      (alpha .05, power .8: 2.80 sd/sqrt(n))

    ``sd`` is the standard deviation of the per-problem differences.  For 0/1 results whose
    discordant problems (one method right, the other wrong) are a fraction ``pi`` of the set,
    ``sd`` is about ``sqrt(pi)``; the default 0.5 is the planning value for methods that
    disagree on one problem in four.  E.g. 164 problems (HumanEval): 0.109; 4 problems: 0.70.
    """
    if n_problems < 1:
        raise ValueError(f"minimum_detectable_effect: n_problems must be >= 1, got {n_problems}")
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * sd / math.sqrt(n_problems)


def sign_test_floor(n_problems: int, alpha: float = 0.05) -> float:
    """The smallest difference in pass rate a two-sided sign-flip test over ``n_problems`` 0/1
    results can call significant at all: at least ``k`` problems must differ, all one way, where
    ``2 / 2**k <= alpha`` (``alpha`` .05: ``k`` = 6), each moving the mean by ``1 / n`` -- so
    ``k / n`` (capped at 1).  E.g. 12 problems: 0.5; 164: 0.037."""
    if n_problems < 1:
        raise ValueError(f"sign_test_floor: n_problems must be >= 1, got {n_problems}")
    k = math.ceil(math.log2(2 / alpha) - 1e-12)
    return min(1.0, k / n_problems)


def paired_difference(a, b, *, alpha: float = 0.05, n_boot: int = N_BOOTSTRAP, seed: int = SEED) -> Difference:
    """``mean(a) - mean(b)`` for two configurations scored on the same problems (columns).

    ``a`` and ``b`` are (seeds, problems) each; their seeds need not match.  The interval is a
    percentile bootstrap that draws the problems once per replicate for both (the pairing:
    a hard problem is hard for both) and each side's seeds separately.  The p-value is the
    sign-flip test on the per-problem differences of the seed means.  The minimum detectable
    effect is the normal approximation with the observed spread of those differences, never
    below :data:`PLANNING_SD` (a spread seen on a handful of differing problems -- or none --
    says little about how much two methods can disagree), and never below
    :func:`sign_test_floor` (the test cannot reject with fewer differing problems): a test set
    of 12 problems resolves about 0.5, not the 0.04 that one differing problem's tiny spread
    would give.
    """
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired_difference: a and b must score the same problems, got {a.shape[1]} and {b.shape[1]}")
    n = a.shape[1]
    d = a.mean(axis=0) - b.mean(axis=0)
    diff = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    mde = max(minimum_detectable_effect(n, max(sd, PLANNING_SD), alpha=alpha), sign_test_floor(n, alpha))
    if np.all(d == d[0]) and a.shape[0] == 1 and b.shape[0] == 1:  # no spread to resample
        return Difference(diff, diff, diff, sign_flip_pvalue(d, seed=seed), n, mde)
    rng = np.random.default_rng(seed)
    wp = _weights(rng, n, n_boot)
    reps = (bootstrap_means(a, n_boot=n_boot, seed=seed + 1, problem_weights=wp)
            - bootstrap_means(b, n_boot=n_boot, seed=seed + 2, problem_weights=wp))
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Difference(diff, float(min(lo, diff)), float(max(hi, diff)), sign_flip_pvalue(d, seed=seed), n, mde)


# --------------------------------------------------------------------------- reading a run's samples
def read_samples(path: str | Path) -> list[dict]:
    """The rows of an ``eval*_samples.jsonl`` (one per problem: ``problem_id``, ``samples``).

    Raises ValueError naming the file and line of a row that is not such an object."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not JSON ({e})") from None
        if not isinstance(row, dict) or "problem_id" not in row or not isinstance(row.get("samples"), list):
            raise ValueError(f"{path}:{i}: expected an object with 'problem_id' and a 'samples' list")
        rows.append(row)
    return rows


def counts(rows: list[dict], kind: str) -> dict[str, tuple[int, int]]:
    """problem id -> (samples, passed) over the plain attempts of ``kind`` ("greedy" or
    "sampled"; refinement steps excluded); problems without such a sample are left out."""
    out: dict[str, tuple[int, int]] = {}
    for row in rows:
        plain = [s for s in row["samples"] if s.get("kind", kind) == kind and not s.get("step")]
        if plain:
            out[str(row["problem_id"])] = (len(plain), sum(bool(s.get("passed")) for s in plain))
    return out


def scores(rows: list[dict], k: int = 1, kind: str | None = None, *, target: float | None = None) -> dict[str, float]:
    """problem id -> that problem's pass@k from its samples.

    ``kind`` None: for k = 1 the greedy samples when there are any, else the sampled ones --
    unless ``target`` (the run's reported pass@1) is given and only the other kind reproduces
    it (a run whose headline pass@1 comes from sampled completions); for k > 1 the sampled ones.
    """
    if kind is None:
        kinds = ["greedy", "sampled"] if k == 1 else ["sampled"]
        found = [(kd, c) for kd in kinds if (c := counts(rows, kd))]
        if not found:
            return {}
        kind, cnt = found[0]
        if target is not None:
            for kd, c in found:
                if abs(np.mean([pass_at_k(n, p, k) for n, p in c.values()]) - target) < 1e-9:
                    kind, cnt = kd, c
                    break
    else:
        cnt = counts(rows, kind)
    return {pid: pass_at_k(n, c, k) for pid, (n, c) in cnt.items() if k <= n or k == 1}


# --------------------------------------------------------------------------- a run's figures
_PASS_KEY = re.compile(r"^pass@(\d+)(_greedy)?$")


def sample_scores(path: str | Path, metrics: dict, prefix: str) -> dict[str, dict[str, float]]:
    """figure -> (problem id -> score) for every ``<prefix>pass@k`` (and ``pass@1_greedy``) in
    ``metrics`` that the samples file can rebuild; {} when the file is missing.  pass@1 follows
    the kind of sample the run's headline came from: ``<prefix>pass@1_source`` where recorded,
    else the kind that reproduces the reported figure (greedy first)."""
    path = Path(path)
    if not path.exists():
        return {}
    rows = read_samples(path)
    out = {}
    for key in sorted(metrics):
        m = _PASS_KEY.match(key[len(prefix):]) if key.startswith(prefix) else None
        if not m:
            continue
        k, kind = int(m.group(1)), "greedy" if m.group(2) else None
        if k == 1 and kind is None and metrics.get(f"{prefix}pass@1_source") in ("greedy", "sampled"):
            kind = metrics[f"{prefix}pass@1_source"]
        s = scores(rows, k, kind, target=metrics.get(key) if k == 1 and kind is None else None)
        if s:
            out[key[len(prefix):]] = s
    return out


def run_ci_metrics(run_dir: str | Path, metrics: dict) -> dict[str, float]:
    """The uncertainty figures of one run, from its samples files, as metrics.json keys:

    * ``eval/pass@k_ci95_lo`` / ``_hi`` (and ``eval_base/...`` for the untrained student,
      ``train/fit_pass@1_ci95_...`` for the fit check): 95% interval over the test problems;
    * ``eval/delta_vs_base/pass@1`` (trained - base over the same problems) with
      ``_ci95_lo`` / ``_ci95_hi``, the sign-flip test's ``_p`` and the test set's minimum
      detectable effect at 80% power, ``_mde80``, over ``_n_problems`` problems scored by
      both, when the base student was evaluated.
    """
    run_dir = Path(run_dir)
    out: dict[str, float] = {}
    found = {}
    for prefix, name in (("eval/", "eval_samples.jsonl"), ("eval_base/", "eval_base_samples.jsonl"),
                         ("train/fit_", "eval_fit_samples.jsonl")):
        found[prefix] = sample_scores(run_dir / name, metrics, prefix)
        for name, s in found[prefix].items():
            e = estimate(list(s.values()))
            out[f"{prefix}{name}_ci95_lo"], out[f"{prefix}{name}_ci95_hi"] = e.lo, e.hi
    if "pass@1" in found["eval/"] and "pass@1" in found["eval_base/"]:
        ids, m = align([found["eval/"]["pass@1"], found["eval_base/"]["pass@1"]])
        if ids:
            d = paired_difference(m[0], m[1])
            key = "eval/delta_vs_base/pass@1"
            out.update({key: d.diff, f"{key}_ci95_lo": d.lo, f"{key}_ci95_hi": d.hi, f"{key}_p": d.p,
                        f"{key}_mde80": d.mde, f"{key}_n_problems": d.n_problems})
    return out
