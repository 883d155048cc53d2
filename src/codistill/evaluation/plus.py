"""EvalPlus's plus figures from the samples of the base figures (see codistill.tasks.evalplus)."""

from __future__ import annotations

import dataclasses
import re

from codistill.tasks.evalplus import plus_passed


def plus_view(judged: list[list]) -> list[list]:
    """The same Judged samples with ``passed`` set to EvalPlus's plus verdict (base *and* plus
    tests pass), so ``pass_metrics`` gives ``eval/plus/pass@k`` from the very samples that gave
    ``eval/pass@k`` (pure)."""
    return [[dataclasses.replace(j, passed=plus_passed(j)) for j in js] for js in judged]


def plus_ci_metrics(run_dir, metrics: dict) -> dict[str, float]:
    """95% intervals over the test problems for every ``eval/plus/pass@k`` (and the untrained
    student's ``eval_base/plus/...``) in ``metrics``, rebuilt from the samples files' plus
    verdicts as ``run_ci_metrics`` does for the base figures; {} for runs without plus figures."""
    from pathlib import Path

    from codistill.stats import estimate, read_samples, scores

    out: dict[str, float] = {}
    for prefix, name in (("eval/plus/", "eval_samples.jsonl"), ("eval_base/plus/", "eval_base_samples.jsonl")):
        path = Path(run_dir) / name
        keys = [k for k in metrics if k.startswith(prefix) and _FIGURE.match(k[len(prefix):])]
        if not path.exists() or not keys:
            continue
        rows = read_samples(path)
        for r in rows:
            r["samples"] = [dict(s, passed=plus_passed_row(s)) for s in r["samples"] if "step" not in s]
        for key in keys:
            m = _FIGURE.match(key[len(prefix):])
            k = int(m.group(1))
            kind = "greedy" if m.group(2) else ("sampled" if k > 1 else metrics.get(f"{prefix}pass@1_source"))
            s = scores(rows, k, kind)
            if s:
                e = estimate(list(s.values()))
                out[f"{key}_ci95_lo"], out[f"{key}_ci95_hi"] = e.lo, e.hi
    return out


_FIGURE = re.compile(r"^pass@(\d+)(_greedy)?$")


def plus_passed_row(sample: dict) -> bool:
    """The plus verdict of one sample as ``eval_samples.jsonl`` stores it."""
    v = sample.get("value") if isinstance(sample.get("value"), dict) else {}
    return bool(sample.get("passed") and v.get("base") and v.get("plus"))
