"""The committed meta-learned inits against the baselines a practitioner tries first, paired.

For each committed cell of the ``frozen`` study (offline MiniLM, HuffPost / Reuters / 20 News,
5-way 1- and 5-shot) this rebuilds the cell's 600 fixed test episodes (their sha256 must equal
the committed one), scores nearest centroid, logistic regression and a ridge classifier on
frozen mean-pooled embeddings, each without and with the class's label words as one extra support
example (the words the soft verbalizer starts from), and pairs every score with the committed meta-learned
init's score on the same episode.

Honest selection: the logistic regression's C (the ridge classifier's λ) is chosen per cell on
validation-class episodes (the cell's validation seed); the test episodes are scored once. Truncation: every baseline
reads the text the meta-learned classifier reads (``data.max_text_tokens`` word pieces, plus
[CLS]/[SEP]).

    python experiments/practitioner_baselines.py [--cells huffpost-1shot-prompt ...] [--methods ridge] \
        [--val-episodes 100]

Writes experiments/results/baselines/<cell>.json (scores per episode, paired differences,
command, commit, versions, model, data) and prints a table (also written to
experiments/results/baselines/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from episodes import make_episode_file  # noqa: E402
from episodes.store import episodes_sha256  # noqa: E402
from metaprompt.config import Config  # noqa: E402
from metaprompt.model.backbone import load_backbone  # noqa: E402
from metaprompt.baselines import BASELINES, MeanPooledEmbedder, choose_setting, score  # noqa: E402
from metaprompt.run.jsonio import dumps_strict  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.setup import load_data  # noqa: E402
from metaprompt.run.stats import fmt_pct, mean_ci95, paired  # noqa: E402

FROZEN = ROOT / "experiments" / "results" / "cpu" / "frozen"
OUT = ROOT / "experiments" / "results" / "baselines"
CELLS = ("huffpost-1shot-prompt", "huffpost-5shot-prompt", "reuters-1shot-prompt", "reuters-5shot-prompt",
         "20news-1shot-prompt", "20news-5shot-prompt")
METHODS = ("centroid", "linear_probe", "ridge")



def run_cell(cell: str, val_episodes: int, progress: bool, methods=METHODS) -> dict:
    """The cell's results; rows of methods not in ``methods`` are kept from its committed JSON."""
    committed = json.loads((FROZEN / cell / "results.json").read_text())
    cfg = Config.from_dict(committed["config"], source=f"{cell} results config")
    d = cfg.data
    dataset = load_data(cfg)
    if dataset.sha256 != committed["data_sha256"]:
        raise SystemExit(f"{cell}: the data file differs from the one the cell was scored on")
    header, test = make_episode_file(dataset, "test", d.n_way, d.k_shot, d.n_query, committed["n_episodes"],
                                     cfg.eval.seed)
    if episodes_sha256(header, test) != committed["episodes_sha256"]:
        raise SystemExit(f"{cell}: the rebuilt test episodes differ from the committed ones")
    _, val = make_episode_file(dataset, "val", d.n_way, d.k_shot, d.n_query, val_episodes, cfg.train.val_seed)
    backbone = load_backbone(cfg.model.name)
    embed = MeanPooledEmbedder(backbone, max_length=d.max_text_tokens + 2)
    texts = dataset.texts
    meta = next(r for r in committed["results"] if r["init"] == "meta")["accuracies_per_episode"]
    old = json.loads((OUT / f"{cell}.json").read_text()) if (OUT / f"{cell}.json").is_file() else {}
    kept = {r["baseline"]: r for r in old.get("baselines", []) if r["method"] not in methods}
    kept_choices = [c for c in old.get("validation", {}).get("choices", []) if c["baseline"] in kept]
    rows, validation = [], list(kept_choices)
    for method in METHODS:
        for words in (False, True):
            label_words = dataset.label_words if words else None
            name = f"{method}{' + label words' if words else ''}"
            if name in kept:
                rows.append(kept[name])
                continue
            if method not in methods:
                continue
            settings = {}
            spec_class = BASELINES.get(method)
            if spec_class.tuned:  # e.g. logistic regression's C: chosen on validation classes
                key = spec_class.tuned[0]
                settings[key], tried = choose_setting(spec_class, embed, texts, val, label_words)
                validation.append({"baseline": name, key: {str(c): v for c, v in tried.items()},
                                   "chosen": settings[key]})
            accs, seconds = score(spec_class(**settings), embed, texts, test, label_words,
                                  progress=progress)
            mean, ci = mean_ci95(accs)
            rows.append({"baseline": name, "method": method, "label_words": words, "settings": settings,
                         "accuracy_mean": mean, "accuracy_ci95": ci, "accuracies_per_episode": accs,
                         "seconds": seconds, "meta_minus_baseline": paired(meta, accs)})
    meta_mean, meta_ci = mean_ci95(meta)
    return {"cell": cell, "dataset": d.dataset, "n_way": d.n_way, "k_shot": d.k_shot, "n_query": d.n_query,
            "n_episodes": len(test), "episodes_sha256": committed["episodes_sha256"], "model": cfg.model.name,
            "data_sha256": dataset.sha256, "truncation": f"{d.max_text_tokens} word pieces of text + [CLS]/[SEP] "
            "(the text the meta-learned classifier reads)",
            "meta": {"accuracy_mean": meta_mean, "accuracy_ci95": meta_ci,
                     "source": str((FROZEN / cell / "results.json").relative_to(ROOT))},
            "validation": {"episodes": len(val), "seed": cfg.train.val_seed, "choices": validation},
            "baselines": rows, "provenance": provenance(),
            # the commands that scored the rows kept from the committed JSON
            **({"earlier_provenance": old.get("earlier_provenance", []) + [old["provenance"]]} if kept else {})}


