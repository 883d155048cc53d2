"""The Hydra entry point: one run = one (teacher, student, method, dataset).

    codistill experiment=demo
    codistill -m experiment=smoke seed=0,1

:func:`run` validates the config, starts the other ranks (if any), then runs :data:`STAGES`
in order -- prepare (problems, through the dataset's hooks; loggers; checks) -> evaluate the
base student -> the method builds its training plan -> train the student on it -> pass@k
evaluation -- over one :class:`codistill.recorder.Recorder` that owns metrics.json, the
loggers and the rank broadcast.  Heavy libraries are imported only after the config has been
validated, so a bad value fails in about a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from codistill import faults, interrupt
from codistill.config import ConfigError, register_configs, validate
from codistill.recorder import Recorder, write_metrics
from codistill.redact import redact
from codistill.sweep import config_digest, failure_metrics, finished, hydra_sweep_dir, read_metrics

log = logging.getLogger("codistill")
register_configs()


def compute_threads(local_world: int) -> int:
    """Torch threads per process: ``OMP_NUM_THREADS`` when set (two runs sharing a machine each
    take a share instead of oversubscribing the cores, which slows torch several-fold), else
    the cores split among this machine's ranks."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // local_world)


def job_name(cfg: DictConfig) -> str:
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        overrides = []
    short = [o for o in overrides if not o.startswith(("experiment=", "hydra."))]
    return f"{cfg.experiment_name}" + (f"[{','.join(short)}]" if short else "")


def fit_problems(train: list, train_set: Path, limit: int) -> list:
    """Up to ``limit`` of the training problems the student was trained on (their ids in
    ``train_set.jsonl``), in the training split's order; the first ``limit`` training problems
    when the file names none."""
    ids: set[str] = set()
    if train_set.exists():
        for line in train_set.read_text(encoding="utf-8").splitlines():
            if line.strip():
                pid = json.loads(line).get("problem_id")
                if pid is not None:
                    ids.add(str(pid))
    trained = [p for p in train if str(p.id) in ids] if ids else list(train)
    return trained[:limit]


def _ci(metrics: dict, key: str) -> str:
    """``0.250`` or ``0.250 [0.100, 0.400]`` when the run has the key's 95% interval."""
    lo, hi = metrics.get(f"{key}_ci95_lo"), metrics.get(f"{key}_ci95_hi")
    return f"{metrics[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def results_table(metrics: dict) -> str:
    """A short, human-readable summary of one run."""
    rows = [("run", f"{metrics.get('method')}: {metrics.get('teacher')} -> {metrics.get('student')} "
                    f"on {metrics.get('dataset')}")]
    if "data/split" in metrics:
        rows.append(("split", metrics["data/split"]))
    if "eval_base/pass@1" in metrics:
        rows.append(("base student pass@1", _ci(metrics, "eval_base/pass@1")))
    for k in sorted(k for k in metrics
                    if k.startswith("eval/pass@") and isinstance(metrics[k], float) and "_ci95" not in k):
        if k == "eval/pass@1_greedy" and metrics.get("eval/pass@1_source") == "greedy":
            continue  # the headline eval/pass@1 is this figure, labelled (greedy)
        name = k[5:] + (f" ({metrics['eval/pass@1_source']})" if k == "eval/pass@1" and "eval/pass@1_source" in metrics
                        else "")
        rows.append((f"trained student {name}" if metrics.get("method") != "none" else f"student {name}",
                     _ci(metrics, k)))
    for k in sorted(k for k in metrics if k.startswith(("eval_base/plus/pass@", "eval/plus/pass@"))
                    and isinstance(metrics[k], float) and "_ci95" not in k):  # EvalPlus: base + plus tests
        rows.append((f"{'base student' if k.startswith('eval_base') else 'student'} {k.split('/', 1)[1]}", _ci(metrics, k)))
    d = "eval/delta_vs_base/pass@1"
    if d in metrics:
        rows.append(("trained - base pass@1", f"{metrics[d]:+.3f} [{metrics[f'{d}_ci95_lo']:+.3f}, "
                                              f"{metrics[f'{d}_ci95_hi']:+.3f}], p={metrics[f'{d}_p']:.3g} "
                                              f"(paired, {metrics.get(f'{d}_n_problems', '?')} problems)"))
        if metrics[f"{d}_ci95_lo"] <= 0 <= metrics[f"{d}_ci95_hi"]:
            rows.append(("", f"the interval includes 0: this run does not show that training changed pass@1; "
                             f"its test set resolves differences of about {metrics[f'{d}_mde80']:.2f} (80% power)"))
        else:
            rows.append(("", f"the interval excludes 0: training {'raised' if metrics[d] > 0 else 'lowered'} pass@1 "
                             f"on these problems (one run: a seed sweep shows whether it holds across seeds)"))
    if "train/fit_pass@1" in metrics:
        rows.append(("fit pass@1 (trained-on)", f"{_ci(metrics, 'train/fit_pass@1')} on "
                                                f"{metrics.get('train/fit_n_problems')} training problems"))
    for k in sorted(k for k in metrics if k.startswith("eval/step") and k.endswith("/pass@1")):
        rows.append((f"refinement {k[5:]}", f"{metrics[k]:.3f}"))
    if "data/sent_to_teacher" in metrics:
        rows.append(("student attempts", f"{metrics['data/student_solved']}/{metrics['data/n_problems']} solved, "
                                         f"{metrics['data/sent_to_teacher']} sent to the teacher"))
    if "data/n_kept" in metrics:
        rows.append(("data kept", f"{metrics['data/n_kept']} examples"
                     + (f" from {metrics['data/n_samples']} samples, {metrics.get('data/problems_solved', 0)}"
                        f"/{metrics.get('data/n_problems', 0)} problems solved" if "data/n_samples" in metrics else "")))
    if metrics.get("train/tokens_per_s"):
        rows.append(("training", f"{metrics.get('train/steps')} steps, {metrics['train/tokens_per_s']:.0f} tokens/s"))
    rows.append(("time", f"{metrics.get('time/total_s', 0):.1f} s"))
    rows.append(("status", str(metrics.get("status"))))
    if "publish/repo_id" in metrics:  # student.push_to_hub
        rows.append(("publish", f"FAILED: {metrics['publish/error']}" if "publish/error" in metrics
                     else f"pushed to {metrics['publish/repo_id']}"))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"  {a:<{w}}  {b}" for a, b in rows)


