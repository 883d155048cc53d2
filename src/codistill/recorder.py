"""One run's record: ``metrics.json``, the experiment loggers and what the ranks agree on.

A run's stages report their figures here and nowhere else: :meth:`Recorder.record` keeps a
figure for metrics.json, :meth:`Recorder.log` also sends it to the loggers (rank 0 only has
any), :meth:`Recorder.shared` hands every rank rank 0's object.  metrics.json is written
atomically when the run starts and when it ends, whatever the ending (ok, failed with the
error, interrupted by a signal), so nothing already measured is lost.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

from codistill.redact import redact


def write_metrics(run_dir: Path, metrics: dict) -> None:
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=str, sort_keys=True))
    tmp.replace(run_dir / "metrics.json")


class Recorder:
    def __init__(self, run_dir: Path, metrics: dict, dist, *, t0: float | None = None) -> None:
        self.run_dir, self.metrics, self.dist = run_dir, metrics, dist
        self.loggers: list = []
        self.t0 = time.perf_counter() if t0 is None else t0  # the run's start (time/total_s)
        self.write()

    def write(self) -> None:
        write_metrics(self.run_dir, self.metrics)

    def open_loggers(self, rc, flat_config: dict, *, name: str, group: str) -> None:
        """The run's loggers (conf/logger/), on rank 0 only: one experiment-tracking run per job."""
        if self.dist.is_zero:
            from codistill.tracking import make_loggers

            self.loggers = make_loggers(rc, self.run_dir, flat_config, name=name, group=group)

    def record(self, figures: dict) -> None:
        """Figures for metrics.json only."""
        self.metrics.update(figures)

    def log(self, figures: dict) -> None:
        """Figures for metrics.json and the loggers."""
        from codistill.tracking import log_metrics

        self.metrics.update(figures)
        log_metrics(self.loggers, figures)

    def shared(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the training set every rank trains on)."""
        from codistill import distributed

        return distributed.broadcast_object(obj)

    def interrupted(self, e) -> None:
        self.metrics.update({"status": "interrupted", "signal": e.signame, "error": str(e)})

    def failed(self, e: BaseException) -> None:
        self.metrics["status"] = "failed"
        self.metrics["error"] = redact(f"{type(e).__name__}: {e}")  # a server may echo the API key
        self.metrics["traceback"] = redact(traceback.format_exc(limit=20))

    def close(self) -> str | None:
        """Stop the other ranks (another rank's failure fails the run), write metrics.json, close
        the loggers with the final figures.  Returns another rank's error, if any."""
        m = self.metrics
        other = self.dist.stop(ok=m["status"] == "ok")
        if other and m["status"] != "interrupted":  # (the other ranks got the signal too)
            m.update({"status": "failed", "error": redact(other)})
        m["time/total_s"] = round(time.perf_counter() - self.t0, 2)
        self.write()
        if self.loggers:
            from codistill.tracking import finish

            finish(self.loggers, {k: v for k, v in m.items() if k != "traceback"})
        return other
