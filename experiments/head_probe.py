"""Which head, on which features? A validation-only probe behind the 5-shot recipes (issue #24).

For a trained run (``RUN``, a recipe run with a prompt) this encodes the run's validation-class
episodes (``train.val_episodes`` at ``train.val_seed``) three ways: the frozen backbone's
mean-pooled embeddings (what the baselines read), the classifier's states under the *untrained*
prompt, and under the run's *meta-learned* prompt; ``concat`` joins the frozen and meta-learned
vectors. On each it scores, with each class's label words as one more support example: prototypes
(share 1 / (k + 1)), logistic regression (scikit-learn, C in {0.1, 1, 10, 100}) and ridge regression
to one-hot targets (λ in {0.01, 0.1, 1, 10}), and pairs each with logistic regression on the frozen
embeddings at the C the baseline chose (``--baseline-C``). Test episodes are never read.

    python experiments/head_probe.py RUN [--episodes 100] [--baseline-C 100] [--out FILE.json]

Writes (default ``RUN/head_probe.json``) every (features, head, setting) with its mean accuracy,
95% CI and the paired difference, plus the command, commit and versions; prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaprompt.baselines.base import MeanPooledEmbedder, label_word_text  # noqa: E402
from metaprompt.config import Config  # noqa: E402
from metaprompt.run.evaluate import load_meta_params  # noqa: E402
from metaprompt.run.provenance import provenance  # noqa: E402
from metaprompt.run.setup import build_setup, fixed_episodes  # noqa: E402
from metaprompt.run.stats import mean_ci95  # noqa: E402


def encode_episodes(run: Path, count: int | None):
    cfg = Config.load(run / "config.yaml", ["threads=1"])
    setup = build_setup(cfg)
    _, episodes = fixed_episodes(setup, "val", count or cfg.train.val_episodes, cfg.train.val_seed)
    clf, texts, words = setup.classifier, setup.dataset.texts, setup.dataset.label_words
    params = {"init": clf.init_params(), "meta": load_meta_params(run, setup)[0]}
    frozen = MeanPooledEmbedder(setup.backbone, max_length=cfg.data.max_text_tokens + 2)
    out = []
    with torch.no_grad():
        for index, episode in enumerate(episodes):
            task = setup.task(episode, index)
            rec = {"support_labels": task.support.labels, "query_labels": task.query.labels,
                   "frozen": tuple(frozen(t) for t in ([texts[i] for i in episode.support],
                                                       [texts[i] for i in episode.query],
                                                       [label_word_text(words[c]) for c in episode.classes]))}
            for name, p in params.items():
                rec[name] = tuple(clf.encode(p, b)[0] for b in (task.support, task.query, clf.label_batch(task)))
            rec["concat"] = tuple(torch.cat([F.normalize(a, dim=-1), F.normalize(b, dim=-1)], -1)
                                  for a, b in zip(rec["frozen"], rec["meta"]))
            out.append(rec)
    return out


def _rows(support, labels, words):
    x = F.normalize(torch.cat([support, words]), dim=-1)
    return x, torch.cat([labels, torch.arange(len(words))])


def prototypes(support, labels, words, query, _):
    k = int((labels == 0).sum())
    s = F.normalize(support, dim=-1)
    means = F.normalize(torch.stack([s[labels == c].mean(0) for c in range(len(words))]), dim=-1)
    protos = k / (k + 1) * means + 1 / (k + 1) * F.normalize(words, dim=-1)
    return (F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T).argmax(-1)


def logistic(support, labels, words, query, c):
    from sklearn.linear_model import LogisticRegression

    x, y = _rows(support, labels, words)
    model = LogisticRegression(C=c, max_iter=1000).fit(x.numpy(), y.numpy())
    return torch.as_tensor(model.predict(F.normalize(query, dim=-1).numpy()))


def ridge(support, labels, words, query, lam):
    x, y = _rows(support, labels, words)
    x, targets = x.double(), F.one_hot(y).double()
    head = x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(len(x), dtype=x.dtype), targets)
    return (F.normalize(query, dim=-1).double() @ head).argmax(-1)


HEADS = [("prototypes", prototypes, None)] + [("logistic", logistic, c) for c in (0.1, 1.0, 10.0, 100.0)] + \
        [("ridge", ridge, lam) for lam in (0.01, 0.1, 1.0, 10.0)]


def accuracies(records, features, head, setting) -> list[float]:
    accs = []
    for r in records:
        support, query, words = r[features]
        preds = head(support, r["support_labels"], words, query, setting)
        accs.append(float((preds == r["query_labels"]).float().mean()))
    return accs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--baseline-C", type=float, default=100.0,
                        help="the C the logistic-regression baseline chose on these episodes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records = encode_episodes(args.run, args.episodes)
    base = accuracies(records, "frozen", logistic, args.baseline_C)
    rows = []
    for features in ("frozen", "init", "meta", "concat"):
        for name, head, setting in HEADS:
            accs = accuracies(records, features, head, setting)
            diff = [a - b for a, b in zip(accs, base)]
            mean, ci = mean_ci95(accs)
            dmean, dci = mean_ci95(diff)
            rows.append({"features": features, "head": name, "setting": setting, "accuracy_mean": mean,
                         "accuracy_ci95": ci, "minus_baseline": {"mean": dmean, "ci95": dci,
                                                                 "better": int(np.sum(np.array(diff) > 0)),
                                                                 "worse": int(np.sum(np.array(diff) < 0))}})
    out = args.out or args.run / "head_probe.json"
    out.write_text(json.dumps({"run": str(args.run), "val_episodes": len(records),
                               "baseline": f"logistic regression C={args.baseline_C} on frozen embeddings + label words",
                               "rows": rows, "provenance": provenance()}, indent=2), encoding="utf-8")
    print("| features | head | setting | validation accuracy (%) | − baseline (paired) |\n|---|---|---|---|---|")
    for r in rows:
        d = r["minus_baseline"]
        print(f"| {r['features']} | {r['head']} | {r['setting'] if r['setting'] is not None else '–'} | "
              f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_ci95']:.1f} | "
              f"{100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f} ({d['better']} / {d['worse']}) |")


if __name__ == "__main__":
    main()
