"""The PNG plots of a study (matplotlib, imported only here): validation accuracy during
meta-training, bars of the pretrained vs meta-learned init with 95% CI whiskers, and the paired
difference of each meta-learned row against the strongest practitioner baseline."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

from .baselines import strongest
from .compare import paired
from .describe import config_text, dataset_key, order_key, varying_keys
from .entries import Entry


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "runs"


def _short_label(e: Entry, keys: Sequence[str], with_data: bool = True) -> str:
    parts = [f"{e.dataset} {e.k_shot}-shot"] if with_data else []
    if keys:
        parts.append(config_text(e, keys))
    return "\n".join(parts) if parts else e.cell


def plot_curves(study: str, entries: list[Entry], out_dir: Path) -> Path | None:
    """Validation accuracy against meta-training episodes, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_curve = [e for e in entries if len(e.curve) >= 1 and not e.out_of_distribution]
    if not with_curve:
        return None
    datasets = sorted({e.dataset for e in with_curve}, key=dataset_key)
    keys = varying_keys(with_curve)
    ncols = min(len(datasets), 2) if len(datasets) > 1 else 1
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        members = sorted([e for e in with_curve if e.dataset == dataset], key=order_key)
        for e in members:
            pts = sorted(e.curve, key=lambda p: p.get("episodes", p.get("step", 0)))
            xs = [p.get("episodes", p.get("step", 0)) for p in pts]
            ys = [100 * p["val_accuracy"] for p in pts]
            cis = [100 * (p.get("val_ci95") or 0.0) for p in pts]
            label = f"{e.k_shot}-shot" + (f", {config_text(e, keys)}" if keys else "")
            line, = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
            ax.fill_between(xs, [y - c for y, c in zip(ys, cis)], [y + c for y, c in zip(ys, cis)],
                            color=line.get_color(), alpha=0.15, linewidth=0)
            best = max(range(len(ys)), key=lambda i: ys[i])
            ax.plot([xs[best]], [ys[best]], marker="*", markersize=11, color=line.get_color(),
                    markeredgecolor="black", markeredgewidth=0.5)
        ax.set_title(dataset, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("meta-training episodes", fontsize=9)
        ax.set_ylabel("validation accuracy (%)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        n = len(members)
        if n <= 4:
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
        else:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.suptitle(f"{study}: validation accuracy during meta-training\n(band: 95% CI; star: best point = saved init)",
                 fontsize=10)
    fig.tight_layout()
    path = out_dir / f"curves_{slug(study)}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_bars(study: str, entries: list[Entry], out_dir: Path) -> Path | None:
    """Pretrained vs meta-learned init (and the reference) per row, with 95% CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in entries if e.row("pretrained") or e.row("meta")]
    if not rows:
        return None
    keys = varying_keys(rows)
    with_data = len({(e.dataset, e.k_shot) for e in rows}) > 1 or not keys
    labels = [_short_label(e, keys, with_data) for e in rows]
    series = [("pretrained init", "pretrained", "#8da0cb", None), ("meta-learned init", "meta", "#fc8d62", None),
              ("reference (no training)", "reference", "#bbbbbb", "//")]
    series = [s for s in series if any((e.reference if s[1] == "reference" else e.row(s[1])) for e in rows)]
    width = 0.8 / len(series)
    longest = max(len(line) for label in labels for line in label.split("\n"))
    per_group = max(1.05, 0.075 * longest)  # inches: an 8-pt character is about 0.07 in wide
    rotate = per_group * len(rows) + 2.0 > 26  # too wide for level labels: slant them instead
    fig_w = max(6.0, (1.05 if rotate else per_group) * len(rows) + 2.0)
    fig, ax = plt.subplots(figsize=(min(fig_w, 26), 4.8 + (1.2 if rotate else 0)))
    for j, (name, init, color, hatch) in enumerate(series):
        xs, ys, errs = [], [], []
        for i, e in enumerate(rows):
            row = e.reference if init == "reference" else e.row(init)
            if not row:
                continue
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            ys.append(100 * row["accuracy_mean"])
            ci = row.get("accuracy_ci95")
            errs.append(100 * ci if ci is not None and not math.isnan(ci) else 0.0)
        if xs:
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=name, color=color, hatch=hatch,
                   edgecolor="black", linewidth=0.5, error_kw={"elinewidth": 1})
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("test accuracy (%), mean ± 95% CI", fontsize=9)
    ax.set_ylim(0, min(100, max(5.0, ax.get_ylim()[1] * 1.12)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    common = "" if with_data else f" ({rows[0].dataset} {rows[0].k_shot}-shot)"
    what = "pretrained vs meta-learned init" if any(e.row("meta") for e in rows) else "test accuracy"
    ax.set_title(f"{study}: {what}{common}", fontsize=11)
    fig.tight_layout()
    path = out_dir / f"bars_{slug(study)}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_baselines(entries: list[Entry], out_dir: Path) -> Path | None:
    """Paired Δ of each meta-learned row against the strongest practitioner baseline on its episodes
    (horizontal bars with 95% CI whiskers, grouped by data set and shot)."""
    points = []
    for e in sorted((x for x in entries if x.baselines and not x.results.get("copied_from")), key=order_key):
        best = strongest(e)
        d = paired(e.row("meta"), best.row) if best else None
        if d:
            points.append((e, best, d))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8.0, 1.4 + 0.3 * len(points)))
    cells = list(dict.fromkeys((e.dataset, e.k_shot) for e, _, _ in points))
    colors = ["#fc8d62", "#66c2a5", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f"]
    ys = list(range(len(points)))[::-1]
    named = set()
    for y, (e, best, d) in zip(ys, points):
        cell = (e.dataset, e.k_shot)
        label = None if cell in named else f"{e.dataset} {e.k_shot}-shot (vs {best.name})"
        named.add(cell)
        ci = 100 * d["ci"] if d["ci"] is not None else 0.0
        ax.barh(y, 100 * d["mean"], xerr=ci, color=colors[cells.index(cell) % len(colors)], edgecolor="black",
                linewidth=0.5, capsize=2, error_kw={"elinewidth": 1}, label=label)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{e.study}/{e.cell}" for e, _, _ in points], fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("meta-learned init − strongest baseline, paired (points), mean ± 95% CI", fontsize=9)
    ax.set_title("Meta-learned init against the strongest practitioner baseline on the same episodes", fontsize=10)
    fig.tight_layout()
    path = out_dir / "baselines_delta.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