@dataclass
class Job:
    """What one run's stages hand each other: the validated config, the run's context (models,
    problems), the recorder, and what the stages made (the method, its result, the student)."""

    rc: Any
    cfg: DictConfig
    dist: Any
    rec: Recorder
    shared_dir: Path  # the run directory every rank trains in (checkpoints)
    run_dir: Path  # this rank's artifacts: the run directory on rank 0, a scratch directory elsewhere
    ctx: Any = None
    task: Any = None
    eval_task: Any = None
    method: Any = None
    result: Any = None
    model: Any = None
    tok: Any = None
    student_id: Any = None


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run every stage (:data:`STAGES`); always leaves a metrics.json with status ok or failed."""
    t0 = time.perf_counter()
    rc = validate(cfg)  # raises ConfigError naming the key; nothing loaded yet
    run_dir.mkdir(parents=True, exist_ok=True)
    from codistill import distributed
    from codistill.models import check_hardware

    check_hardware(rc)  # e.g. QLoRA without CUDA: a ConfigError before anything loads
    from codistill.evaluation import student_backend

    student_backend.check(rc)  # generation=vllm evaluates the trained student from its saved checkpoint
    # trainer.devices > 1: codistill starts the other ranks here (codistill.distributed); ranks
    # other than 0 write their artifacts to a scratch dir, only training shares the run dir
    dist = distributed.start(rc.trainer, cfg, run_dir)
    shared_dir, run_dir = run_dir, dist.artifact_dir(run_dir)
    rec = Recorder(run_dir, {"status": "running", "method": rc.method.name, "teacher": rc.teacher.name,
                             "student": rc.student.name, "dataset": rc.dataset.name, "seed": rc.seed,
                             "experiment": rc.experiment_name, "run_dir": str(run_dir),
                             "config/digest": config_digest(cfg)}, dist, t0=t0)
    job = Job(rc=rc, cfg=cfg, dist=dist, rec=rec, shared_dir=shared_dir, run_dir=run_dir)
    try:
        for stage in STAGES:
            stage(job)
        rec.record({"status": "ok"})
    except interrupt.Interrupted as e:  # SIGTERM/SIGINT: training saved its checkpoint; a rerun resumes
        rec.interrupted(e)
        raise
    except Exception as e:
        rec.failed(e)
        raise
    finally:
        other = rec.close()
    metrics = rec.metrics
    if rc.student.push_to_hub and metrics["status"] == "ok" and dist.is_zero:  # results saved first, never lost
        from codistill.publishing import publish

        rec.record(publish(rc.student.push_to_hub, run_dir, metrics, redact(OmegaConf.to_yaml(cfg, resolve=True))))
        rec.write()
    if other:
        raise RuntimeError(other)
    return metrics


def prepare(job: Job) -> None:
    """Seeds, threads, the task and the problems (the dataset's hooks: its preparation, its
    split's description), the loggers, the decontamination check, and the method's own checks --
    everything that can fail before a model is loaded for sampling."""
    import pytorch_lightning as pl
    import torch

    from codistill import distributed
    from codistill.datasets import build_dataset
    from codistill.datasets.contamination import check as check_contamination
    from codistill.execution import isolation_info
    from codistill.methods import RunContext, build_method
    from codistill.sweep import wandb_group
    from codistill.tasks import build_task

    rc, rec = job.rc, job.rec
    pl.seed_everything(rc.seed, workers=True, verbose=False)
    distributed.prepare_models(rc)  # ranks > 1: rank 0 converts packaged models first
    torch.set_num_threads(compute_threads(job.dist.local_world))
    rec.record({"execution/isolation": isolation_info().get("level")})
    job.task = build_task(rc.dataset.task, rc.task)
    dataset = build_dataset(rc.dataset)
    train, test = dataset.load()
    rec.open_loggers(rc, OmegaConf.to_container(job.cfg, resolve=True), name=job_name(job.cfg),
                     group=wandb_group(rc.experiment_name))
    ctx = job.ctx = RunContext(cfg=rc, run_dir=job.run_dir, task=job.task, train=train, test=test,
                               cache_dir=os.path.expanduser(rc.cache_dir))
    rec.record(dataset.prepare(ctx))  # e.g. code_alpaca: the teacher helps make the tests
    train, test = ctx.train, ctx.test
    job.eval_task, eval_data = job.task, dataset
    if rc.eval_dataset is not None:  # e.g. train on code_alpaca, evaluate on HumanEval's test split
        job.eval_task, eval_data = build_task(rc.eval_dataset.task, rc.task), build_dataset(rc.eval_dataset)
        _, test = eval_data.load()
        rec.record({"eval_dataset": rc.eval_dataset.name})
    if rc.eval.max_problems is not None:
        test = test[:rc.eval.max_problems]
    ctx.test = test
    rec.record({"data/n_train_problems": len(train), "data/n_test_problems": len(test)})
    rec.record(rc.seed_metrics())  # seed/teacher, seed/teacher_mode: what the seeds vary
    check_contamination(rc.decontamination, train, test, job.run_dir, rec.metrics)  # fails on train/test overlap
    # what split is evaluated (e.g. HumanEval's, when it is not the standard 164 problems)
    rec.record(eval_data.describe(train if rc.eval_dataset is None else None, test))
    job.method = build_method(rc)
    job.method.check(ctx)  # e.g. kd compares the tokenizers: fails before any weights load


def evaluate_base(job: Job) -> None:
    """``eval.baseline``: the untrained student first (eval_base/*)."""
    from codistill.evaluation import evaluate

    rc, ctx = job.rc, job.ctx
    if rc.eval.enabled and rc.eval.baseline and rc.method.name != "none":
        model, tok, sid = ctx.load("student")
        base = evaluate(model, tok, job.eval_task, ctx.test, rc, run_dir=job.run_dir, model_id=sid,
                        cache_root=ctx.cache_dir, samples_file="eval_base_samples.jsonl")
        job.rec.record({k.replace("eval/", "eval_base/"): v for k, v in base.items()})
        ctx.release("student")


def build_training_set(job: Job) -> None:
    """The method's training plan, rank 0's on every rank."""
    from codistill.tracking import log_train_set

    log.info("stage: %s builds the training set", job.method.name)
    job.result = job.rec.shared(job.method.build(job.ctx))  # every rank trains on rank 0's data
    job.rec.log(job.result.metrics)
    log_train_set(job.rec.loggers, job.run_dir / "train_set.jsonl")


def train_student(job: Job) -> None:
    """Train on the plan (:func:`codistill.training.train`); save the student.  No plan: the
    base student, for evaluation."""
    rc, ctx, result = job.rc, job.ctx, job.result
    if result.pairs:
        from codistill.training import merge_lora, train

        log.info("stage: training the student on %d examples", len(result.pairs))
        faults.hit("stage", "train")
        model, tok, trained = train(result.plan, ctx, job.shared_dir, job.rec.loggers)
        job.rec.record(trained)
        model = merge_lora(model)  # LoRA: adapters merged, saved and evaluated as plain weights
        if rc.train.save_student and job.dist.is_zero:
            model.save_pretrained(job.run_dir / "student", safe_serialization=True)
            tok.save_pretrained(job.run_dir / "student")
        model.eval()
        job.model, job.tok, job.student_id = model, tok, None  # a trained student has no cache identity
    else:
        if result.pairs is not None:
            log.warning("the method kept no training examples: the student is evaluated untrained")
            job.rec.record({"train/skipped": "no training examples"})
        job.model, job.tok, job.student_id = ctx.load("student")


def evaluate_student(job: Job) -> None:
    """pass@k on the test problems, the fit check on trained-on problems, and the intervals."""
    rc, ctx, rec, run_dir, model, tok = job.rc, job.ctx, job.rec, job.run_dir, job.model, job.tok
    if not rc.eval.enabled:
        return
    from codistill.evaluation import evaluate, student_backend
    from codistill.evaluation.plus import plus_ci_metrics
    from codistill.models import resolve_dtype
    from codistill.stats import run_ci_metrics
    from codistill.tracking import log_eval_table

    test, trained = ctx.test, bool(job.result.pairs)
    log.info("stage: evaluating the student on %d problems", len(test))
    faults.hit("stage", "eval")
    model.to(resolve_dtype(rc.student.dtype))
    eval_backend = student_backend.build(student_backend.choose(rc, trained=trained, run_dir=run_dir), rc, model)
    rec.log(evaluate(model, tok, job.eval_task, test, rc, run_dir=run_dir, model_id=job.student_id,
                     cache_root=ctx.cache_dir, backend=eval_backend))
    log_eval_table(rec.loggers, run_dir / "eval_samples.jsonl", test)
    if trained and rc.eval.fit_max_problems > 0:  # sanity: did it learn what it was shown?
        fit = fit_problems(ctx.train, run_dir / "train_set.jsonl", rc.eval.fit_max_problems)
        fit_cfg = dataclasses.replace(rc, eval=dataclasses.replace(rc.eval, greedy=True, n_samples=0, k=[1],
                                                                   refine_steps=0))
        fm = evaluate(model, tok, job.task, fit, fit_cfg, run_dir=run_dir, model_id=None,
                      cache_root=ctx.cache_dir, samples_file="eval_fit_samples.jsonl", backend=eval_backend)
        rec.record({"train/fit_pass@1": fm["eval/pass@1"], "train/fit_n_problems": len(fit)})
    ci = run_ci_metrics(run_dir, rec.metrics)  # 95% intervals, trained - base with its p-value
    ci.update(plus_ci_metrics(run_dir, rec.metrics))  # EvalPlus: the plus figures' intervals
    rec.log(ci)


#: a run, in order; each stage reads and extends the Job
STAGES = (prepare, evaluate_base, build_training_set, train_student, evaluate_student)


CONF_DIR = str(Path(__file__).resolve().parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from codistill import redact as _redact
    from codistill.distributed import external_ranks
    from codistill.joblock import job_lock

    _redact.install(cfg)  # run.log and the console: secrets scrubbed from every line and traceback
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    in_sweep = hydra_sweep_dir() is not None
    ranks = external_ranks()
    if ranks is not None and ranks["rank"] != 0:  # torchrun / srun ranks share rank 0's job (and its lock)
        return _run_job(cfg, run_dir, in_sweep)
    # one running job per directory: a sweep waits for (or skips) a job another sweep is running
    with job_lock(run_dir, str(cfg.get("sweep_lock") or "wait") if in_sweep else "fail") as held:
        if not held:
            print(f"\nskipped ({run_dir}): another sweep is running this job\n", flush=True)
            return float("nan")
        return _run_job(cfg, run_dir, in_sweep)


def _run_job(cfg: DictConfig, run_dir: Path, in_sweep: bool) -> float | None:
    done = finished(run_dir) if in_sweep else None
    if done and finished(run_dir, config_digest(cfg), metrics=done):
        print(f"\nskipped ({run_dir}): finished before (status ok in metrics.json)\n", flush=True)
        return done.get("eval/pass@1")
    if done:
        print(f"\nrerun ({run_dir}): finished before under another config (config/digest differs)\n", flush=True)
    try:
        with interrupt.handlers():  # SIGTERM/SIGINT -> Interrupted: recorded, then exit 128+signum
            metrics = run(cfg, run_dir)
    except Exception as e:
        if isinstance(e, ConfigError):
            log.error("invalid config: %s", e)
        if not in_sweep:
            raise
        # a sweep goes on with its other jobs; SweepSummary reports this one at the end
        log.exception("job failed: %s", run_dir)
        recorded = read_metrics(run_dir) or {}
        if recorded.get("status") != "failed" or recorded.get("error") != redact(f"{type(e).__name__}: {e}"):
            run_dir.mkdir(parents=True, exist_ok=True)  # failed before run() wrote (a bad config value)
            write_metrics(run_dir, failure_metrics(cfg, run_dir, e))
        return float("nan")  # what a sweeper (Optuna) reads as a failed trial
    print(f"\nresults ({run_dir}):\n{results_table(metrics)}\n", flush=True)
    return metrics.get("eval/pass@1")


def main() -> None:
    """Console script ``codistill``: Hydra overrides on the command line.  A run (or a sweep)
    stopped by a signal exits 128 + signum after recording it (under SLURM: requeued)."""
    try:
        _hydra_main()
    except interrupt.Interrupted as e:
        print(f"\n{e}: state saved (metrics.json status: interrupted); run the same command again to resume\n",
              file=sys.stderr, flush=True)
        sys.exit(interrupt.exit_status(e))


if __name__ == "__main__":
    sys.exit(main())
