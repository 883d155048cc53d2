"""Sweeps researchers can trust: stable directories, resume, failure isolation, a summary.

* The sweep directory is derived from the command, not the clock:
  ``multirun/<experiment_name>/<sweep_name>``, where ``sweep_name`` defaults to
  ``sweep-<hash of the command's overrides>`` (resolver ``codistill_sweep_id``).  The same
  command therefore lands in the same directory, and each job in the same subdirectory
  (``<job num>_<overrides>``, made filesystem-safe by ``codistill_job_dir``).
* A job whose ``metrics.json`` says ``status: ok`` is skipped when the sweep is run again,
  unless its config changed since (``config/digest``: an edited experiment file); any other
  job runs again and resumes from the generation cache and ``checkpoints/last.ckpt``.
* A failing job records ``status: failed`` and its error in its ``metrics.json`` and the sweep
  goes on; :class:`SweepSummary` (a Hydra callback) prints one line per job at the end and
  exits non-zero when any job failed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

MAX_DIRNAME = 120


def sweep_id(overrides: list[str]) -> str:
    """``sweep-<8 hex>`` from the command's overrides.  Their order is kept: it fixes the
    order (and so the numbers) of the jobs."""
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return f"sweep-{digest}"


def safe_dirname(name: str) -> str:
    """An override string as one path component: no ``/``, bounded length ("" stays "")."""
    name = re.sub(r"[/\\\x00]", "_", name).strip()
    if name in (".", ".."):
        name = name.replace(".", "_")
    if len(name) > MAX_DIRNAME:  # keep both ends (Hydra sorts the keys; what varies is often last)
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        head = 40
        name = f"{name[:head]}...{name[-(MAX_DIRNAME - head - 12):]}-{digest}"
    return name


def _sweep_id_resolver(sweep_name: Any = None, overrides: Any = ()) -> str:
    if sweep_name not in (None, "", "null"):
        return safe_dirname(str(sweep_name))
    # how a job waits for another sweep's run of it is no part of the sweep: the same directory
    return sweep_id([str(o) for o in (overrides or ()) if not str(o).lstrip("+~").startswith("sweep_lock=")])


def register_resolvers() -> None:
    # use_cache (keyed by the arguments' text): the value resolved for the sweep in the
    # launching process, from the whole command's overrides, is copied into every job's
    # config by Hydra's load_sweep_config, exactly like ${now:...}; a job's own overrides
    # (seed=1) therefore do not change it.
    if not OmegaConf.has_resolver("codistill_sweep_id"):
        OmegaConf.register_new_resolver("codistill_sweep_id", _sweep_id_resolver, use_cache=True)
    if not OmegaConf.has_resolver("codistill_job_dir"):
        OmegaConf.register_new_resolver("codistill_job_dir", job_dir)


def job_dir(num: Any, override_dirname: Any = "") -> str:
    """A job's subdirectory: ``<num>`` or ``<num>_<overrides>`` (one path component)."""
    rest = safe_dirname(str(override_dirname or ""))
    return f"{num}_{rest}" if rest else str(num)


# --------------------------------------------------------------------------- inside a job
def hydra_sweep_dir() -> Path | None:
    """The sweep directory when this process runs a multirun job, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ValueError, ImportError):
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir)


def wandb_group(default: str) -> str:
    """W&B group: the sweep directory's name for sweep jobs, ``default`` for single runs."""
    d = hydra_sweep_dir()
    return d.name if d is not None else default


def read_metrics(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


#: top-level keys that do not change a job's results (where files go, what is printed)
_DIGEST_SKIP = ("hydra", "cache_dir", "print_config", "sweep_name", "sweep_lock")
#: nested keys that do not either: a gate that only decides whether a job may start
_DIGEST_SKIP_NESTED = (("train", "memory_check"),)


def config_digest(cfg: DictConfig) -> str:
    """A short hash of the job's resolved config (less paths and printing options): a job that
    finished under another config -- an edited experiment file, the same command -- is rerun."""
    data = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in _DIGEST_SKIP}
    try:
        data = {k: v for k, v in OmegaConf.to_container(OmegaConf.create(data), resolve=True).items()}
    except Exception:  # an interpolation into hydra's node: the unresolved text serves
        pass
    for parent, key in _DIGEST_SKIP_NESTED:
        if isinstance(data.get(parent), dict):
            data[parent] = {k: v for k, v in data[parent].items() if k != key}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished(run_dir: Path, digest: str | None = None, *, metrics: dict | None = None) -> dict | None:
    """The job's metrics when it already finished (status ok) under the same config (``digest``;
    metrics written before digests were recorded count as the same), else None.  ``metrics``:
    the job's metrics.json already read (not read again)."""
    m = metrics if metrics is not None else read_metrics(run_dir)
    if not m or m.get("status") != "ok":
        return None
    if digest and m.get("config/digest") not in (None, digest):
        return None
    return m


def failure_metrics(cfg: DictConfig, run_dir: Path, exc: BaseException) -> dict:
    """metrics.json content for a job that failed before run() could write one (bad config)."""
    def sel(key):
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)

    from codistill.redact import redact

    return {"status": "failed", "error": redact(f"{type(exc).__name__}: {exc}"), "method": sel("method.name"),
            "teacher": sel("teacher.name"), "student": sel("student.name"), "dataset": sel("dataset.name"),
            "seed": sel("seed"), "experiment": sel("experiment_name"), "run_dir": str(run_dir)}


# --------------------------------------------------------------------------- after the sweep
def job_metrics(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """(job dir, metrics) for every job under ``sweep_dir`` that wrote a metrics.json."""
    out = []
    for f in sorted(Path(sweep_dir).rglob("metrics.json"), key=_natural):  # job 2 before job 10
        if "wandb" in f.relative_to(sweep_dir).parts:
            continue
        m = read_metrics(f.parent)
        out.append((f.parent, m if m is not None else {"status": "unreadable", "error": "metrics.json unreadable"}))
    return out


def _natural(path: Path) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path))]


def summarize(sweep_dir: Path, jobs: list[tuple[Path, dict]]) -> tuple[str, list[Path]]:
    """A summary of the sweep (one line per job) and the directories of jobs that did not finish."""
    bad = [d for d, m in jobs if m.get("status") != "ok"]
    lines = [f"sweep {sweep_dir}: {len(jobs) - len(bad)}/{len(jobs)} jobs ok"
             + (f", {len(bad)} not ok" if bad else "")]
    for d, m in jobs:
        status = m.get("status")
        rel = d.relative_to(sweep_dir) if d.is_relative_to(sweep_dir) else d
        line = f"  [{status}] {rel}"
        if status == "ok" and m.get("eval/pass@1") is not None:
            line += f"  pass@1={m['eval/pass@1']:.3f}"
        if status != "ok":
            line += f"  error: {m.get('error', 'did not finish')}  ({(d / 'metrics.json').absolute()})"
        lines.append(line)
    return "\n".join(lines), bad


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.sweep_summary``): at the end of a multirun, print
    which jobs failed and why, and exit with status 1 when any did."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        text, bad = summarize(sweep_dir, job_metrics(sweep_dir))
        print(f"\n{text}\n", flush=True)
        if bad:
            # SystemExit is not an Exception: Hydra's callback runner does not swallow it
            raise SystemExit(1)
