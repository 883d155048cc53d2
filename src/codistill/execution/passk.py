"""Unbiased pass@k estimator (Chen et al., 2021, "Evaluating Large Language Models Trained on Code")."""
from __future__ import annotations

import math

__all__ = ["pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n``
    generated samples, ``c`` of which are correct, is correct.

    Computed with the numerically stable product form
    ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which equals ``1 - C(n-c, k) / C(n, k)``
    without forming huge binomial coefficients.

    * ``n >= 1``, ``0 <= c <= n`` and ``k >= 1`` are required (``ValueError`` otherwise).
    * If ``n - c < k`` every draw of ``k`` samples contains a correct one: returns ``1.0``.
    * ``k > n`` is accepted on purpose (e.g. reporting pass@10 from fewer samples): the
      estimator is then saturated and returns ``1.0`` when ``c > 0`` and ``0.0`` when
      ``c == 0`` -- i.e. it is the best estimate available from ``n`` samples, *not* an
      unbiased estimate of pass@k. Callers that need unbiasedness must ensure ``n >= k``.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {type(v).__name__}")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must satisfy 0 <= c <= n (n={n}), got {c}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
    if c == 0:
        return 0.0
    if n - c < k:
        return 1.0
    # log-space product keeps full precision for very large n (10^4 and beyond)
    log_fail = math.fsum(math.log1p(-k / i) for i in range(n - c + 1, n + 1))
    return float(-math.expm1(log_fail))
