"""Score a trained run's init on its *validation* episodes under test-time variants (issue #24).

Selection of a recipe's test-time settings (``eval.steps``, ``eval.lr``, ...) is made here, on
the validation classes (the trainer's validation episodes: ``train.val_episodes`` at
``train.val_seed``), never on the test episodes. Each ``--variant`` is a comma-separated list of
``key=value`` config overrides; the empty variant is the run's own settings.

    python experiments/recipe_validation.py RUN_DIR --variant "" --variant "eval.steps=5,eval.lr=0.01" \
        [--init meta|pretrained] [--episodes 100] [--out FILE.jsonl]

Appends one JSON line per variant (validation accuracy ± 95% CI, s/episode, the command, the
commit) to ``--out`` (default: ``RUN_DIR/validation_variants.jsonl``) and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.config import Config  # noqa: E402
from metaprompt.run.evaluate import load_meta_params, score_init  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.setup import build_setup, fixed_episodes  # noqa: E402
from metaprompt.run.stats import fmt_pct  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--variant", action="append", default=[],
                        help="comma-separated key=value overrides (repeatable; '' = the run's own settings)")
    parser.add_argument("--init", choices=("meta", "pretrained"), default="meta")
    parser.add_argument("--episodes", type=int, default=None, help="validation episodes (default train.val_episodes)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or args.run / "validation_variants.jsonl"
    rows = []
    shared = None  # the run's own setup, reused by variants that change eval.* keys only
    for variant in args.variant or [""]:
        overrides = [v.strip() for v in variant.split(",") if v.strip()]
        cfg = Config.load(args.run / "config.yaml", overrides)
        if all(o.startswith("eval.") for o in overrides):
            shared = shared or build_setup(Config.load(args.run / "config.yaml"))
            setup = dataclasses.replace(shared, cfg=cfg)
        else:
            setup = build_setup(cfg)
        count = args.episodes or cfg.train.val_episodes
        _, episodes = fixed_episodes(setup, "val", count, cfg.train.val_seed)
        params = (load_meta_params(args.run, setup)[0] if args.init == "meta"
                  else setup.classifier.init_params())
        started = time.perf_counter()
        scored = score_init(setup, params, episodes, f"{args.init} {variant or '(run settings)'}")
        row = {"run": str(args.run), "init": args.init, "variant": variant, "val_episodes": count,
               "val_seed": cfg.train.val_seed, "val_mean": scored["accuracy_mean"], "val_ci95": scored["accuracy_ci95"],
               "seconds_per_episode": (time.perf_counter() - started) / count,
               "provenance": provenance()}
        rows.append(row)
        with out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    print("| init | variant | validation accuracy (%) | s/episode |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['init']} | {r['variant'] or '(run settings)'} | {fmt_pct(r['val_mean'], r['val_ci95'])} "
              f"| {r['seconds_per_episode']:.2f} |")


if __name__ == "__main__":
    main()
