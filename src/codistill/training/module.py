"""The student as a LightningModule: causal-LM loss, AdamW, warmup + linear decay.

Every ``log_every_n_steps`` optimizer steps it logs ``train/tokens_per_s`` (real tokens,
padding excluded, over the steps since the last log; per process) and ``train/mfu`` (see
:mod:`codistill.training.speed`; 0 when no FLOPs figure was given).

The whole-run figures (tokens trained, training seconds, the last step's losses) are saved in
every checkpoint and restored with it, so a resumed run reports what the whole training
produced, not only the part after the resume (nothing, when it resumed from the final one).
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch

from codistill.training.data import model_inputs
from codistill.training.speed import mfu


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: training stops at once, naming the step and the
    settings that usually cause it, instead of going on with NaN weights into evaluation."""


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
    def __init__(self, model, *, lr: float, weight_decay: float, warmup_steps: int,
                 flops_per_token: float = 0.0, peak_flops: float = 0.0, log_every_n_steps: int = 10) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.save_hyperparameters(ignore=["model"])
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.log_every = max(1, log_every_n_steps)
        self._t0: float | None = None  # start of the first step (whole-run figure)
        self._tokens = 0  # real (non-padding) tokens trained on since _t0
        self._win_t0: float | None = None
        self._win_tokens = 0
        self._t_end: float | None = None
        self._last: dict[str, torch.Tensor] = {}  # the last step's losses (train/loss, ...)
        self._prior = {"tokens": 0, "seconds": 0.0, "losses": {}}  # from the checkpoint resumed
        self.resumed_from_step: int | None = None

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(**model_inputs(batch), labels=batch["labels"])
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs)
        self._last = {"train/loss": out.loss.detach()}
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return out.loss

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Stop on a non-finite loss (here, so SFT and every KD loss are covered) before a NaN
        gradient reaches the weights."""
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                f"training loss is {float(loss.detach().float().flatten()[0])} at step {self.trainer.global_step} "
                f"(epoch {self.current_epoch}): the optimisation diverged. Likely causes: train.lr={self.lr} too "
                f"high, train.grad_clip too large or 0 (no clipping), too few train.warmup_steps, or "
                f"trainer.precision (16-mixed can overflow); for KD also method.temperature / method.alpha")

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self._t0 is None:
            self._t0 = self._win_t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        now = time.perf_counter()
        n_tok = int(batch["attention_mask"].sum())
        self._tokens += n_tok
        self._win_tokens += n_tok
        if self.trainer.global_step % self.log_every == 0 and now > self._win_t0:
            tps = self._win_tokens / (now - self._win_t0)
            figures = {"train/tokens_per_s": tps}
            if self.flops_per_token and self.peak_flops:
                figures["train/mfu"] = mfu(tps, self.flops_per_token, self.peak_flops)
            self.log_dict(figures, on_step=True, on_epoch=False, batch_size=batch["input_ids"].shape[0])
            self._win_t0, self._win_tokens = now, 0

    def _seconds(self) -> float:
        """Training seconds of this process in this session."""
        return ((self._t_end or time.perf_counter()) - self._t0) if self._t0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Tokens per second of this process over the whole training, resumed sessions included."""
        tokens = self._prior["tokens"] + self._tokens
        seconds = self._prior["seconds"] + self._seconds()
        return tokens / max(seconds, 1e-9) if tokens and seconds else 0.0

    @property
    def final_losses(self) -> dict[str, float]:
        """The last step's losses (``train/loss``, KD: ``train/kd_loss``, ``train/ce_loss``),
        carried over from the checkpoint when this session trained no step."""
        return {**self._prior["losses"], **{k: float(v) for k, v in self._last.items()}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["codistill/train_figures"] = {"tokens": self._prior["tokens"] + self._tokens,
                                                 "seconds": self._prior["seconds"] + self._seconds(),
                                                 "losses": self.final_losses}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._prior = {"tokens": 0, "seconds": 0.0, "losses": {}, **checkpoint.get("codistill/train_figures", {})}
        self.resumed_from_step = int(checkpoint.get("global_step", 0))

    def on_train_end(self) -> None:
        self._t_end = time.perf_counter()

    def configure_optimizers(self):
        on_cuda = next(self.model.parameters()).is_cuda
        opt = torch.optim.AdamW(param_groups(self.model, self.weight_decay), lr=self.lr, betas=(0.9, 0.95),
                                fused=on_cuda or None)
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_linear(s, self.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
