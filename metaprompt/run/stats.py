"""Summary statistics over episodes."""
from __future__ import annotations

import math
from typing import Sequence


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval (normal approximation, 1.96·s/√n),
    the convention of the few-shot literature."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def fmt_pct(mean: float, ci: float) -> str:
    return f"{100 * mean:.1f} ± {100 * ci:.1f}"
