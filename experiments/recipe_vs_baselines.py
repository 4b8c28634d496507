"""A recipe's meta-learned init against the strongest practitioner baseline, paired, per cell.

Reads a recipe run's evaluation (``metaprompt train --config configs/recipes/<cell>.yaml`` then
``metaprompt eval``: the cell's 600 fixed test episodes) and the cell's baselines
(``experiments/results/baselines/<cell>.json``, written by ``practitioner_baselines.py`` on the
same episodes: the sha256 of the episodes must match), and writes
``experiments/results/recipes/<cell>.json`` (per-episode scores, paired differences against every
baseline, the validation curve the run chose its init on, the commands) and
``experiments/results/recipes/README.md`` + ``recipe_vs_baselines.png`` over every cell done.

SetFit costs 20-150 s per episode on this project's 2-core machines, so it is scored on the first
episodes of a cell only (``metaprompt baseline --method setfit --set eval.episodes=N``, copied to
``experiments/results/baselines/setfit/<cell>.json``): the episode sampler draws episodes one after
another from its seed, so those N are the first N of the cell's 600 (checked here by rebuilding
both sets), and the recipe and the strongest baseline are paired with it on them.

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
from metaprompt.run.stats import fmt_pct, mean_ci95, paired  # noqa: E402

BASELINES = ROOT / "experiments" / "results" / "baselines"
SETFIT = BASELINES / "setfit"
OUT = ROOT / "experiments" / "results" / "recipes"
CELLS = ("huffpost-1shot-prompt", "huffpost-5shot-prompt", "reuters-1shot-prompt", "reuters-5shot-prompt",
         "20news-1shot-prompt", "20news-5shot-prompt")



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


def setfit_comparison(cell: str, res: dict) -> dict | None:
    """SetFit (scored on the first N test episodes of ``cell``) against the recipe and the strongest
    baseline on those N episodes, paired; None when no SetFit file is committed for the cell."""
    path = SETFIT / f"{cell}.json"
    if not path.is_file():
        return None
    sf = read_results(path)
    _check_prefix(res, sf)
    n = sf["n_episodes"]
    theirs = sf["references"][0]
    base = json.loads((BASELINES / f"{cell}.json").read_text())
    strongest = next(b for b in base["baselines"] if b["baseline"] == res["strongest"])
    ours = res["recipe"]["accuracies_per_episode"][:n]
    lp = strongest["accuracies_per_episode"][:n]
    setfit = theirs["accuracies_per_episode"]
    return {"cell": cell, "n_episodes": n, "episodes_sha256": sf["episodes_sha256"], "setfit": theirs["name"],
            "setfit_settings": sf["adaptation"]["settings"], "setfit_seconds_per_episode": theirs["seconds"] / n,
            "setfit_accuracy": mean_ci95(setfit), "recipe_accuracy": mean_ci95(ours),
            "strongest": res["strongest"], "strongest_accuracy": mean_ci95(lp),
            "recipe_minus_setfit": paired(ours, setfit), "setfit_minus_strongest": paired(setfit, lp),
            "source": str(path.relative_to(ROOT))}


def _check_prefix(res: dict, sf: dict) -> None:
    """The SetFit file's episodes are the first ``n_episodes`` of the recipe's (same data, shots, seed)."""
    from episodes import make_episode_file
    from episodes.store import episodes_sha256
    from metaprompt.config import Config
    from metaprompt.run.setup import load_data

    cfg = Config.from_dict(res["recipe"]["config"], source="recipe results")
    d = cfg.data
    same = all(sf[k] == getattr(d, k) for k in ("n_way", "k_shot", "n_query")) and sf["episodes_seed"] == cfg.eval.seed
    dataset = load_data(cfg)
    header, first = make_episode_file(dataset, "test", d.n_way, d.k_shot, d.n_query, sf["n_episodes"], cfg.eval.seed)
    header_all, every = make_episode_file(dataset, "test", d.n_way, d.k_shot, d.n_query, res["n_episodes"], cfg.eval.seed)
    if not (same and episodes_sha256(header, first) == sf["episodes_sha256"]
            and episodes_sha256(header_all, every) == res["episodes_sha256"] and every[:len(first)] == first):
        raise SystemExit(f"{res['cell']}: the SetFit file's episodes are not the first {sf['n_episodes']} of the cell's")


def setfit_table(rows: list[dict]) -> str:
    lines = ["| cell | test episodes | SetFit (+ label words) | recipe | strongest baseline | recipe − SetFit (paired) "
             "| SetFit − strongest (paired) | SetFit s/episode |", "|---" * 8 + "|"]
    for r in rows:
        rs, st = r["recipe_minus_setfit"], r["setfit_minus_strongest"]
        lines.append(f"| {r['cell']} | first {r['n_episodes']} | {fmt_pct(*r['setfit_accuracy'])} | "
                     f"{fmt_pct(*r['recipe_accuracy'])} | {r['strongest']}: {fmt_pct(*r['strongest_accuracy'])} | "
                     f"{fmt_pct(rs['mean'], rs['ci95'])} ({rs['better']} / {rs['worse']}) | "
                     f"{fmt_pct(st['mean'], st['ci95'])} ({st['better']} / {st['worse']}) | "
                     f"{r['setfit_seconds_per_episode']:.0f} |")
    return "\n".join(lines)


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


def plot(done: list[dict], setfit: list[dict], path: Path) -> None:
    """Per cell: the committed meta init, the strongest baseline and the recipe on all 600 episodes;
    where SetFit was scored, a fourth (hatched) bar for it on its first N episodes, with the recipe's
    accuracy on those same episodes marked on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 1.8 + 1.8 * len(done)), 4.2))
    names = ("committed meta init", "strongest baseline", "recipe")
    by_cell = {r["cell"]: r for r in setfit}
    width, labelled = 0.21, False  # the SetFit legend entries: on the first SetFit bar only
    for i, res in enumerate(done):
        best = next(r for r in res["baselines"] if r["baseline"] == res["strongest"])
        bars = [res["committed_meta_init"], best, res["recipe"]]
        for j, (name, b) in enumerate(zip(names, bars)):
            ax.bar(i + (j - 1.5) * width, 100 * b["accuracy_mean"], width * 0.95,
                   yerr=100 * (b["accuracy_ci95"] or 0), color=("#999999", "#e69f00", "#0072b2")[j],
                   label=name if i == 0 else None, capsize=2)
        sf = by_cell.get(res["cell"])
        if sf is not None:
            x = i + 1.5 * width
            ax.bar(x, 100 * sf["setfit_accuracy"][0], width * 0.95, yerr=100 * sf["setfit_accuracy"][1],
                   color="#cc79a7", hatch="//", capsize=2, label=None if labelled else "SetFit (first N episodes)")
            ax.plot([x - width / 2, x + width / 2], [100 * sf["recipe_accuracy"][0]] * 2, color="#0072b2", lw=2,
                    label=None if labelled else "recipe on those episodes")
            labelled = True
    ax.set_xticks(range(len(done)), [r["cell"].replace("-prompt", "") for r in done])
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_ylim(bottom=40)
    ax.set_title("offline MiniLM, 600 fixed test episodes per cell (SetFit: the first N)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=5, fontsize=8, frameon=False)
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
    setfit = [r for r in (setfit_comparison(res["cell"], res) for res in done) if r is not None]
    if setfit:
        (OUT / "setfit.json").write_text(dumps_strict(setfit, indent=2), encoding="utf-8")
        text += ("\n\nSetFit (the `setfit` library's defaults but the paper's 20 pair iterations per example; "
                 "label words as one more support example) on the first test episodes of a cell only (its cost: "
                 "last column, one thread), paired on those episodes (`setfit.json`):\n\n" + setfit_table(setfit))
    missing = [c for c in CELLS if c not in {res["cell"] for res in done}]
    if missing:
        text += (f"\n\nCells without a recipe row: {', '.join(missing)} (no recipe won on validation or none was "
                 "run: [docs/recipes.md](../../../docs/recipes.md) says which, with the validation scores).")
    print(text)
    plot(done, setfit, OUT / "recipe_vs_baselines.png")
    (OUT / "README.md").write_text(
        "# Recipes against the strongest practitioner baseline\n\n"
        "Made by `python experiments/recipe_vs_baselines.py` (its docstring has the protocol; per-cell JSON "
        "beside this file). Accuracy (%) ± 95% CI on each cell's 600 fixed test episodes; the recipe's init was "
        "chosen on validation classes only and scored once. Baselines (nearest centroid, logistic regression and a "
        "ridge classifier on frozen mean-pooled embeddings, each with and without the label words as one more "
        "support example) "
        "come from `experiments/results/baselines/`; the paired difference is recipe − strongest, episode by "
        f"episode.\n\n{text}\n\n![recipe vs baselines](recipe_vs_baselines.png)\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