def table(results: list[dict]) -> str:
    names = list(dict.fromkeys(r["baseline"] for res in results for r in res["baselines"]))
    lines = ["| cell | meta-learned init | " + " | ".join(names) + " | strongest baseline | meta − strongest |",
             "|---" * (len(names) + 4) + "|"]
    for res in results:
        by_name = {r["baseline"]: r for r in res["baselines"]}
        cells = [fmt_pct(by_name[n]["accuracy_mean"], by_name[n]["accuracy_ci95"]) if n in by_name else "–"
                 for n in names]
        best = max(res["baselines"], key=lambda r: r["accuracy_mean"])
        diff = best["meta_minus_baseline"]
        lines.append(f"| {res['cell']} | {fmt_pct(res['meta']['accuracy_mean'], res['meta']['accuracy_ci95'])} | "
                     + " | ".join(cells) + f" | {best['baseline']} | {fmt_pct(diff['mean'], diff['ci95'])} "
                     f"({diff['better']} better / {diff['worse']} worse) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="score these methods; the cell's other committed rows are kept")
    parser.add_argument("--val-episodes", type=int, default=100)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite README.md from the cells' JSON")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for cell in [] if args.table_only else args.cells:
        started = time.perf_counter()
        res = run_cell(cell, args.val_episodes, args.progress, tuple(args.methods))
        (OUT / f"{cell}.json").write_text(dumps_strict(res, indent=2), encoding="utf-8")
        results.append(res)
        print(f"{cell}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if results:
        print(table(results))
    # The table covers every cell scored so far (this run's and earlier ones').
    done = [json.loads((OUT / f"{cell}.json").read_text()) for cell in CELLS if (OUT / f"{cell}.json").is_file()]
    text = table(done)
    if done:
        (OUT / "README.md").write_text(
            "# Meta-learned init vs the baselines a practitioner tries first\n\n"
            f"Made by `python experiments/practitioner_baselines.py` (see its docstring for the protocol); "
            f"per-cell JSON beside this file. Accuracy (%) ± 95% CI over the committed 600 test episodes of "
            f"each `frozen` cell; the last column is the paired difference, meta-learned init − strongest "
            f"baseline, with the episodes on which it is better / worse. Truncation: each cell's "
            f"`data.max_text_tokens` (40 word pieces for HuffPost, 64 for Reuters and 20 News), the same for "
            f"every method in a row. Logistic regression's C was chosen per cell on 100 validation-class "
            f"episodes from {{0.1, 1, 10, 100}}, the ridge classifier's λ from {{0.01, 0.1, 1, 10}} (`validation` "
            f"in each JSON; `–`: not scored in that cell).\n\n{text}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
