"""Summary statistics over episodes."""
from __future__ import annotations

import math
from typing import Sequence


def mean_ci95(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and half-width of the 95% confidence interval (normal approximation, 1.96·s/√n),
    the convention of the few-shot literature. None where it cannot be computed: the mean of
    no values, the CI of fewer than two (see :func:`ci95_note`); results files hold null there,
    never NaN, which is not JSON."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """Episode-by-episode ``a − b`` on the same episodes: mean, 95% CI half-width, and the
    number of episodes where ``a`` is better / worse."""
    diff = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean, ci = mean_ci95(diff)
    return {"mean": mean, "ci95": ci, "better": sum(d > 0 for d in diff), "worse": sum(d < 0 for d in diff)}


def ci95_note(n: int) -> str | None:
    """Why there is no CI for ``n`` values (None when there is one)."""
    if n >= 2:
        return None
    return f"a 95% CI needs at least 2 episodes, got {n}"


def fmt_pct(mean: float | None, ci: float | None) -> str:
    """``"71.3 ± 2.1"``; ``n/a`` for a mean or CI that could not be computed."""
    def ok(x):
        return x is not None and math.isfinite(x)

    return f"{100 * mean:.1f} ± {100 * ci:.1f}" if ok(mean) and ok(ci) else \
        f"{100 * mean:.1f} ± n/a" if ok(mean) else "n/a"
