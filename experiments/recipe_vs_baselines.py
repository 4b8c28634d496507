"""A recipe's meta-learned init against the strongest practitioner baseline, paired, per cell.

Reads a recipe run's evaluation (``metaprompt train --config configs/recipes/<cell>.yaml`` then
``metaprompt eval``: the cell's 600 fixed test episodes) and the cell's baselines
(``experiments/results/baselines/<cell>.json``, written by ``practitioner_baselines.py`` on the
same episodes: the sha256 of the episodes must match), and writes
``experiments/results/recipes/<cell>.json`` (per-episode scores, paired differences against every
baseline, the validation curve the run chose its init on, the commands) and
``experiments/results/recipes/README.md`` + ``recipe_vs_baselines.png`` over every cell done.

    python experiments/recipe_vs_baselines.py --cell huffpost-1shot-prompt --run runs/recipe-huffpost-1shot
    python experiments/recipe_vs_baselines.py            # table and plot from the committed JSON only
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.results import read_results, score  # noqa: E402
from metaprompt.run.jsonio import dumps_strict  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.stats import fmt_pct, mean_ci95  # noqa: E402

BASELINES = ROOT / "experiments" / "results" / "baselines"
OUT = ROOT / "experiments" / "results" / "recipes"
CELLS = ("huffpost-1shot-prompt", "huffpost-5shot-prompt", "reuters-1shot-prompt", "reuters-5shot-prompt",
         "20news-1shot-prompt", "20news-5shot-prompt")


def paired(a: list[float], b: list[float]) -> dict:
    diff = [x - y for x, y in zip(a, b, strict=True)]
    mean, ci = mean_ci95(diff)
    return {"mean": mean, "ci95": ci, "better": sum(d > 0 for d in diff), "worse": sum(d < 0 for d in diff)}


def error_reduction(ours: float, theirs: float) -> float:
    """Share of the baseline's errors the recipe removes: (e_baseline − e_recipe) / e_baseline."""
    return ((1 - theirs) - (1 - ours)) / (1 - theirs)


