"""Selection over folds of the non-test classes, for splits whose validation is one set of classes.

Bao et al.'s splits give every data set exactly five validation classes, so every 5-way
validation episode has the *same* five classes and a choice made there measures those five only
(issue #24: the 20 Newsgroups 5-shot recipe led on validation by 1.5 points and trailed on test by
1.0). This script scores a recipe's variants the way a cross-validation would, on several held-out
class sets, without reading a test class:

1. the training and validation classes are pooled; test classes stay out of every fold;
2. fold f holds out ``--held`` classes (default: as many as the validation split has) and
   meta-trains on the rest: the pool, shuffled with ``--seed``, cut into consecutive windows that
   wrap around, so with ``folds × held ≥ pool`` every class is held out at least once;
3. per fold a split file is written (``data.dataset=custom`` over the same data file, the data
   set's label words copied into it) and each variant is meta-trained with ``metaprompt train``
   (resumed if a run directory is already there); its validation curve *is* the fold's score;
4. per fold the practitioner's baselines (nearest centroid, logistic regression, ridge classifier,
   each with the label words as one more support example) are scored on the same validation
   episodes, their ``C`` / ``λ`` chosen on those episodes: the same advantage a variant gets when
   its best checkpoint is read off the same curve.

It prints, per variant and validation point, each fold's accuracy, the mean over folds, and the
mean over folds of (variant − strongest baseline of that fold), with the number of folds where it
is ahead; and writes everything with the command, commit and versions to ``OUT/class_folds.json``.

    python experiments/class_folds.py configs/recipes/20news-5shot.yaml --out runs/folds-20news-5shot \
        --folds 3 --variant lora-ridge="" --variant prompt-ridge="prompt.length=8,peft.method=none,..."

Each ``--variant NAME=OVERRIDES`` is a comma-separated list of ``key=value`` config overrides
(empty: the config as it is). Cost: a full meta-training per variant and fold.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.baselines import BASELINES, MeanPooledEmbedder, choose_setting, score  # noqa: E402
from metaprompt.config import Config  # noqa: E402
from metaprompt.run.jsonio import dumps_strict  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.rundir import CHECKPOINT_FILE, SUMMARY_FILE  # noqa: E402
from metaprompt.run.setup import build_setup, fixed_episodes, load_data  # noqa: E402
from metaprompt.run.stats import mean_ci95  # noqa: E402


def make_folds(pool: list[int], held: int, folds: int, seed: int) -> list[tuple[int, ...]]:
    """``folds`` held-out class sets of size ``held``: windows over the shuffled pool, wrapping."""
    order = sorted(pool)
    random.Random(seed).shuffle(order)
    return [tuple(sorted(order[(f * held + i) % len(order)] for i in range(held))) for f in range(folds)]


def fold_split_file(dataset, held: tuple[int, ...], path: Path) -> Path:
    """A custom split file: the pool minus ``held`` to train on, ``held`` to validate on, the test
    classes as they were (never sampled here), the data set's names and label words."""
    s = dataset.splits
    pool = sorted(set(s.train) | set(s.val))
    obj = {"train": [c for c in pool if c not in held], "val": list(held), "test": list(s.test),
           "label_names": {str(c): s.name(c) for c in s.all_classes},
           "label_words": {str(c): list(dataset.label_words[c]) for c in s.all_classes}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


def train_variant(cfg: Config, run: Path) -> list[dict]:
    """Meta-train (or go on with) ``run``; its validation curve on the fold's held-out classes."""
    from metaprompt.run.train import train

    if not (run / SUMMARY_FILE).is_file():
        train(cfg, run, resume=(run / CHECKPOINT_FILE).is_file())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{"episodes": r["episodes"], "val_accuracy": r["val_accuracy"], "val_ci95": r.get("val_ci95")}
            for r in rows if "val_accuracy" in r]


def score_baselines(cfg: Config) -> dict[str, dict]:
    """Centroid, logistic regression and ridge (+ label words) on the fold's validation episodes,
    each tuned setting chosen on those episodes."""
    setup = build_setup(cfg)
    _, episodes = fixed_episodes(setup, "val", cfg.train.val_episodes, cfg.train.val_seed)
    embed = MeanPooledEmbedder(setup.backbone, max_length=cfg.data.max_text_tokens + 2, device=setup.device)
    words, texts, out = setup.dataset.label_words, setup.dataset.texts, {}
    for method in ("centroid", "linear_probe", "ridge"):
        spec_class = BASELINES.get(method)
        if spec_class.tuned is None:
            mean, ci = mean_ci95(score(spec_class(), embed, texts, episodes, words)[0])
            out[method] = {"setting": None, "val_accuracy": mean, "val_ci95": ci}
            continue
        best, tried = choose_setting(spec_class, embed, texts, episodes, words)
        out[method] = {"setting": {spec_class.tuned[0]: best}, "val_accuracy": tried[best],
                       "tried": {str(k): v for k, v in tried.items()}}
    return out


