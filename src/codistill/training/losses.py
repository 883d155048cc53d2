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

Across tokenizers (the student's and the teacher's ids mean different tokens;
:mod:`codistill.training.cross_tokenizer` pairs their positions):

- ULD (Universal Logit Distillation, Boizard et al. 2024): with ``s = sort_desc(p_S)`` and
  ``t = sort_desc(p_T)``, the shorter padded with zeros, ``W1 = sum_i |s_i - t_i|`` -- the
  Wasserstein-1 distance under the paper's cost (every pair of distinct tokens one apart)
  once the vocabularies' orders are dropped.  It is 0 for identical distributions (and any
  relabelling of one), symmetric, and at most 2.  A cached teacher gives only its top-k:
  then both sides keep their k largest values plus a tail (``1 - sum``) and
  ``W1_k = sum_{i<=k} |s_i - t_i| + |tail_S - tail_T|`` -- a lower bound of ``W1`` by the
  triangle inequality, equal to it when the teacher's tail is 0.
- aligned (GOLD-style hybrid): the vocabularies' shared pieces (same token string) are
  compared as identical outcomes with the usual divergence over ``{shared pieces} + rest``
  (the rest bucket holds each side's mass on its unshared tokens), and the unshared mass is
  compared by ULD over the sorted unshared probabilities: ``D(q_S, q_T) * T**2 + W1_unshared``.

The ULD terms compare probabilities (bounded, no log): they are not rescaled by ``T**2``.
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


def _position_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean over positions ``[N]``, or with per-position ``weights`` ``[N]`` the weighted mean of
    :func:`_weighted_mean` (weight-0 positions left out)."""
    if weights is None:
        return values.mean()
    return _weighted_mean(values, torch.ones_like(values, dtype=torch.bool), weights.to(values.device).reshape(-1))


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


def sorted_probs(logp: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(the k largest probabilities in descending order, the mass left out of them)``;
    ``k = None``: every probability, tail 0.  ``logp``: log-probabilities over the last dim."""
    p = logp.exp()
    top = torch.sort(p, dim=-1, descending=True).values if k is None or k >= p.shape[-1] else \
        torch.topk(p, k, dim=-1).values
    return top, (p.sum(-1) - top.sum(-1)).clamp(min=0.0)


def uld_distance(s_sorted: torch.Tensor, t_sorted: torch.Tensor, s_tail: torch.Tensor | float = 0.0,
                 t_tail: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-position ULD: ``sum_i |s_i - t_i| + |tail_S - tail_T|`` over descending-sorted
    probability vectors, the shorter padded with zeros (see the module docstring)."""
    n = max(s_sorted.shape[-1], t_sorted.shape[-1])
    s = F.pad(s_sorted, (0, n - s_sorted.shape[-1]))
    t = F.pad(t_sorted, (0, n - t_sorted.shape[-1]))
    return (s - t).abs().sum(-1) + torch.as_tensor(s_tail - t_tail).abs()


def uld_loss(student_logits: torch.Tensor, teacher_logp: torch.Tensor, *, complete: bool = True,
             temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """ULD over paired positions: ``mean_t W1(sort p_S,t, sort p_T,t)``.

    ``student_logits``: ``[N, V_S]``; ``teacher_logp``: ``[N, V_T]`` log-probabilities (any
    order) at temperature ``T``, the whole distribution (``complete``) or the teacher's
    top-k (cached: then :math:`W1_k` with tails).  The student is softened by the same ``T``.
    ``weights`` ``[N]``: a weighted mean over positions instead (on-policy feedback)."""
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if complete:
        s, s_tail = sorted_probs(s_logp)
        t, t_tail = sorted_probs(teacher_logp.float())
    else:
        k = teacher_logp.shape[-1]
        s, s_tail = sorted_probs(s_logp, k)
        t = torch.sort(teacher_logp.float().exp(), dim=-1, descending=True).values
        t_tail = (1.0 - t.sum(-1)).clamp(min=0.0)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return _position_mean(uld_distance(s, t, s_tail, t_tail), weights)


def aligned_kd_loss(student_logits: torch.Tensor, teacher_logp: torch.Tensor, teacher_ids: torch.Tensor,
                    t2s: torch.Tensor, *, kind: str = "forward_kl", beta: float = 0.5,
                    temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The hybrid loss of aligned positions: ``mean_t [T**2 D(q_S,t, q_T,t) + W1(unshared)]``.

    ``student_logits``: ``[N, V_S]``; ``teacher_logp`` / ``teacher_ids``: ``[N, K]`` the
    teacher's log-probs at temperature ``T`` and their ids (a cached top-k), or
    ``teacher_ids = None`` with ``teacher_logp`` over the whole vocabulary in id order; ``t2s``: ``[V_T]`` the student id of each teacher id's piece, or -1
    (:func:`~codistill.training.cross_tokenizer.piece_map`).  ``q``: the distributions over
    the shared pieces among the K teacher entries plus a rest bucket; the unshared part
    compares the teacher's unshared entries with the student's unshared probabilities,
    both sorted, over the K largest (all of them when the teacher's K covers its vocabulary).
    ``weights`` ``[N]``: a weighted mean over positions instead (on-policy feedback)."""
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t_logp = teacher_logp.float()
    if s_logp.shape[0] == 0:
        return student_logits.sum() * 0.0
    t2s = t2s.to(s_logp.device)
    if teacher_ids is None:
        return _aligned_dense(s_logp, t_logp, t2s, kind, beta, temperature, weights)
    sid = t2s[teacher_ids.long()]  # [N, K]
    shared = sid >= 0
    neg = torch.tensor(2 * LOG_FLOOR, device=s_logp.device)  # "absent": exp() is 0, gradients stay finite
    t_shared = torch.where(shared, t_logp, neg)
    s_shared = torch.where(shared, torch.gather(s_logp, -1, sid.clamp(min=0)), neg)
    kd = divergence(topk_with_rest(s_shared), topk_with_rest(t_shared), kind, beta) * temperature ** 2
    # unshared mass: the teacher's unshared entries among its K; every student id outside the map's image
    image = torch.zeros(s_logp.shape[-1], dtype=torch.bool, device=s_logp.device)
    image[t2s[t2s >= 0]] = True
    s_un = s_logp.exp()[:, ~image]
    t_un = t_logp.exp().masked_fill(shared, 0.0)
    # a top-k teacher: the student's K largest; a complete one (K = V_T): all of the student's
    k = s_un.shape[-1] if t_un.shape[-1] >= t2s.shape[0] else min(t_un.shape[-1], s_un.shape[-1])
    s_top = torch.topk(s_un, k, dim=-1).values
    t_top = torch.sort(t_un, dim=-1, descending=True).values
    return _position_mean(kd + uld_distance(s_top, t_top), weights)


def _aligned_dense(s_logp: torch.Tensor, t_logp: torch.Tensor, t2s: torch.Tensor, kind: str, beta: float,
                   temperature: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`aligned_kd_loss` with the teacher's whole vocabulary (``t_logp`` in id order):
    the shared columns are gathered once, and the unshared parts sorted only as far as the
    shorter one reaches (the longer one's remainder is its tail: ``W1`` exactly)."""
    t_cols = torch.nonzero(t2s >= 0).squeeze(-1)
    s_cols = t2s[t_cols]
    kd = divergence(topk_with_rest(s_logp[:, s_cols]), topk_with_rest(t_logp[:, t_cols]), kind, beta)
    image = torch.zeros(s_logp.shape[-1], dtype=torch.bool, device=s_logp.device)
    image[s_cols] = True
    s_un = s_logp[:, ~image].exp()
    t_un = t_logp[:, t2s < 0].exp()
    k = min(s_un.shape[-1], t_un.shape[-1])
    s_top, s_tail = sorted_probs(s_un.clamp(min=1e-45).log(), k)
    t_top, t_tail = sorted_probs(t_un.clamp(min=1e-45).log(), k)
    return _position_mean(kd * temperature ** 2 + uld_distance(s_top, t_top, s_tail, t_tail), weights)


def projected_kd_loss(student_logits: torch.Tensor, teacher_logp: torch.Tensor, teacher_ids: torch.Tensor | None,
                      t2s: torch.Tensor, *, kind: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """KD through first-token projection: ``mean_t T**2 D(p_S,t, P t_T,t)`` over aligned positions.

    ``student_logits``: ``[N, V_S]``; ``teacher_logp`` / ``teacher_ids``: ``[N, K]`` the teacher's
    log-probs at temperature ``T`` and their ids (a cached top-k), or ``teacher_ids = None`` with
    ``teacher_logp`` over the whole vocabulary in id order; ``t2s``: ``[V_T]`` each teacher id's
    student id (:func:`~codistill.training.cross_tokenizer.projection_map`), -1 for none.  The
    teacher's probabilities are summed per student id (``P t_T``); both sides are compared on
    the student ids the teacher's entries reach plus one rest bucket (the student's other mass;
    the teacher's top-k tail and unmapped mass), as the sparse top-k loss does -- exact for a
    complete teacher whose every piece maps.  ``weights`` ``[N]``: a weighted mean instead."""
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if s_logp.shape[0] == 0:
        return student_logits.sum() * 0.0
    t_p = teacher_logp.float().exp()
    t2s = t2s.to(s_logp.device)
    sid = t2s if teacher_ids is None else t2s[teacher_ids.long()]
    sid = torch.broadcast_to(sid, t_p.shape)
    mapped = sid >= 0
    q = torch.zeros_like(s_logp).scatter_add_(-1, sid.clamp(min=0), torch.where(mapped, t_p, 0.0))
    support = q > 0
    neg = torch.tensor(2 * LOG_FLOOR, device=s_logp.device)  # "absent": exp() is 0, gradients stay finite
    t_sup = torch.where(support, q.clamp(min=1e-45).log(), neg)
    s_sup = torch.where(support, s_logp, neg)
    d = divergence(topk_with_rest(s_sup), topk_with_rest(t_sup), kind, beta) * temperature ** 2
    return _position_mean(d, weights)


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not ``IGNORE`` (aligned)."""
    return F.cross_entropy(student_logits.float().reshape(-1, student_logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE)


def mix(kd: torch.Tensor, ce: torch.Tensor, alpha: float) -> torch.Tensor:
    """The training loss ``alpha * kd + (1 - alpha) * ce`` (``alpha = 1``: pure distillation)."""
    return alpha * kd + (1.0 - alpha) * ce


__all__ = ["IGNORE", "KINDS", "aligned_kd_loss", "ce_loss", "divergence", "kd_loss", "mix", "projected_kd_loss",
           "sorted_probs",
           "sparse_kd_loss", "topk_with_rest", "uld_distance", "uld_loss"]
