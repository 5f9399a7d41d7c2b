"""Spread over seeds: mean, sample standard deviation and the 95% confidence interval of the mean.

The interval is Student's t over the trials: ``mean ± t(0.975, n-1) · s / √n`` with ``s`` the sample
standard deviation (``n - 1`` in the denominator). One trial has no spread: its std and interval are
left out (None), never shown as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """``mean, min, max, std, ci_low, ci_high`` of ``values`` (std and interval None for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    out: dict[str, float | None] = {"mean": mean, "min": min(values), "max": max(values),
                                    "std": None, "ci_low": None, "ci_high": None}
    if n > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_quantile(n - 1) * std / math.sqrt(n)
        out.update(std=std, ci_low=mean - half, ci_high=mean + half)
    return out
