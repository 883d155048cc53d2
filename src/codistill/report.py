"""``codistill-report <sweep dir>``: one table row per job, a CSV, a markdown summary and a PNG plot.

    codistill-report multirun/smoke/sweep-1a2b3c4d   # tables on stdout; report.csv, report.md, report.png there
    python -m codistill.report multirun/demo/my-sweep --out results/

The rows come from each job's ``metrics.json`` (written by every run, finished or failed),
so the report is generic over methods, datasets and metrics: every ``eval/pass@k`` found
becomes a column.  The plot shows pass@k by method (and by whatever else the sweep varied:
teacher, student, dataset), the bar at the mean over seeds and the spread as the standard
deviation with each seed as a dot.  The notebook ``notebooks/compare_runs.ipynb`` reuses
these functions.

Every figure also gets its uncertainty, rebuilt per problem from each job's samples files
(codistill.stats): pass@k with a 95% interval (``report_ci.csv``), the paired difference of
each method against ``method=none`` (else every pair, and each against its own untrained
student) with its interval and a sign-flip p-value (``report_differences.csv``), and, where
an interval covers 0, the difference the test set could resolve -- not a ranking.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from codistill.sweep import job_metrics

ID_COLUMNS = ["method", "teacher", "student", "dataset", "seed"]
CONFIG_COLUMNS = ["method", "teacher", "student", "dataset"]
_PASS = re.compile(r"^(eval|eval_base)/(?:step(\d+)/|plus/)?pass@(\d+)$")
#: data figures shown beside pass@k where a job has them: metrics.json key -> column
DATA_COLUMNS = {"data/problems_solved": "solved", "data/student_solved": "student_solved",
                "data/sent_to_teacher": "sent_to_teacher", "data/n_kept": "data_kept"}


def pass_columns(columns) -> list[str]:
    """``eval/pass@k`` (and the untrained ``eval_base/pass@k``) columns, by k then trained first;
    multi-step inference adds ``eval/step<N>/pass@k`` (N >= 1: step 0 is ``eval/pass@k`` itself)
    after them."""
    def key(c):
        m = _PASS.match(c)
        return int(m.group(3)), m.group(1) != "eval", int(m.group(2) or 0), "/plus/" in c  # plus beside base

    found = [c for c in columns if _PASS.match(str(c)) and int(_PASS.match(str(c)).group(2) or 1) >= 1]
    return sorted(found, key=key)


def load_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job of the sweep: its identity, pass@k, data kept, time, status, error.

    Raises FileNotFoundError when the directory holds no job (no metrics.json)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
    jobs = job_metrics(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no job directory with a metrics.json under it")
    rows = []
    for d, m in jobs:
        row = {"job": str(d.relative_to(sweep_dir)) or ".", **{c: m.get(c) for c in ID_COLUMNS}}
        row["overrides"] = json.dumps(job_overrides(d), sort_keys=True)  # a CSV cell; read by config_labels
        row.update({c: m[c] for c in pass_columns(m)})
        row.update({col: m.get(key) for key, col in DATA_COLUMNS.items()})
        row["time_s"] = m.get("time/total_s")
        row["status"] = m.get("status")
        row["error"] = m.get("error", "")
        rows.append(row)
    # jobs in the sweep's own order (job numbers as numbers: 2_ before 10_), sweep by sweep
    rows.sort(key=lambda r: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", r["job"])])
    df = pd.DataFrame(rows)
    data = [c for c in DATA_COLUMNS.values() if c == "data_kept" or df[c].notna().any()]
    cols = ["job", *ID_COLUMNS, *pass_columns(df.columns), *data, "time_s", "status", "error", "overrides"]
    return df[cols]


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides (``.hydra/overrides.yaml``: what the sweep set for it),
    ``{key: value}``; empty when the file is missing or unreadable."""
    import yaml

    try:
        items = yaml.safe_load((Path(job_dir) / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for it in items:
        key, sep, value = str(it).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def data_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in DATA_COLUMNS.values() if c in df.columns]


def format_table(df: pd.DataFrame) -> str:
    """The table as aligned text (the long error column last, shortened)."""
    show = df.drop(columns=["overrides"], errors="ignore").copy()  # in report.csv, not on the console
    show["error"] = show["error"].fillna("").astype(str).str.slice(0, 60)
    for c in pass_columns(show.columns):
        show[c] = show[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    show["time_s"] = show["time_s"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    for c in data_columns(show):  # "-": the method has no such figure (a blank would shift the columns)
        show[c] = show[c].map(lambda v: "-" if pd.isna(v) else str(int(v)))
    show = show.fillna("")
    if not (show["error"] != "").any():
        show = show.drop(columns="error")
    return show.to_string(index=False)


def config_labels(df: pd.DataFrame) -> pd.Series:
    """A label per row: the method, plus any of teacher/student/dataset the sweep varied, plus any
    other override the sweep varied (``.hydra/overrides.yaml``; seed and paths aside) -- so
    ``method=on_policy method.feedback=none,failed_only`` gives two configurations, not two seeds
    of one.  Where one method name comes from several group options (``on_policy_failed_only``
    and ``on_policy_weighted`` are both ``on_policy``), the option names the row."""
    varied = [c for c in CONFIG_COLUMNS[1:] if df[c].dropna().nunique() > 1]
    overrides = [json.loads(v) if isinstance(v, str) else {}
                 for v in (df["overrides"] if "overrides" in df.columns else [None] * len(df))]
    keys = sorted({k for o in overrides for k in o} - {"seed", "method", "experiment"})
    keys = [k for k in keys if not k.startswith("hydra.") and len({o.get(k) for o in overrides}) > 1]
    options: dict[str, set] = {}
    for method, o in zip(df["method"], overrides):
        options.setdefault(str(method), set()).add(o.get("method", str(method)))

    def label(r, o):
        name = str(r["method"])
        if len(options.get(name, ())) > 1:
            name = o.get("method", name)
        parts = [name] + [f"{c}={r[c]}" for c in varied if pd.notna(r[c])]
        return " | ".join(parts + [f"{k}={o[k]}" for k in keys if k in o])

    return pd.Series([label(r, o) for (_, r), o in zip(df.iterrows(), overrides)], index=df.index, dtype=object)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of every pass@k, per configuration (ok jobs)."""
    ok = df[df["status"] == "ok"].copy()
    metrics = pass_columns(ok.columns)
    if ok.empty or not metrics:
        return pd.DataFrame(columns=["config", "metric", "mean", "std", "n"])
    ok["config"] = config_labels(ok)
    long = ok.melt(id_vars=["config", "seed"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    agg = long.groupby(["config", "metric"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return agg.rename(columns={"count": "n"}).fillna({"std": 0.0})


def _mean_std(values) -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return ""
    if len(v) == 1:
        return f"{v.iloc[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def _mean(values, digits: int = 1) -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return ""
    m = v.mean()
    return f"{int(m)}" if float(m).is_integer() else f"{m:.{digits}f}"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (finished jobs): seeds, every pass@k as mean ± std over seeds,
    the data figures (mean over seeds) and the mean time per job.  The table for a paper."""
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["config"] = config_labels(ok)
    rows = []
    for config, g in ok.groupby("config", sort=False):
        row = {"method": config, "seeds": int(g["seed"].nunique())}
        row.update({c.replace("eval/", ""): _mean_std(g[c]) for c in pass_columns(ok.columns)})
        row.update({c: _mean(g[c]) for c in data_columns(ok) if g[c].notna().any() or ok[c].notna().any()})
        row["time/job"] = f"{g['time_s'].astype(float).mean() / 60:.1f} min"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def to_markdown(table: pd.DataFrame) -> str:
    """A pandas frame as a GitHub markdown table (no extra dependency)."""
    if table.empty:
        return ""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines)


def plot(df: pd.DataFrame, path: str | Path, title: str | None = None):
    """pass@k by configuration: bars at the mean over seeds, error bars the std, dots the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    df = df.copy()
    df["config"] = config_labels(df) if not df.empty else []
    ok = df[df["status"] == "ok"]
    metrics = [c for c in pass_columns(ok.columns) if ok[c].notna().any()]
    configs = list(dict.fromkeys(df["config"]))  # every method has its place, finished or not
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(configs) * max(1, len(metrics)) / 2 + 2), 4.2))
    if not configs or not metrics:
        ax.text(0.5, 0.5, "no finished job with pass@k", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        width = 0.8 / len(metrics)
        x = np.arange(len(configs))
        for i, m in enumerate(metrics):
            groups = [ok.loc[ok["config"] == c, m].dropna().to_numpy(dtype=float) for c in configs]
            means = [g.mean() if len(g) else np.nan for g in groups]
            stds = [g.std(ddof=1) if len(g) > 1 else 0.0 for g in groups]
            pos = x - 0.4 + width * (i + 0.5)
            bars = ax.bar(pos, means, width * 0.9, yerr=stds, capsize=3, label=m.replace("eval_base/", "base ").replace(
                "eval/", ""), alpha=0.8)
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in means], fontsize=7, padding=2)
            for p, g in zip(pos, groups):
                ax.scatter(np.full(len(g), p), g, color="black", s=12, zorder=3)
        for xi, c in zip(x, configs):
            if not (ok["config"] == c).any():
                ax.text(xi, 0.01, "no finished job", ha="center", va="bottom", fontsize=8, color="gray")
        ax.set_xlim(-0.6, len(configs) - 0.4)
        ax.set_xticks(x)
        tilt = len(configs) > 3 or max(len(c) for c in configs) > 24
        ax.set_xticklabels(configs, rotation=15 if tilt else 0, ha="right" if tilt else "center", fontsize=8 if tilt else 10)
        ax.set_ylabel("pass rate (mean ± std over seeds; dots: seeds)")
        top = np.nanmax(ok[metrics].to_numpy(dtype=float)) if len(ok) else 0.0
        ax.set_ylim(0, max(0.05, min(1.0, top * 1.25 + 0.02)))
        ax.legend(title="metric", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    n_bad = int((df["status"] != "ok").sum())
    ax.set_title((title or "pass@k by method") + (f"  ({n_bad} job(s) not ok)" if n_bad else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- uncertainty
_HEAD = re.compile(r"^(eval|eval_base)/pass@(\d+)$")
SAMPLES = {"eval": "eval_samples.jsonl", "eval_base": "eval_base_samples.jsonl"}


def job_scores(sweep_dir: str | Path, df: pd.DataFrame) -> dict[tuple[str, str], list[dict[str, float]]]:
    """(config, metric) -> one {problem id: score} per finished job (seed), rebuilt from each
    job's samples files (``eval_samples.jsonl``, ``eval_base_samples.jsonl``) for every
    ``eval/pass@k`` and ``eval_base/pass@k`` the job reports.  Jobs without the file are left
    out (their figure has no per-problem record to resample)."""
    from codistill.sweep import read_metrics
    from codistill.stats import sample_scores

    sweep_dir = Path(sweep_dir)
    ok = df[df["status"] == "ok"].copy()
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    if ok.empty:
        return out
    ok["config"] = config_labels(ok)
    for _, row in ok.iterrows():
        job_dir = sweep_dir / row["job"]
        metrics = read_metrics(job_dir) or {}
        for prefix, name in SAMPLES.items():
            for figure, s in sample_scores(job_dir / name, metrics, f"{prefix}/").items():
                out.setdefault((row["config"], f"{prefix}/{figure}"), []).append(s)
    return out


def ci_table(scores: dict[tuple[str, str], list[dict[str, float]]]) -> pd.DataFrame:
    """One row per (configuration, pass@k): the estimate with its 95% interval, bootstrapped
    over the test problems (and over seeds where there are several; codistill.stats)."""
    from codistill.stats import align, estimate

    rows = []
    for (config, metric), runs in scores.items():
        ids, m = align(runs)
        if not ids:
            continue
        e = estimate(m)
        rows.append({"config": config, "metric": metric, "seeds": e.n_seeds, "problems": e.n_problems,
                     "value": e.value, "ci95_lo": e.lo, "ci95_hi": e.hi, "interval": e.how})
    cols = ["config", "metric", "seeds", "problems", "value", "ci95_lo", "ci95_hi", "interval"]
    return pd.DataFrame(rows, columns=cols)


def comparisons(df: pd.DataFrame, scores: dict) -> list[tuple[str, str, str, str]]:
    """The pairs to compare, as (config a, metric a, config b, metric b) meaning a - b:

    every configuration against ``method=none`` where the sweep has it (same student and
    dataset), else every pair of configurations; and each trained configuration against its
    own untrained student where its jobs evaluated it (``eval_base``)."""
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["config"] = config_labels(ok)
    first = ok.groupby("config", sort=False).first()
    configs = list(first.index)
    ks = sorted({int(_HEAD.match(m).group(2)) for _, m in scores if _HEAD.match(m) and m.startswith("eval/")})
    none = [c for c in configs if first.loc[c, "method"] == "none"]
    pairs = []
    for k in ks:
        metric = f"eval/pass@{k}"
        if none:
            for c in configs:
                for n in none:
                    if c != n and all(first.loc[c, col] == first.loc[n, col] for col in ("student", "dataset")):
                        pairs.append((c, metric, n, metric))
        else:
            pairs += [(a, metric, b, metric) for i, a in enumerate(configs) for b in configs[i + 1:]]
        pairs += [(c, metric, c, f"eval_base/pass@{k}") for c in configs if (c, f"eval_base/pass@{k}") in scores]
    return [p for p in pairs if (p[0], p[1]) in scores and (p[2], p[3]) in scores]


def differences(df: pd.DataFrame, scores: dict) -> pd.DataFrame:
    """One row per compared pair: a - b over the problems both were scored on, its 95%
    bootstrap interval, the paired sign-flip test's p-value, and the minimum detectable effect
    of that many problems at 80% power (codistill.stats.paired_difference)."""
    from codistill.stats import align, paired_difference

    rows = []
    for ca, ma, cb, mb in comparisons(df, scores):
        ra, rb = scores[(ca, ma)], scores[(cb, mb)]
        ids, m = align(ra + rb)
        if not ids:
            continue
        d = paired_difference(m[:len(ra)], m[len(ra):])
        b_name = "base student" if mb.startswith("eval_base/") and ca == cb else cb
        rows.append({"a": ca, "b": b_name, "metric": ma.replace("eval/", ""), "problems": d.n_problems,
                     "diff": d.diff, "ci95_lo": d.lo, "ci95_hi": d.hi, "p": d.p, "mde80": d.mde,
                     "resolved": d.resolved})
    cols = ["a", "b", "metric", "problems", "diff", "ci95_lo", "ci95_hi", "p", "mde80", "resolved"]
    return pd.DataFrame(rows, columns=cols)


def verdicts(diffs: pd.DataFrame) -> list[str]:
    """What the differences show, in words: a resolved one names its direction; one whose
    interval covers 0 says the test set is too small to resolve it (not a ranking)."""
    lines = []
    for _, r in diffs.iterrows():
        head = f"{r['a']} vs {r['b']} ({r['metric']}): {r['diff']:+.3f} [{r['ci95_lo']:+.3f}, {r['ci95_hi']:+.3f}]"
        if r["resolved"]:
            lines.append(f"{head}, p={r['p']:.3g}: {r['a']} {'higher' if r['diff'] > 0 else 'lower'} "
                         f"(the interval excludes 0)")
        else:
            lines.append(f"{head}, p={r['p']:.3g}: not resolvable at this size: the test set of {r['problems']} "
                         f"problems resolves differences of about {r['mde80']:.2f} (80% power)")
    if len(diffs) and not diffs["resolved"].any():
        lines.append("no difference is resolved: the methods are not ranked")
    return lines


def seeds_note(df: pd.DataFrame, sweep_dir: str | Path) -> list[str]:
    """What the seeds varied, per configuration with several, from each job's metrics.json:
    ``seed`` (the student's training, sampling and evaluation) and, where the run recorded
    them, ``seed/teacher`` (the teacher's sampling of training data) and ``seed/teacher_mode``."""
    from codistill.sweep import read_metrics

    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["config"] = config_labels(ok)
    lines = []
    for config, g in ok.groupby("config", sort=False):
        seeds = sorted({int(s) for s in g["seed"].dropna()})
        if len(seeds) < 2:
            continue
        ms = [read_metrics(Path(sweep_dir) / j) or {} for j in g["job"]]
        teacher = {m.get("seed/teacher") for m in ms}
        modes = sorted({str(m["seed/teacher_mode"]) for m in ms if m.get("seed/teacher_mode") is not None})
        mode = f" (seed/teacher_mode: {', '.join(modes)})" if modes else ""
        head = f"{config}: seeds {', '.join(map(str, seeds))} varied"
        if set(g["method"]) == {"none"}:
            lines.append(f"{head} the untrained student's evaluation sampling only (no teacher, no training)")
        elif None in teacher:
            lines.append(f"{head} `seed`; metrics.json does not record the teacher's seed{mode}")
        elif len(teacher) == 1:
            lines.append(f"{head} the student's training/eval seed only; the teacher pass was shared "
                         f"(teacher seed {teacher.pop()}){mode}")
        else:
            lines.append(f"{head} the student's training/eval seed and the teacher's sampling "
                         f"(teacher seeds {', '.join(map(str, sorted(teacher)))}){mode}")
    return lines


def _fmt(table: pd.DataFrame) -> pd.DataFrame:
    """Figures to 3 decimals; a difference and its interval with their sign."""
    show = table.copy()
    signed = {"diff", "ci95_lo", "ci95_hi"} if "diff" in show else set()
    for c in ("value", "diff", "ci95_lo", "ci95_hi", "mde80"):
        if c in show:
            show[c] = show[c].map(lambda v, c=c: f"{v:+.3f}" if c in signed else f"{v:.3f}")
    if "p" in show:
        show["p"] = show["p"].map(lambda v: f"{v:.3g}")
    return show


@dataclass
class Uncertainty:
    """The sweep's intervals, paired differences and seeds note (see ci_table, differences)."""

    ci: pd.DataFrame
    differences: pd.DataFrame
    seeds: list[str]

    def markdown(self) -> str:
        text = ""
        if len(self.ci):
            text += ("\n## pass@k with 95% intervals (bootstrap over problems and seeds)\n\n"
                     + to_markdown(_fmt(self.ci)) + "\n")
        if len(self.differences):
            text += ("\n## paired differences (a - b over the same problems; sign-flip test)\n\n"
                     + to_markdown(_fmt(self.differences)) + "\n\n"
                     + "\n".join(f"- {v}" for v in verdicts(self.differences)) + "\n")
        if self.seeds:
            text += "\n## seeds\n\n" + "\n".join(f"- {v}" for v in self.seeds) + "\n"
        return text

    def text(self) -> str:
        out = []
        if len(self.ci):
            out.append("pass@k with 95% intervals (bootstrap over problems and seeds):\n"
                       + _fmt(self.ci).to_string(index=False))
        if len(self.differences):
            out.append("paired differences (a - b over the same problems; sign-flip test):\n"
                       + _fmt(self.differences).to_string(index=False) + "\n"
                       + "\n".join(f"  {v}" for v in verdicts(self.differences)))
        if self.seeds:
            out.append("\n".join(f"seeds: {v}" for v in self.seeds))
        return "\n\n".join(out)


def uncertainty(sweep_dir: str | Path, df: pd.DataFrame) -> Uncertainty:
    scores = job_scores(sweep_dir, df)
    return Uncertainty(ci_table(scores), differences(df, scores), seeds_note(df, sweep_dir))


def _report(sweep_dir: str | Path, out_dir: str | Path | None) -> tuple[pd.DataFrame, Uncertainty, Path, Path]:
    sweep_dir = Path(sweep_dir)
    df = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "report.csv", out / "report.png"
    df.to_csv(csv_path, index=False)
    head = f"# {sweep_dir.parent.name}/{sweep_dir.name}\n\n{to_markdown(summary(df))}\n"
    (out / "report.md").write_text(head)
    plot(df, png_path, title=f"{sweep_dir.parent.name}/{sweep_dir.name}: pass@k by method")
    u = uncertainty(sweep_dir, df)  # a malformed samples file fails here, after the files above
    u.ci.to_csv(out / "report_ci.csv", index=False)
    u.differences.to_csv(out / "report_differences.csv", index=False)
    (out / "report.md").write_text(head + u.markdown())
    return df, u, csv_path, png_path


def report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> tuple[pd.DataFrame, Path, Path]:
    """Load the sweep, write ``report.csv``, ``report_ci.csv``, ``report_differences.csv``,
    ``report.md`` and ``report.png`` into ``out_dir`` (default: the sweep dir)."""
    df, _, csv_path, png_path = _report(sweep_dir, out_dir)
    return df, csv_path, png_path


def main(argv: list[str] | None = None) -> int:
    """Console script ``codistill-report``."""
    ap = argparse.ArgumentParser(prog="codistill-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", help="a sweep directory (multirun/<experiment>/<sweep>) or a single run directory")
    ap.add_argument("--out", default=None, help="where report.csv and report.png go (default: the sweep dir)")
    args = ap.parse_args(argv)
    try:
        df, u, csv_path, png_path = _report(args.sweep_dir, args.out)
    except (FileNotFoundError, ValueError) as e:  # ValueError: a samples file's bad line, named
        print(f"codistill-report: {e}", file=sys.stderr)
        return 2
    print(format_table(df))
    agg = aggregate(df)
    if not agg.empty:
        print("\nmean ± std over seeds:")
        for _, r in agg.iterrows():
            print(f"  {r['config']:<40} {r['metric']:<18} {r['mean']:.3f} ± {r['std']:.3f}  (n={int(r['n'])})")
    md = to_markdown(summary(df))
    if md:
        print("\nsummary (mean ± std over seeds; data figures: mean over seeds):\n" + md)
    if u.text():
        print("\n" + u.text())
    n_bad = int((df["status"] != "ok").sum())
    print(f"\n{len(df)} jobs, {len(df) - n_bad} ok, {n_bad} not ok\nwrote {csv_path}\nwrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