def summarise(variants: dict[str, list[list[dict]]], baselines: list[dict[str, dict]]) -> list[dict]:
    """Per variant and validation point: fold accuracies, their mean, and the mean over folds of
    (variant − that fold's strongest baseline)."""
    strongest = [max(b.values(), key=lambda r: r["val_accuracy"])["val_accuracy"] for b in baselines]
    rows = []
    for name, curves in variants.items():
        points = sorted(set.intersection(*(set(p["episodes"] for p in c) for c in curves)))
        for ep in points:
            accs = [next(p["val_accuracy"] for p in c if p["episodes"] == ep) for c in curves]
            diffs = [a - s for a, s in zip(accs, strongest)]
            rows.append({"variant": name, "episodes": ep, "folds": accs, "mean": sum(accs) / len(accs),
                         "minus_strongest": sum(diffs) / len(diffs), "ahead_in_folds": sum(d > 0 for d in diffs)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the split files and fold runs")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--held", type=int, default=None, help="held-out classes per fold (default: |val|)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the class pool")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a named variant: comma-separated key=value overrides (repeatable; default: the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every variant and the baselines (e.g. train.val_episodes=50)")
    args = parser.parse_args(argv)
    variants = dict(v.split("=", 1) if "=" in v else (v, "") for v in args.variant) or {"config": ""}
    base = Config.load(args.config, ["threads=1", *args.overrides])
    dataset = load_data(base)
    s = base.data
    pool = sorted(set(dataset.splits.train) | set(dataset.splits.val))
    held = args.held or len(dataset.splits.val)
    if held < s.n_way or len(pool) - held < s.n_way:
        parser.error(f"--held {held}: each fold needs at least {s.n_way} held-out and {s.n_way} training classes "
                     f"(the pool has {len(pool)})")
    folds = make_folds(pool, held, args.folds, args.seed)
    data_file = dataset.path
    curves: dict[str, list[list[dict]]] = {name: [] for name in variants}
    baselines = []
    for f, held_out in enumerate(folds):
        split = fold_split_file(dataset, held_out, args.out / f"fold{f}" / "splits.json")
        fold_sets = [*args.overrides, "threads=1", "data.dataset=custom", f"data.path={data_file}",
                     f"data.splits={split}"]
        print(f"fold {f}: held out {list(held_out)}; training on the other {len(pool) - held} classes")
        baselines.append(score_baselines(Config.load(args.config, fold_sets)))
        for name, overrides in variants.items():
            extra = [o.strip() for o in overrides.split(",") if o.strip()]
            cfg = Config.load(args.config, [*fold_sets, *extra])
            curves[name].append(train_variant(cfg, args.out / f"fold{f}" / name))
    rows = summarise(curves, baselines)
    header = " | ".join(f"fold {f}" for f in range(len(folds)))
    print(f"\n{s.dataset} {s.n_way}-way {s.k_shot}-shot, {len(folds)} folds of {held} held-out classes, "
          f"{base.train.val_episodes} validation episodes each (seed {base.train.val_seed})\n")
    print(f"| variant | episodes | {header} | mean | − strongest baseline (mean over folds) | folds ahead |")
    print("|---" * (len(folds) + 5) + "|")
    for r in rows:
        cells = " | ".join(f"{100 * a:.1f}" for a in r["folds"])
        print(f"| {r['variant']} | {r['episodes']} | {cells} | {100 * r['mean']:.1f} | "
              f"{100 * r['minus_strongest']:+.1f} | {r['ahead_in_folds']} / {len(folds)} |")
    for method in baselines[0]:
        accs = [b[method]["val_accuracy"] for b in baselines]
        cells = " | ".join(f"{100 * a:.1f}" for a in accs)
        print(f"| {method} + label words | – | {cells} | {100 * sum(accs) / len(accs):.1f} | | |")
    record = {"config": str(args.config), "dataset": s.dataset, "n_way": s.n_way, "k_shot": s.k_shot,
              "pool": pool, "folds": [list(h) for h in folds], "val_episodes": base.train.val_episodes,
              "val_seed": base.train.val_seed, "variants": variants, "curves": curves, "baselines": baselines,
              "summary": rows, "provenance": provenance()}
    (args.out / "class_folds.json").write_text(dumps_strict(record, indent=2), encoding="utf-8")
    print(f"\nwrote {args.out / 'class_folds.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
