"""Token-level distillation losses: small pure functions over tensors.

Notation, per token position: ``p_T`` the teacher's next-token distribution, ``p_S`` the
student's, both at temperature ``T`` (``softmax(logits / T)``).

- forward KL   ``KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v))``  (mode-covering; Hinton et al.)
- reverse KL   ``KL(p_S || p_T) = sum_v p_S(v) (log p_S(v) - log p_T(v))``  (mode-seeking; MiniLLM)
- generalized JSD (GKD, Agarwal et al. 2024; TRL's ``generalized_jsd_loss``) with
  ``M = beta p_T + (1 - beta) p_S``:
  ``JSD_beta = beta KL(p_T || M) + (1 - beta) KL(p_S || M)``.
  ``beta = 0.5`` is the symmetric Jensen-Shannon divergence.  As in TRL, the end points are
  the limits of ``JSD_beta`` divided by its vanishing weight: ``beta = 0`` is the forward KL,
  ``beta = 1`` the reverse KL (``JSD_beta / beta -> KL(p_T || p_S)`` as ``beta -> 0``).

Temperature: divergences of the softened distributions are multiplied by ``T**2`` so their
gradients keep the scale of the ``T = 1`` loss (Hinton et al. 2015).  The total training
loss is ``alpha * kd + (1 - alpha) * ce`` (:func:`mix`).

Positions whose label is ``IGNORE`` (-100) do not count; losses are means over the kept
positions.  Logits here are already aligned with their targets (the caller shifts: the
logits at position ``t`` predict token ``t + 1``).

Sparse (cached) teacher: only the teacher's top-k log-probabilities and their token ids
are stored.  We use **top-k + a "rest" bucket**: both distributions are coarsened to the
``k + 1`` outcomes {the k teacher tokens, everything else}; the rest bucket holds
``1 - sum_topk p``.  Unlike renormalising over the top-k, this keeps both sides proper
distributions at their true scale (a student that puts mass outside the teacher's top-k is
penalised), is exact when the teacher's rest mass is 0 (e.g. ``k`` = vocabulary size), and
by the data-processing inequality never exceeds the full-vocabulary divergence.  Because the
rest mass depends on the temperature, cached log-probs are computed at the loss temperature
(the temperature is part of the cache key).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100
KINDS = ("forward_kl", "reverse_kl", "jsd")
#: log-probabilities are clamped here so 0 * log 0 terms stay finite (and their gradients)
LOG_FLOOR = -1e4


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` over the last dimension, from log-probabilities (0 log 0 = 0)."""
    log_p, log_q = log_p.clamp(min=LOG_FLOOR), log_q.clamp(min=LOG_FLOOR)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str = "forward_kl",
               beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence between two distributions given as log-probabilities over
    the last dimension (full vocabulary, or the k + 1 buckets of the sparse variant).

    ``kind``: ``forward_kl`` = KL(p_T || p_S), ``reverse_kl`` = KL(p_S || p_T), ``jsd`` =
    ``beta KL(p_T || M) + (1 - beta) KL(p_S || M)`` with ``M = beta p_T + (1 - beta) p_S``
    (``beta = 0`` / ``1``: the forward / reverse KL limits).  Returns shape ``logp.shape[:-1]``.
    """
    if kind == "forward_kl":
        return _kl(teacher_logp, student_logp)
    if kind == "reverse_kl":
        return _kl(student_logp, teacher_logp)
    if kind != "jsd":
        raise ValueError(f"kind: {kind!r} is not one of {list(KINDS)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta: must be in [0, 1], got {beta}")
    if beta == 0.0:
        return _kl(teacher_logp, student_logp)
    if beta == 1.0:
        return _kl(student_logp, teacher_logp)
    s, t = student_logp.clamp(min=LOG_FLOOR), teacher_logp.clamp(min=LOG_FLOOR)
    mix = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1.0 - beta)]), dim=0)
    return beta * _kl(t, mix) + (1.0 - beta) * _kl(s, mix)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _weighted_mean(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t v_t / |{t: mask_t, w_t > 0}|``: positions of weight 0 are dropped (not counted),
    other weights scale their position's share of the mean.  All weights 0: a zero that still
    carries the graph (every DDP rank then still runs its backward)."""
    w = weights.to(values.dtype) * mask.to(values.dtype)
    return (values * w).sum() / (w > 0).to(values.dtype).sum().clamp(min=1.0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            kind: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Dense KD loss: ``T**2 * mean_{t: labels_t != IGNORE} D(p_S,t, p_T,t)`` at temperature ``T``.

    ``student_logits`` and ``teacher_logits``: ``[..., V]`` (same ``V``: slice to the shared
    vocabulary first); ``labels``: ``[...]``, aligned with the logits.  Computed in float32.
    ``weights`` (broadcastable to ``labels``, e.g. ``[B, 1]`` per sequence): ``T**2 * sum_t w_t D_t
    / |{t: w_t > 0}|`` instead -- a weight-0 sequence is left out, a weight-0.5 one counts half.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; slice both to the shared vocabulary")
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    d = divergence(s, t, kind, beta)
    if weights is None:
        return temperature ** 2 * _masked_mean(d, labels != IGNORE)
    return temperature ** 2 * _weighted_mean(d, labels != IGNORE, torch.broadcast_to(weights, labels.shape))


def topk_with_rest(logp_topk: torch.Tensor) -> torch.Tensor:
    """``[..., k]`` log-probs -> ``[..., k + 1]``: the k values and ``log(1 - sum exp)`` (the rest)."""
    top = torch.logsumexp(logp_topk, dim=-1, keepdim=True).clamp(max=-1e-7)
    rest = torch.log(-torch.expm1(top))  # log(1 - exp(top)), stable near 0
    return torch.cat([logp_topk, rest], dim=-1)


def sparse_kd_loss(student_logits: torch.Tensor, teacher_topk_logp: torch.Tensor, teacher_topk_ids: torch.Tensor,
                   labels: torch.Tensor, *, kind: str = "forward_kl", beta: float = 0.5,
                   temperature: float = 1.0) -> torch.Tensor:
    """KD loss from a cached top-k teacher: ``T**2 * mean_t D(q_S,t, q_T,t)`` over the k + 1
    buckets (top-k tokens + rest, see the module docstring).

    ``teacher_topk_logp`` are ``log softmax(teacher_logits / T)`` at the k ids
    ``teacher_topk_ids`` (``[..., k]``); ``student_logits``: ``[..., V]``; ``labels``: ``[...]``.
    """
    s_full = F.log_softmax(student_logits.float() / temperature, dim=-1)
    s = topk_with_rest(torch.gather(s_full, -1, teacher_topk_ids.long()))
    t = topk_with_rest(teacher_topk_logp.float())
    return temperature ** 2 * _masked_mean(divergence(s, t, kind, beta), labels != IGNORE)


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not ``IGNORE`` (aligned)."""
    return F.cross_entropy(student_logits.float().reshape(-1, student_logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE)


def mix(kd: torch.Tensor, ce: torch.Tensor, alpha: float) -> torch.Tensor:
    """The training loss ``alpha * kd + (1 - alpha) * ce`` (``alpha = 1``: pure distillation)."""
    return alpha * kd + (1.0 - alpha) * ce


__all__ = ["IGNORE", "KINDS", "ce_loss", "divergence", "kd_loss", "mix", "sparse_kd_loss", "topk_with_rest"]
