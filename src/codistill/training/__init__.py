"""Training: fit the student on (prompt, completion) pairs with a Lightning Trainer.

Speed switches (``train.*``): ``packing`` (several examples per row, no attention across
them), ``compile`` (torch.compile), ``gradient_checkpointing``; TF32 matmuls on GPUs;
fused AdamW on CUDA; SDPA attention (transformers' default).  Strategy ``fsdp`` wraps each
transformer block (the model's ``_no_split_modules`` classes).  A memory estimate is
printed before training and a run that cannot fit fails then (``train.memory_check``).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytorch_lightning as pl

from codistill import interrupt
from codistill.training.data import PairDataModule, encode_example, model_inputs, pack_examples
from codistill.training.memory import check_fits, estimate_for_model
from codistill.training.module import StudentLM, param_groups, warmup_linear
from codistill.training.resume import ResumeCheckpoint, checkpoint_to_resume, data_digest, training_digest

log = logging.getLogger(__name__)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> ``bf16-mixed`` where bf16 arithmetic is fast, else ``32-true``."""
    if precision != "auto":
        return precision
    import torch

    from codistill.models import cpu_bf16_ok

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_bf16_ok() else "32-true"


def block_classes(model) -> set[type]:
    """The transformer block classes of a transformers model (its ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise ValueError(f"trainer.strategy=fsdp: no transformer block class found on {type(model).__name__} "
                         f"(_no_split_modules={sorted(names)})")
    return found


def build_strategy(strategy: str, model):
    """The Lightning strategy for a config string; ``fsdp`` wraps each transformer block."""
    if strategy == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy

        return FSDPStrategy(auto_wrap_policy=block_classes(model), sharding_strategy="FULL_SHARD",
                            state_dict_type="full")
    return strategy


def build_trainer(cfg, run_dir: Path, loggers: list, *, max_epochs: int, model=None,
                  callbacks: list | None = None, resume_meta: dict | None = None) -> pl.Trainer:
    """The Lightning Trainer; ``run_dir/checkpoints/last.ckpt`` is written by a
    :class:`~codistill.training.resume.ResumeCheckpoint` (``resume_meta``: the digests it records)."""
    t = cfg.trainer
    ckpt = ResumeCheckpoint(run_dir / "checkpoints", every_n_epochs=cfg.train.checkpoint_every_n_epochs,
                            every_n_steps=cfg.train.checkpoint_every_n_steps, meta=resume_meta)
    callbacks = list(callbacks or []) + [ckpt]
    strategy = build_strategy(t.strategy, model) if model is not None else t.strategy
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=resolve_precision(t.precision, t.accelerator), max_epochs=max_epochs, max_steps=t.max_steps,
        accumulate_grad_batches=cfg.train.grad_accum,
        gradient_clip_val=cfg.train.grad_clip or None, log_every_n_steps=t.log_every_n_steps,
        logger=loggers or False, callbacks=callbacks, enable_checkpointing=False,  # ResumeCheckpoint writes them
        enable_progress_bar=t.enable_progress_bar, enable_model_summary=False, default_root_dir=str(run_dir),
        num_sanity_val_steps=0, plugins=_slurm_plugins(),
    )


def _slurm_plugins() -> list:
    """Under SLURM: Lightning's SLURM environment without its auto-requeue -- codistill.interrupt
    saves, records and requeues on SIGTERM/SIGUSR1 itself, and the two must not both act."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _uses_cuda(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def _train_device(cfg):
    """The device this process trains on: its CUDA device when the accelerator uses one, else the CPU."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if _uses_cuda(cfg.trainer.accelerator) \
        else torch.device("cpu")


def prepare_model(model, cfg) -> None:
    """The speed switches that act on the model itself (in place)."""
    import torch

    if _uses_cuda(cfg.trainer.accelerator):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.train.compile:
        model.compile()  # in place: parameter names (and checkpoints) unchanged


def memory_preflight(model, cfg, *, seq_len: int | None = None, extra_bytes: int = 0, processes: int = 1) -> dict:
    """Estimate training memory, log it, and raise InsufficientMemoryError when it cannot fit.

    ``seq_len``: the longest row the batches will hold (batches are padded to their longest
    row), default ``train.max_seq_len``; ``extra_bytes``: other resident memory (an online KD
    teacher); ``processes``: ranks sharing this machine's RAM (CPU DDP)."""
    from codistill.training.memory import available_memory

    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    shards = 1
    if cfg.trainer.strategy.startswith("fsdp"):
        from codistill import distributed

        shards = distributed.world_size()
    seq_len = min(seq_len or cfg.train.max_seq_len, cfg.train.max_seq_len)
    est = estimate_for_model(model, batch=cfg.train.batch_size, seq_len=seq_len,
                             half_activations=precision.startswith(("bf16", "16")),
                             gradient_checkpointing=cfg.train.gradient_checkpointing, shards=shards,
                             extra_bytes=extra_bytes)
    device = _train_device(cfg)
    avail, what = available_memory(device)
    log.info("training memory estimate (batch %d x %d tokens): %s per process; %.2f GiB of %s",
             cfg.train.batch_size, seq_len, est.describe(), avail / 2 ** 30, what)
    if cfg.train.memory_check:
        # CPU: the loaded weights (student, online teacher) are already out of the available RAM
        resident = est.weights * shards + est.extra if device.type == "cpu" else 0
        check_fits(est, avail, what, processes=processes if device.type == "cpu" else 1, resident=resident)
    return {"train/memory_estimate_gib": round(est.total / 2 ** 30, 3), "train/memory_estimate_seq_len": seq_len}


