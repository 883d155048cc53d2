"""Experiment tracking: W&B (offline unless configured otherwise) or CSV, through Lightning loggers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def make_loggers(cfg, run_dir: Path, flat_config: dict, *, name: str, group: str) -> list:
    """The Lightning loggers for this run (one W&B run per job, written under the run dir)."""
    lc = cfg.logger
    if lc.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if lc.mode == "disabled":
        return []
    os.environ.setdefault("WANDB_SILENT", "true")
    from pytorch_lightning.loggers import WandbLogger

    tags = [f"method:{cfg.method.name}", f"teacher:{cfg.teacher.name}", f"student:{cfg.student.name}",
            f"dataset:{cfg.dataset.name}", *lc.tags]
    logger = WandbLogger(project=lc.project, entity=lc.entity, name=name, group=group, tags=tags,
                         save_dir=str(run_dir), mode=lc.mode, config=flat_config, job_type="run")
    return [logger]


def log_metrics(loggers: list, metrics: dict, step: int | None = None) -> None:
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for lg in loggers:
        lg.log_metrics(clean, step=step)


def finish(loggers: list, summary: dict) -> None:
    """Write the final figures into each logger's summary and close it (wandb.finish)."""
    for lg in loggers:
        try:
            if type(lg).__name__ == "WandbLogger":
                run = lg.experiment
                run.summary.update({k: v for k, v in summary.items() if v is not None})
                run.finish()
            else:
                lg.log_hyperparams({"final": json.dumps(summary, default=str)})
                lg.save()
                lg.finalize("success" if summary.get("status") == "ok" else "failed")
        except Exception as e:  # logging must never lose the run's own results
            log.warning("could not finalise logger %s: %s", type(lg).__name__, e)
