"""Numbers: percentages as text, paired per-episode differences, and the verdict on meta vs pretrained init."""
from __future__ import annotations

import math
from typing import Any

from metaprompt.run.stats import mean_ci95

from .entries import Entry


def pct(mean: float | None, ci: float | None = None, signed: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    if ci is not None and not math.isnan(ci):
        text += f" ± {100 * ci:.1f}"
    return text


def paired(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-episode differences a − b on the same episodes: mean, CI, and how often a is better."""
    if not a or not b:
        return None
    xs, ys = a.get("accuracies_per_episode"), b.get("accuracies_per_episode")
    if not xs or not ys or len(xs) != len(ys):
        return None
    diffs = [x - y for x, y in zip(xs, ys)]
    mean, ci = mean_ci95(diffs)
    return {"mean": mean, "ci": ci, "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "n": len(diffs)}


def ci_relation(meta: dict[str, Any], pre: dict[str, Any]) -> str:
    """'above', 'below' or 'overlap': the meta-learned init's 95% CI against the pretrained one's."""
    m, mc, p, pc = meta["accuracy_mean"], meta["accuracy_ci95"], pre["accuracy_mean"], pre["accuracy_ci95"]
    if any(v is None or math.isnan(v) for v in (mc, pc)):  # no CI (one episode): null in the JSON
        return "overlap"
    if m - mc > p + pc:
        return "above"
    if m + mc < p - pc:
        return "below"
    return "overlap"


def verdict(entry: Entry) -> tuple[str, bool]:
    """A sentence on meta vs pretrained, and whether the meta-learned init wins outright
    (non-overlapping 95% CIs)."""
    meta, pre = entry.row("meta"), entry.row("pretrained")
    if not meta or not pre:
        return ("only the " + ("meta-learned" if meta else "pretrained") + " init was scored", False)
    rel = ci_relation(meta, pre)
    d = paired(meta, pre)
    if d is None:
        paired_text = "no per-episode accuracies for a paired test"
        sig = 0
    else:
        ci = d["ci"] if d["ci"] is not None else math.inf  # one episode: no CI, nothing is significant
        sig = 1 if d["mean"] - ci > 0 else (-1 if d["mean"] + ci < 0 else 0)
        paired_text = {1: "paired Δ > 0", -1: "paired Δ < 0", 0: "paired Δ not different from 0"}[sig]
    if rel == "above":
        return f"**wins**: 95% CIs do not overlap; {paired_text}", True
    if rel == "below":
        return f"**loses**: 95% CIs do not overlap; {paired_text}", False
    if sig > 0:
        return f"better only on the paired test: 95% CIs overlap; {paired_text}", False
    if sig < 0:
        return f"worse on the paired test: 95% CIs overlap; {paired_text}", False
    return f"no significant difference: 95% CIs overlap; {paired_text}", False
