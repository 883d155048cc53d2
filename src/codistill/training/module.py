"""The student as a LightningModule: causal-LM loss, AdamW, warmup + linear decay."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms and embeddings' 1-d params."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_linear(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


class StudentLM(pl.LightningModule):
    def __init__(self, model, *, lr: float, weight_decay: float, warmup_steps: int) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.save_hyperparameters(ignore=["model"])
        self._t0: float | None = None
        self._tokens = 0

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"])
        n_tok = int(batch["attention_mask"].sum())
        self._tokens += n_tok
        if self._t0 is None:
            self._t0 = time.perf_counter()
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return out.loss

    def on_train_epoch_end(self) -> None:
        if self._t0 is not None:
            self.log("train/tokens_per_s", self.tokens_per_s)

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / max(time.perf_counter() - self._t0, 1e-9) if self._t0 else 0.0

    def configure_optimizers(self):
        opt = torch.optim.AdamW(param_groups(self.model, self.weight_decay), lr=self.lr, betas=(0.9, 0.95))
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_linear(s, self.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
