"""The KD losses against their formulas (torch.distributions and hand-written sums on tiny tensors)."""

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from codistill.training.losses import (IGNORE, ce_loss, divergence, kd_loss, mix, sparse_kd_loss,
                                       topk_with_rest)


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def _kl(p_logits, q_logits):
    return kl_divergence(Categorical(logits=p_logits), Categorical(logits=q_logits))


def test_forward_and_reverse_kl_match_torch_distributions():
    s, t = _logits(3, 5, 11, seed=1), _logits(3, 5, 11, seed=2)
    ls, lt = s.log_softmax(-1), t.log_softmax(-1)
    torch.testing.assert_close(divergence(ls, lt, "forward_kl"), _kl(t, s))
    torch.testing.assert_close(divergence(ls, lt, "reverse_kl"), _kl(s, t))


def test_jsd_matches_its_formula_and_is_symmetric_at_half():
    s, t = _logits(4, 7, seed=3), _logits(4, 7, seed=4)
    ps, pt = s.softmax(-1), t.softmax(-1)
    beta = 0.3
    m = beta * pt + (1 - beta) * ps
    expected = beta * (pt * (pt / m).log()).sum(-1) + (1 - beta) * (ps * (ps / m).log()).sum(-1)
    torch.testing.assert_close(divergence(s.log_softmax(-1), t.log_softmax(-1), "jsd", beta), expected)
    a = divergence(s.log_softmax(-1), t.log_softmax(-1), "jsd", 0.5)
    b = divergence(t.log_softmax(-1), s.log_softmax(-1), "jsd", 0.5)
    torch.testing.assert_close(a, b)
    assert (a <= math.log(2) + 1e-6).all() and (a > 0).all()  # JSD is bounded by log 2


def test_jsd_end_points_are_the_kl_limits():
    s, t = _logits(2, 9, seed=5).log_softmax(-1), _logits(2, 9, seed=6).log_softmax(-1)
    torch.testing.assert_close(divergence(s, t, "jsd", 0.0), divergence(s, t, "forward_kl"))
    torch.testing.assert_close(divergence(s, t, "jsd", 1.0), divergence(s, t, "reverse_kl"))
    # and they are limits: JSD_beta / beta -> KL(p_T || p_S) as beta -> 0
    torch.testing.assert_close(divergence(s, t, "jsd", 1e-4) / 1e-4, divergence(s, t, "forward_kl"),
                               rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1)])
def test_zero_when_equal_and_gradients_finite(kind, beta):
    x = _logits(2, 6, 13, seed=7)
    labels = torch.randint(0, 13, (2, 6))
    assert kd_loss(x, x.clone(), labels, kind=kind, beta=beta, temperature=2.0).abs() < 1e-6
    s = _logits(2, 6, 13, seed=8).requires_grad_()
    t = x.clone()
    t[0, 0, 3] = -1e9  # a token the teacher rules out: no inf / nan anywhere
    loss = kd_loss(s, t, labels, kind=kind, beta=beta, temperature=2.0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(s.grad).all()


def test_temperature_and_t_squared_and_masking():
    s, t = _logits(2, 4, 10, seed=9), _logits(2, 4, 10, seed=10)
    labels = torch.tensor([[1, 2, IGNORE, IGNORE], [IGNORE, 5, 6, 7]])
    keep = labels != IGNORE
    T = 3.0
    expected = T ** 2 * _kl(t[keep] / T, s[keep] / T).mean()
    torch.testing.assert_close(kd_loss(s, t, labels, temperature=T), expected)
    # ignored positions do not matter
    s2 = s.clone()
    s2[0, 2] += 100
    torch.testing.assert_close(kd_loss(s2, t, labels, temperature=T), expected)


def test_ce_and_mix():
    s = _logits(2, 3, 8, seed=11)
    labels = torch.tensor([[1, IGNORE, 3], [4, 5, IGNORE]])
    keep = labels != IGNORE
    expected = -s[keep].log_softmax(-1).gather(-1, labels[keep][:, None]).mean()
    torch.testing.assert_close(ce_loss(s, labels), expected)
    assert mix(torch.tensor(2.0), torch.tensor(4.0), 0.25) == 0.25 * 2 + 0.75 * 4
    assert mix(torch.tensor(2.0), torch.tensor(4.0), 1.0) == 2.0


def test_topk_rest_bucket_is_a_distribution():
    lp = _logits(3, 20, seed=12).log_softmax(-1)
    top = lp.topk(5, dim=-1).values
    b = topk_with_rest(top)
    assert b.shape == (3, 6)
    torch.testing.assert_close(b.exp().sum(-1), torch.ones(3))
    torch.testing.assert_close(b[:, -1].exp(), 1 - top.exp().sum(-1))


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_sparse_with_full_k_equals_dense_and_small_k_lower_bounds_it(kind):
    s, t = _logits(2, 5, 12, seed=13), _logits(2, 5, 12, seed=14)
    labels = torch.tensor([[1, 2, 3, IGNORE, IGNORE], [4, 5, 6, 7, 8]])
    T = 1.5
    tl = (t / T).log_softmax(-1)
    dense = kd_loss(s, t, labels, kind=kind, temperature=T)
    v, i = tl.topk(12, dim=-1)
    torch.testing.assert_close(sparse_kd_loss(s, v, i, labels, kind=kind, temperature=T), dense)
    v, i = tl.topk(3, dim=-1)
    sparse = sparse_kd_loss(s.requires_grad_(), v, i, labels, kind=kind, temperature=T)
    assert 0 < sparse <= dense + 1e-6  # coarsening never increases a divergence (data processing)
    sparse.backward()
    assert torch.isfinite(s.grad).all()
    # the sparse loss by hand for one position: buckets = the 3 teacher tokens + the rest
    pos = (1, 0)
    ps = (s.detach()[pos] / T).softmax(-1)
    pt = tl[pos].exp()
    qs = torch.cat([ps[i[pos]], (1 - ps[i[pos]].sum())[None]])
    qt = torch.cat([pt[i[pos]], (1 - pt[i[pos]].sum())[None]])
    if kind == "forward_kl":
        one = (qt * (qt / qs).log()).sum()
        only = torch.tensor([[IGNORE] * 5, [4] + [IGNORE] * 4])
        torch.testing.assert_close(sparse_kd_loss(s.detach(), v, i, only, kind=kind, temperature=T), T ** 2 * one)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shared vocabulary"):
        kd_loss(torch.zeros(2, 5), torch.zeros(2, 6), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="kind"):
        divergence(torch.zeros(2, 5), torch.zeros(2, 5), "tvd")
