"""The Markdown tables: accuracy per row, significance, and all rows side by side.

**Bold** marks the best value of a column among the rows scored on the same test episodes
(:attr:`Entry.block`), where there are at least two.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from .compare import ci_relation, paired, pct, verdict
from .describe import config_text, order_key
from .entries import Entry


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _peak_memory(entry: Entry) -> str:
    """Peak resident memory of the meta-training process and of the evaluation process (MB)."""
    def mb(value: Any) -> str:
        return f"{value:,.0f}" if isinstance(value, (int, float)) else "–"
    return f"{mb((entry.summary or {}).get('peak_rss_mb'))} / {mb(entry.results.get('peak_rss_mb'))}"


def _bold_best(rows: list[list[str]], values: list[list[float | None]], columns: Sequence[int],
               groups: list[tuple]) -> None:
    """Bold the best value of each column among rows of the same group (when a group has ≥ 2 rows)."""
    for col in columns:
        by_group: dict[tuple, list[int]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        for members in by_group.values():
            scored = [(values[i][col], i) for i in members if values[i][col] is not None
                      and not math.isnan(values[i][col])]
            if len(scored) < 2:
                continue
            best = max(round(100 * v, 1) for v, _ in scored)
            for v, i in scored:
                if round(100 * v, 1) == best:
                    rows[i][col] = f"**{rows[i][col]}**"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------------- sections
def chosen_step(result: dict[str, Any] | None) -> str:
    """The meta-test backbone step ``eval.select_backbone_lr`` chose for this init, if any."""
    selected = (result or {}).get("selected")
    return f" (step {selected['inner_lr_backbone']:g})" if selected else ""


def accuracy_table(entries: list[Entry], keys: Sequence[str] | None = None) -> list[str]:
    header = ["data set", "shot", "config", "pretrained init", "meta-learned init", "Δ meta − pretrained (paired)",
              "reference (no training)", "trainable params", "meta-training", "s / test episode",
              "peak RSS MB (train / test)", "test episodes"]
    rows, values, groups = [], [], []
    for e in entries:
        pre, meta = e.row("pretrained"), e.row("meta")
        d = paired(meta, pre)
        ref = e.reference
        s = e.summary or {}
        if s:
            train = (f"{minutes(s.get('train_seconds'))}, {s.get('episodes', '?')} ep. "
                     f"(best @ {s.get('best_episodes', '?')})")
        else:
            train = "–" if meta is None else "(no train_summary.json)"
        timing = meta or pre
        ref_text = "–" if ref is None else pct(ref["accuracy_mean"], ref.get("accuracy_ci95")) + \
            (" †" if e.reference_from else "")
        rows.append([e.dataset, f"{e.results.get('n_way')}-way {e.k_shot}-shot", config_text(e, keys),
                     (pct(pre["accuracy_mean"], pre["accuracy_ci95"]) + chosen_step(pre) + (" ‡" if e.pretrained_from else ""))
                     if pre else "–",
                     pct(meta["accuracy_mean"], meta["accuracy_ci95"]) + chosen_step(meta) if meta else "–",
                     pct(d["mean"], d["ci"], signed=True) if d else "–", ref_text,
                     f"{e.results.get('trainable_params', 0):,}", train,
                     f"{timing['seconds_per_episode']:.2f}" if timing and "seconds_per_episode" in timing else "–",
                     _peak_memory(e), str(e.results.get("n_episodes", "?"))])
        values.append([None, None, None, pre["accuracy_mean"] if pre else None,
                       meta["accuracy_mean"] if meta else None, d["mean"] if d else None, None])
        groups.append(e.block)
    _bold_best(rows, values, (3, 4, 5), groups)
    notes = []
    if any(chosen_step(e.row(init)) for e in entries for init in ("pretrained", "meta")):
        notes = ["", "(step s): the backbone's SGD step at meta-test, chosen for that init on validation episodes "
                 "(`eval.select_backbone_lr`); rows without it adapt with `meta.inner_lr_backbone`."]
    return table(header, rows) + notes


def significance_table(entries: list[Entry], keys: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    header = ["data set", "shot", "config", "meta vs pretrained: 95% CIs", "paired Δ (pts)",
              "episodes meta better / worse", "paired Δ meta − reference (pts)", "verdict"]
    rows, misses = [], []
    for e in entries:
        pre, meta = e.row("pretrained"), e.row("meta")
        d = paired(meta, pre)
        dref = paired(meta, e.reference)  # a borrowed reference is on the same episodes, in the same order
        text, wins = verdict(e)
        rel = ci_relation(meta, pre) if meta and pre else None
        rel_text = {"above": "disjoint (meta above)", "below": "disjoint (meta below)", "overlap": "overlap",
                    None: "–"}[rel]
        rows.append([e.dataset, f"{e.k_shot}-shot", config_text(e, keys), rel_text,
                     pct(d["mean"], d["ci"], signed=True) if d else "–",
                     f"{d['better']} / {d['worse']} of {d['n']}" if d else "–",
                     pct(dref["mean"], dref["ci"], signed=True) if dref else "–", text])
        if not wins and meta and pre:
            detail = (f"{pct(meta['accuracy_mean'], meta['accuracy_ci95'])} vs "
                      f"{pct(pre['accuracy_mean'], pre['accuracy_ci95'])}")
            if d:
                detail += f", paired Δ {pct(d['mean'], d['ci'], signed=True)} pts"
            misses.append(f"- {e.dataset} {e.k_shot}-shot, {config_text(e, keys)} (`{e.cell}`): "
                          f"{text.replace('**', '')} ({detail}).")
    return table(header, rows), misses



def overview_table(entries: list[Entry]) -> list[str]:
    """Every row of every study on the same test episodes side by side."""
    header = ["data set", "shot", "study", "config", "pretrained init", "meta-learned init",
              "Δ meta − pretrained (paired)"]
    rows, values, groups = [], [], []
    for e in sorted((x for x in entries if not x.results.get("copied_from")), key=order_key):
        pre, meta = e.row("pretrained"), e.row("meta")
        d = paired(meta, pre)
        rows.append([e.dataset, f"{e.k_shot}-shot", e.study, config_text(e),
                     pct(pre["accuracy_mean"], pre["accuracy_ci95"]) if pre else "–",
                     pct(meta["accuracy_mean"], meta["accuracy_ci95"]) if meta else "–",
                     pct(d["mean"], d["ci"], signed=True) if d else "–"])
        values.append([None, None, None, None, pre["accuracy_mean"] if pre else None,
                       meta["accuracy_mean"] if meta else None, d["mean"] if d else None])
        groups.append(e.block)
    _bold_best(rows, values, (4, 5, 6), groups)
    return table(header, rows)