def train(plan, ctx, run_dir: Path, loggers: list):
    """Train the student on ``plan`` (a :class:`codistill.methods.base.TrainingPlan`): from
    ``plan.init``, else the base student loaded for training; SFT, or the distillation
    ``plan.objective``.  Returns (model, tokenizer, training figures).  The run's training stage
    and expert iteration's rounds both train through here."""
    model = plan.init if plan.init is not None else ctx.load("student", for_training=True)[0]
    tok = ctx.tokenizer("student")
    return model, tok, train_student(model, tok, plan.examples, ctx.cfg, run_dir, loggers, kd=plan.objective)


def train_student(model, tokenizer, pairs: list[dict], cfg, run_dir: Path, loggers: list, *, kd=None,
                  extra_memory_bytes: int = 0, callbacks: list | None = None) -> dict:
    """Fine-tune ``model`` in place on ``pairs``; resumes from ``checkpoints/last.ckpt`` when it was
    written under the same training config and training set (:mod:`codistill.training.resume`).
    A signal (:mod:`codistill.interrupt`) stops it after the current step with the checkpoint
    saved, raising :class:`~codistill.interrupt.Interrupted`.

    ``kd`` (a :class:`codistill.training.kd.KDSpec`): train with a distillation loss (unpacked
    rows: the cached teacher top-k is looked up per example); an online teacher's weights are
    counted in the memory estimate.

    ``extra_memory_bytes`` feeds the memory estimate (e.g. a teacher kept for online KD);
    ``callbacks`` are extra Lightning callbacks (the training benchmark times steps with one)."""
    from codistill import distributed
    from codistill.training.speed import device_peak_flops, model_flops_per_token

    if kd is not None and kd.teacher is not None:
        extra_memory_bytes += sum(p.numel() * p.element_size() for p in kd.teacher.parameters())
    dm = PairDataModule(pairs, tokenizer, batch_size=cfg.train.batch_size, max_len=cfg.train.max_seq_len,
                        mask_prompt=cfg.train.mask_prompt, seed=cfg.seed, num_workers=cfg.train.num_workers,
                        packing=cfg.train.packing and kd is None)
    if kd is not None:  # the teacher's logits (online) and the ULD sorts (across tokenizers)
        from codistill.training.memory import kd_logit_bytes

        extra_memory_bytes += kd_logit_bytes(
            batch=cfg.train.batch_size, seq_len=min(dm.longest, cfg.train.max_seq_len),
            teacher_vocab=kd.teacher_vocab_size or kd.vocab_size, student_vocab=kd.vocab_size,
            online=kd.teacher is not None, cross=kd.cross != "shared")
    # sized for the longest row the data has, not train.max_seq_len: short examples need far less
    figures = memory_preflight(model, cfg, seq_len=dm.longest, extra_bytes=extra_memory_bytes,
                               processes=distributed.local_world_size())
    prepare_model(model, cfg)
    device = _train_device(cfg)
    peak, peak_src = device_peak_flops(device, cfg.train.peak_flops, resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator))
    fpt = model_flops_per_token(model, cfg.train.max_seq_len if cfg.train.packing else
                                max(1, dm.n_tokens // max(len(dm.items), 1)))
    if kd is not None and kd.teacher is not None:  # an online teacher's forward (1/3 of 6N) per token
        fpt += model_flops_per_token(kd.teacher, max(1, dm.n_tokens // max(len(dm.items), 1))) / 3
    module = StudentLM(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                       warmup_steps=cfg.train.warmup_steps, flops_per_token=fpt, peak_flops=peak,
                       log_every_n_steps=cfg.trainer.log_every_n_steps)
    if kd is not None:
        from codistill.training.kd import kd_modules

        dm, module = kd_modules(model, dm, cfg, kd, flops_per_token=fpt, peak_flops=peak)
    # resume only a checkpoint written under this training config and training set
    digests = {"train_config": training_digest(cfg), "train_data": data_digest(pairs)}
    resume_from = checkpoint_to_resume(run_dir / "checkpoints", digests) if distributed.rank() == 0 else None
    resume_from = distributed.broadcast_object(resume_from)
    trainer = build_trainer(cfg, run_dir, loggers, max_epochs=cfg.train.epochs, model=model, callbacks=callbacks,
                            resume_meta=digests)
    if resume_from:
        log.info("resuming training from %s", resume_from)
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        with interrupt.deferred():  # a signal stops training after a step, checkpoint saved
            trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None)
    except SIGTERMException:  # Lightning's own SIGTERM stop (a SystemExit(0)): a stop all the same
        raise interrupt.Interrupted(signal.SIGTERM) from None
    interrupt.check()  # a signal during the last step: the final checkpoint is written
    losses = module.final_losses
    tps = module.tokens_per_s * distributed.world_size()  # every rank trains on its own shard
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = {
        **figures,
        "train/examples": len(pairs),
        "train/rows": len(dm.items),
        "train/tokens": dm.n_tokens,
        "train/steps": int(trainer.global_step),
        "train/final_loss": losses.get("train/loss"),
        "train/tokens_per_s": tps,
        "train/mfu": tps * fpt / (peak * distributed.world_size()) if peak else None,
        "train/peak_flops_source": peak_src,
        "train/trainable_params": n_train,
        "train/world_size": distributed.world_size(),
        **{f"train/final_{k}": losses[f"train/{k}"]
           for k in ("kd_loss", "ce_loss", "rollout_pass_rate", "onpolicy_fraction") if f"train/{k}" in losses},
    }
    if module.resumed_from_step is not None:
        result["train/resumed_from_step"] = module.resumed_from_step
    del trainer, module, dm
    release_memory(model)
    return result


def release_memory(model) -> None:
    """Give the training state (optimizer moments, gradients, activations' arenas) back before
    evaluation: Lightning's trainer/module reference cycles hold it until a collection, and
    glibc keeps freed heap pages unless trimmed -- a 0.5B student's evaluation otherwise kept the
    ~12 GiB high-water mark of its training, which OOM-killed a sweep running beside another."""
    import gc

    gc.collect()
    try:
        import torch

        for p in model.parameters():
            p.grad = None  # the last step's gradients: as large as the trainable weights
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def merge_lora(model):
    """A PEFT (LoRA) model with its adapters merged into plain weights; other models as they are.

    The trained student is saved and evaluated merged, so ``<run>/student`` is an ordinary
    transformers checkpoint that loads without PEFT."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


__all__ = ["PairDataModule", "StudentLM", "block_classes", "build_trainer", "encode_example", "memory_preflight",
           "merge_lora", "model_inputs", "pack_examples", "param_groups", "train", "train_student", "warmup_linear"]
