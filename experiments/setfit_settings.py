"""Which SetFit? The paper's 20 pair iterations per example against setfit 1.x's default pairs.

``metaprompt.baselines.SetFit`` fine-tunes on ``num_iterations=20`` positive and 20 negative pairs
per support example (the SetFit paper's R = 20, setfit 0.x's default); setfit 1.x's own default
(``num_iterations=None``) draws each unique pair, the rarer kind repeated, which is 5× fewer
pairs at 5-way 1-shot. This scores both on the same validation-class episodes of a config (test
episodes are never read), with each class's label words as one more support example, paired,
so that the baseline the recipes are compared with is the stronger of the two, not the cheaper.

    python experiments/setfit_settings.py --config configs/recipes/huffpost-1shot.yaml --episodes 30

Prints a table and writes ``experiments/results/baselines/setfit/settings-<dataset>-<k>shot.json``
(per-episode accuracies, seconds, the command, commit and versions).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.baselines import MeanPooledEmbedder, SetFit, score  # noqa: E402
from metaprompt.config import Config  # noqa: E402
from metaprompt.run.jsonio import dumps_strict  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.setup import build_setup, fixed_episodes  # noqa: E402
from metaprompt.run.stats import fmt_pct, mean_ci95, paired  # noqa: E402

SETTINGS = {"paper: 20 pair iterations per example": SetFit(num_iterations=20),
            "setfit 1.x default: oversampled unique pairs": SetFit(num_iterations=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=30, help="validation-class episodes (default 30)")
    parser.add_argument("--out", type=Path, help="JSON file (default under experiments/results/baselines/setfit)")
    args = parser.parse_args(argv)
    cfg = Config.load(args.config, ["threads=1"])
    setup = build_setup(cfg)
    d = cfg.data
    _, episodes = fixed_episodes(setup, "val", args.episodes, cfg.train.val_seed)
    embed = MeanPooledEmbedder(setup.backbone, max_length=d.max_text_tokens + 2, device=setup.device)
    rows = {}
    for name, spec in SETTINGS.items():
        accs, seconds = score(spec, embed, setup.dataset.texts, episodes, setup.dataset.label_words, progress=True)
        rows[name] = {"settings": spec.settings(), "accuracies_per_episode": accs, "accuracy": mean_ci95(accs),
                      "seconds_per_episode": seconds / len(accs)}
    (a, ra), (b, rb) = rows.items()
    first_minus_second = paired(ra["accuracies_per_episode"], rb["accuracies_per_episode"])
    print(f"{d.dataset} {d.n_way}-way {d.k_shot}-shot, {len(episodes)} validation episodes "
          f"(seed {cfg.train.val_seed}), {d.max_text_tokens} word pieces, label words as one more example")
    print("| SetFit pairs | accuracy | s/episode (one thread) |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {fmt_pct(*r['accuracy'])} | {r['seconds_per_episode']:.1f} |")
    d = first_minus_second
    print(f"paired, first − second: {fmt_pct(d['mean'], d['ci95'])} ({d['better']} better / {d['worse']} worse)")
    out = args.out or ROOT / "experiments/results/baselines/setfit" / f"settings-{d.dataset}-{d.k_shot}shot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps_strict({"dataset": d.dataset, "n_way": d.n_way, "k_shot": d.k_shot, "split": "val",
                                 "episodes": len(episodes), "episodes_seed": cfg.train.val_seed,
                                 "max_text_tokens": d.max_text_tokens, "model": cfg.model.name, "settings": rows,
                                 "first_minus_second": first_minus_second, "provenance": provenance()}, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
