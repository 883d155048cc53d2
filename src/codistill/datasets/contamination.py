"""Train/test overlap ("decontamination"): is a test problem already in the training problems?

A student trained on its own test problems scores what it memorised, not what it learned.
Every run measures, before any model loads for training, how many of its test problems (the
``eval_dataset``'s when one is set) have an exact or near duplicate among its training
problems, writes the pairs to ``<run dir>/contamination.jsonl`` and the figures to
``data/contamination/*``, and fails with :class:`DataContaminationError` when the share of
near duplicates is above ``decontamination.max_near_dup_fraction``.

How overlap is measured (pure functions, :func:`measure`):

1. Each problem gives up to two texts: its question (the task description, or HumanEval's
   prompt) and, for code tasks, its reference solution (``meta.reference``: MBPP, Code Alpaca;
   ``meta.canonical_solution``: HumanEval).  GSM problems give their question only.
2. :func:`words` normalises a text: lower case, punctuation and operators dropped, split into
   word tokens (``\\w+``), so whitespace, case and formatting do not hide a copy.
3. *Exact duplicate*: a test problem whose normalised question, or normalised code, equals a
   training problem's.
4. *Near duplicate*: the containment of a test text's word n-grams (``decontamination.ngram``,
   13 by default) in one training problem's n-grams (question and code together):
   ``|grams(test text) & grams(train problem)| / |grams(test text)|``; a test problem's
   overlap is the largest over its texts and every training problem, and it is a near
   duplicate when that is >= ``near_dup_threshold`` (exact duplicates count as near ones).
   The 13-gram is the size GPT-3's benchmarks were decontaminated with (Brown et al. 2020,
   "Language Models are Few-Shot Learners", appendix C), the usual choice since.  A text of
   fewer than ``ngram`` words has no n-gram; it is checked for exact duplicates only (GPT-3
   looked for such short texts whole inside the training text: here a few words such as
   ``return x + y`` would match half of any code corpus).

The index holds only the n-grams that occur in some test text, so a pass over the training
problems costs one hash look-up per training n-gram: HumanEval's 164 problems against
thousands of Code Alpaca rows take seconds.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from codistill.tasks.base import Problem

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
#: examples named in the error message
SHOWN = 5


class DataContaminationError(RuntimeError):
    """Too many test problems are (near) duplicates of training problems; the message names
    the first few (test id, train id, overlap)."""


def words(text: str) -> tuple[str, ...]:
    """The normalised word tokens of ``text``: lower case, punctuation dropped (pure)."""
    return tuple(_WORD.findall(text.lower()))


def ngrams(tokens: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    """The set of contiguous ``n``-token windows of ``tokens`` (empty when shorter) (pure)."""
    return {tokens[i:i + n] for i in range(len(tokens) - n + 1)}


def texts(problem: Problem) -> dict[str, str]:
    """The texts of ``problem`` that are compared: ``question`` and, for code, ``code``."""
    out = {"question": problem.question}
    code = problem.meta.get("reference") or problem.meta.get("canonical_solution")
    if isinstance(code, str) and code.strip():
        out["code"] = code
    return out


@dataclass
class Match:
    """A test problem's closest training problem."""

    test_id: str
    train_id: str
    overlap: float  # largest n-gram containment (1.0 for an exact duplicate)
    field: str  # the test text that matched: question | code
    exact: bool

    def row(self) -> dict:
        return {"test_id": self.test_id, "train_id": self.train_id, "overlap": round(self.overlap, 4),
                "field": self.field, "exact": self.exact}


@dataclass
class Report:
    checked: int
    exact: int
    near: int
    matches: list[Match] = field(default_factory=list)  # every near duplicate, largest overlap first

    @property
    def fraction(self) -> float:
        return self.near / self.checked if self.checked else 0.0

    def metrics(self) -> dict:
        return {"data/contamination/checked": self.checked, "data/contamination/exact": self.exact,
                "data/contamination/near": self.near, "data/contamination/fraction": round(self.fraction, 4)}


def measure(train: list[Problem], test: list[Problem], *, ngram: int = 13, threshold: float = 0.5) -> Report:
    """Exact and near duplicates of ``test`` problems among ``train`` problems (pure; see the
    module docstring)."""
    # 1-2. the test side: normalised texts, their n-grams, and an index n-gram -> (test, field)
    exact_index: dict[tuple[str, tuple[str, ...]], list[int]] = defaultdict(list)
    gram_index: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
    n_grams: dict[tuple[int, str], int] = {}
    for ti, p in enumerate(test):
        for f, text in texts(p).items():
            toks = words(text)
            if toks:
                exact_index[(f, toks)].append(ti)
            grams = ngrams(toks, ngram)
            n_grams[(ti, f)] = len(grams)
            for g in grams:
                gram_index[g].append((ti, f))

    # 3-4. one pass over the training problems
    best: dict[int, Match] = {}

    def offer(m: Match, ti: int) -> None:
        old = best.get(ti)
        if old is None or (m.exact, m.overlap) > (old.exact, old.overlap):
            best[ti] = m

    for p in train:
        hits: Counter = Counter()
        grams: set = set()
        for f, text in texts(p).items():
            toks = words(text)
            for ti in exact_index.get((f, toks), ()):
                offer(Match(test[ti].id, p.id, 1.0, f, True), ti)
            grams |= ngrams(toks, ngram)
        for g in grams:
            for key in gram_index.get(g, ()):
                hits[key] += 1
        for (ti, f), h in hits.items():
            c = h / n_grams[(ti, f)]
            if c >= threshold:
                offer(Match(test[ti].id, p.id, c, f, False), ti)
    matches = sorted(best.values(), key=lambda m: (-m.exact, -m.overlap, m.test_id))
    return Report(checked=len(test), exact=sum(m.exact for m in matches), near=len(matches), matches=matches)


def check(cfg, train: list[Problem], test: list[Problem], run_dir: Path, metrics: dict) -> Report | None:
    """Measure, record (``metrics`` updated in place, ``contamination.jsonl``) and fail when too
    many test problems are near duplicates; ``cfg`` is the DecontaminationConfig.  None when
    ``cfg.enabled`` is false (nothing measured, ``data/contamination/enabled`` = False)."""
    metrics["data/contamination/enabled"] = bool(cfg.enabled)
    if not cfg.enabled:
        log.warning("decontamination.enabled=false: train/test overlap is not checked")
        return None
    report = measure(train, test, ngram=cfg.ngram, threshold=cfg.near_dup_threshold)
    metrics.update(report.metrics())
    with (run_dir / "contamination.jsonl").open("w", encoding="utf-8") as f:
        for m in report.matches:
            f.write(json.dumps(m.row(), ensure_ascii=False) + "\n")
    summary = (f"{report.near}/{report.checked} test problems ({report.fraction:.1%}) are near duplicates of "
               f"training problems ({report.exact} exact; {cfg.ngram}-gram containment >= {cfg.near_dup_threshold})")
    if report.fraction > cfg.max_near_dup_fraction:
        shown = "; ".join(f"{m.test_id} ~ {m.train_id} ({'exact' if m.exact else f'{m.overlap:.2f}'}, {m.field})"
                          for m in report.matches[:SHOWN])
        raise DataContaminationError(
            f"{summary}, above decontamination.max_near_dup_fraction={cfg.max_near_dup_fraction}: {shown}"
            f"{' ...' if report.near > SHOWN else ''} (all pairs: {run_dir / 'contamination.jsonl'}). "
            f"Use disjoint splits, or set decontamination.enabled=false to train on them knowingly.")
    (log.warning if report.near else log.info)("decontamination: %s", summary)
    return report
