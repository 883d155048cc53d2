"""Training: fit the student on (prompt, completion) pairs with a Lightning Trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from codistill.training.data import PairDataModule, encode_example
from codistill.training.module import StudentLM, param_groups, warmup_linear

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


def build_trainer(cfg, run_dir: Path, loggers: list, *, max_epochs: int) -> pl.Trainer:
    t = cfg.trainer
    every = cfg.train.checkpoint_every_n_epochs
    callbacks = [ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_epochs=every, save_on_train_epoch_end=True)] if every else []
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator), max_epochs=max_epochs, max_steps=t.max_steps,
        accumulate_grad_batches=cfg.train.grad_accum,
        gradient_clip_val=cfg.train.grad_clip or None, log_every_n_steps=t.log_every_n_steps,
        logger=loggers or False, callbacks=callbacks, enable_checkpointing=bool(every), enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False, default_root_dir=str(run_dir), num_sanity_val_steps=0,
    )


def train_student(model, tokenizer, pairs: list[dict], cfg, run_dir: Path, loggers: list, kd=None) -> dict:
    """Fine-tune ``model`` in place on ``pairs``; resumes from ``checkpoints/last.ckpt``.
    ``kd`` (a :class:`codistill.training.kd.KDSpec`): train with a distillation loss."""
    dm = PairDataModule(pairs, tokenizer, batch_size=cfg.train.batch_size, max_len=cfg.train.max_seq_len,
                        mask_prompt=cfg.train.mask_prompt, seed=cfg.seed, num_workers=cfg.train.num_workers)
    module = StudentLM(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                       warmup_steps=cfg.train.warmup_steps)
    if kd is not None:
        from codistill.training.kd import kd_modules

        dm, module = kd_modules(model, dm, cfg, kd)
    trainer = build_trainer(cfg, run_dir, loggers, max_epochs=cfg.train.epochs)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if last.exists() else None
    if ckpt_path:
        log.info("resuming training from %s", last)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    loss = trainer.callback_metrics.get("train/loss")
    return {
        "train/examples": len(pairs),
        "train/tokens": dm.n_tokens,
        "train/steps": int(trainer.global_step),
        "train/final_loss": float(loss) if loss is not None else None,
        "train/tokens_per_s": module.tokens_per_s,
        **{f"train/final_{k}": float(trainer.callback_metrics[f"train/{k}"])
           for k in ("kd_loss", "ce_loss") if f"train/{k}" in trainer.callback_metrics},
    }


__all__ = ["PairDataModule", "StudentLM", "build_trainer", "encode_example", "param_groups",
           "train_student", "warmup_linear"]