def validation_curve(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [{k: r[k] for k in r if k.startswith("val") or k in ("step", "episodes")} for r in rows
            if any(k.startswith("val") for k in r)]


def compare(cell: str, run: Path) -> dict:
    """``run``: the recipe's run directory (its results.json), or one of its results files."""
    results_file = run if run.is_file() else run / "results.json"
    run = results_file.parent
    results = read_results(results_file)
    base = json.loads((BASELINES / f"{cell}.json").read_text())
    if results["episodes_sha256"] != base["episodes_sha256"]:
        raise SystemExit(f"{cell}: {run}/results.json scored other episodes than the baselines "
                         f"({results['episodes_sha256'][:12]} vs {base['episodes_sha256'][:12]})")
    meta = score(results, "meta")
    untrained = score(results, "pretrained")
    ours = meta["accuracies_per_episode"]
    rows = [{"baseline": b["baseline"], "accuracy_mean": b["accuracy_mean"], "accuracy_ci95": b["accuracy_ci95"],
             "recipe_minus_baseline": paired(ours, b["accuracies_per_episode"]),
             "error_reduction": error_reduction(meta["accuracy_mean"], b["accuracy_mean"])}
            for b in base["baselines"]]
    strongest = max(rows, key=lambda r: r["accuracy_mean"])
    return {"cell": cell, "episodes_sha256": results["episodes_sha256"], "n_episodes": results["n_episodes"],
            "truncation": f"{results['config']['data']['max_text_tokens']} word pieces of text for every method",
            "recipe": {"accuracy_mean": meta["accuracy_mean"], "accuracy_ci95": meta["accuracy_ci95"],
                       "accuracies_per_episode": ours, "seconds_per_episode": meta.get("seconds_per_episode"),
                       "untrained_accuracy_mean": None if untrained is None else untrained["accuracy_mean"],
                       "config": results["config"], "validation_curve": validation_curve(run)},
            "committed_meta_init": {**base["meta"], "recipe_minus_it": paired(
                ours, _committed_meta(base))},
            "baselines": rows, "strongest": strongest["baseline"],
            "commands": [f"metaprompt train --config configs/recipes/{cell.rsplit('-', 1)[0]}.yaml --out {run}",
                         results["provenance"]["command"], " ".join(["python", *sys.argv])],
            "provenance": provenance()}


def _committed_meta(base: dict) -> list[float]:
    committed = read_results(ROOT / base["meta"]["source"])
    return score(committed, "meta")["accuracies_per_episode"]


def table(done: list[dict]) -> str:
    lines = ["| cell | recipe (meta-learned) | untrained recipe | committed meta init | strongest baseline | "
             "recipe − strongest (paired) | better / worse episodes | error reduction |", "|---" * 8 + "|"]
    for res in done:
        best = next(r for r in res["baselines"] if r["baseline"] == res["strongest"])
        d = best["recipe_minus_baseline"]
        r = res["recipe"]
        untrained = "–" if r["untrained_accuracy_mean"] is None else f"{100 * r['untrained_accuracy_mean']:.1f}"
        lines.append(f"| {res['cell']} | {fmt_pct(r['accuracy_mean'], r['accuracy_ci95'])} | {untrained} | "
                     f"{fmt_pct(res['committed_meta_init']['accuracy_mean'], res['committed_meta_init']['accuracy_ci95'])}"
                     f" | {res['strongest']}: {fmt_pct(best['accuracy_mean'], best['accuracy_ci95'])} | "
                     f"{fmt_pct(d['mean'], d['ci95'])} | {d['better']} / {d['worse']} | "
                     f"{100 * best['error_reduction']:.1f}% |")
    return "\n".join(lines)


def plot(done: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.8, 1.8 + 1.6 * len(done)), 3.6))
    names = ("committed meta init", "strongest baseline", "recipe")
    for i, res in enumerate(done):
        best = next(r for r in res["baselines"] if r["baseline"] == res["strongest"])
        bars = [res["committed_meta_init"], best, res["recipe"]]
        for j, (name, b) in enumerate(zip(names, bars)):
            ax.bar(i + (j - 1) * 0.27, 100 * b["accuracy_mean"], 0.25, yerr=100 * (b["accuracy_ci95"] or 0),
                   color=("#999999", "#e69f00", "#0072b2")[j], label=name if i == 0 else None, capsize=2)
    ax.set_xticks(range(len(done)), [r["cell"].replace("-prompt", "") for r in done])
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_title("offline MiniLM, 600 fixed test episodes per cell", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=CELLS)
    parser.add_argument("--run", type=Path, help="the recipe's run directory (evaluated on the cell's episodes), or "
                                                 "one of its results files (e.g. results.meta-600ep.json)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.cell:
        if args.run is None:
            parser.error("--cell needs --run")
        res = compare(args.cell, args.run)
        (OUT / f"{args.cell}.json").write_text(dumps_strict(res, indent=2), encoding="utf-8")
    done = [json.loads((OUT / f"{c}.json").read_text()) for c in CELLS if (OUT / f"{c}.json").is_file()]
    if not done:
        print("no recipe results yet", file=sys.stderr)
        return 1
    text = table(done)
    print(text)
    plot(done, OUT / "recipe_vs_baselines.png")
    (OUT / "README.md").write_text(
        "# Recipes against the strongest practitioner baseline\n\n"
        "Made by `python experiments/recipe_vs_baselines.py` (its docstring has the protocol; per-cell JSON "
        "beside this file). Accuracy (%) ± 95% CI on each cell's 600 fixed test episodes; the recipe's init was "
        "chosen on validation classes only and scored once. Baselines (nearest centroid and logistic regression "
        "on frozen mean-pooled embeddings, each with and without the label words as one more support example) "
        "come from `experiments/results/baselines/`; the paired difference is recipe − strongest, episode by "
        f"episode.\n\n{text}\n\n![recipe vs baselines](recipe_vs_baselines.png)\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
