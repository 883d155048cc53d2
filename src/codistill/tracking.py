"""Experiment tracking through Lightning loggers named by ``_target_`` (conf/logger/): W&B (offline
unless configured otherwise), CSV, TensorBoard, MLflow, or a user's own."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def make_loggers(cfg, run_dir: Path, flat_config: dict, *, name: str, group: str) -> list:
    """The Lightning loggers for this run, from ``logger`` (``_target_``: a Lightning logger class
    or a factory; the other keys its arguments).  The run supplies what only it knows -- the
    directory, the job's name and group, the config, the job type and the run's tags -- to each
    argument of that name the target takes and the YAML leaves unset."""
    import inspect

    from codistill.plugins import locate

    spec = {k: v for k, v in dict(cfg.logger).items() if k not in ("_target_", "_requires_")}
    if spec.get("mode") == "disabled":
        return []
    target = locate(cfg.logger["_target_"], "logger._target_")
    offered = {"save_dir": str(run_dir), "name": name, "run_name": name, "group": group, "config": flat_config,
               "job_type": job_type(cfg), "run_tags": run_tags(cfg)}
    params = inspect.signature(target).parameters
    spec.update({k: v for k, v in offered.items() if k in params and k not in spec})
    return [target(**spec)]


def run_tags(cfg) -> list[str]:
    """What the run compares, as tags: ``method:ekt``, ``teacher:...``, ``student:...``, ``dataset:...``."""
    return [f"method:{cfg.method.name}", f"teacher:{cfg.teacher.name}", f"student:{cfg.student.name}",
            f"dataset:{cfg.dataset.name}"]


def wandb_logger(save_dir: str, name: str, group: str, config: dict, job_type: str, run_tags: list[str], *,
                 project: str = "codistill", entity: str | None = None, mode: str = "offline",
                 tags: list[str] = ()):
    """``logger=wandb``: Lightning's WandbLogger, one W&B run per job written under the run dir,
    the same run id on every retry (see :func:`wandb_run_id`)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    from pytorch_lightning.loggers import WandbLogger

    return WandbLogger(project=project, entity=entity, name=name, group=group, tags=[*run_tags, *tags],
                       save_dir=save_dir, mode=mode, config=config, job_type=job_type,
                       id=wandb_run_id(Path(save_dir)), resume="allow")


RUN_ID_FILE = "wandb_run_id.json"


def wandb_run_id(run_dir: Path) -> str:
    """The job's one W&B run id: made on the job's first start and kept in
    ``<run_dir>/wandb_run_id.json``, so a retried job resumes its run (``resume="allow"``)
    instead of adding a crashed duplicate to the sweep's group at ``wandb sync``."""
    path = Path(run_dir) / RUN_ID_FILE
    try:
        run_id = json.loads(path.read_text())["id"]
        if isinstance(run_id, str) and run_id:
            return run_id
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import secrets
    import string

    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's own form
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"id": run_id}))
    tmp.replace(path)
    return run_id


def job_type(cfg) -> str:
    """W&B ``job_type``: the stages this job runs -- ``eval`` for the base student alone
    (method=none), ``distill`` when a method builds a training set and trains on it."""
    return "eval" if cfg.method.name == "none" else "distill"


def _wandb_runs(loggers: list) -> list:
    return [lg.experiment for lg in loggers if type(lg).__name__ == "WandbLogger"]


def log_train_set(loggers: list, path: Path) -> None:
    """The training set (``train_set.jsonl``) as a W&B dataset artifact, when the method wrote one."""
    runs = _wandb_runs(loggers)
    if not runs or not path.exists():
        return
    import wandb

    for run in runs:
        art = wandb.Artifact(name=f"train_set-{run.id}", type="dataset",
                             metadata={"examples": sum(1 for line in path.open() if line.strip())})
        art.add_file(str(path), name=path.name)
        run.log_artifact(art)


EVAL_COLUMNS = ["problem_id", "problem", "kind", "completion", "program", "verdict", "error"]


def eval_table_rows(samples_path: Path, problems: list) -> list[list]:
    """One row per evaluation sample: problem, completion, verdict (pass / the failure status), error."""
    questions = {p.id: p.question for p in problems}
    rows = []
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        for s in r["samples"]:
            verdict = "pass" if s.get("passed") else str(s.get("status"))
            rows.append([r["problem_id"], questions.get(r["problem_id"], ""), s.get("kind"), s.get("completion"),
                         s.get("program"), verdict, s.get("error") or ""])
    return rows


def log_eval_table(loggers: list, samples_path: Path, problems: list, key: str = "eval/samples") -> None:
    """The evaluation samples as a W&B Table (problem, completion, verdict, error)."""
    runs = _wandb_runs(loggers)
    if not runs or not samples_path.exists():
        return
    import wandb

    rows = eval_table_rows(samples_path, problems)
    for run in runs:
        run.log({key: wandb.Table(columns=EVAL_COLUMNS, data=rows)})


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
