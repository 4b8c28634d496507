"""``metaprompt baseline --method centroid | linear_probe | ridge | setfit``: a practitioner's baseline on
the fixed test episodes that ``metaprompt eval`` scores, written as a results file.

No training: the baseline reads each text as the prompt classifier does (``data.max_text_tokens``
word pieces plus the tokenizer's special tokens), with each class's label words as one more
support example unless ``baseline.label_words=false``. The logistic regression's ``C`` (the ridge
classifier's ``ridge_lambda``) is chosen on validation-class episodes (``baseline.val_episodes``,
seed ``train.val_seed``) unless ``baseline.C`` (``baseline.ridge_lambda``) is set. The score is a
row of ``references`` of the results file (``results`` is empty: there is no init), so a report
pairs it, episode by episode, with every results file of the same ``episodes_sha256``.

Each scored episode is appended to ``results.partial.jsonl`` in the output directory as it is
scored (:class:`~metaprompt.run.eval_progress.EpisodeScores`, fingerprinted by the config, the
method, its settings and the episodes): run the same command again after a kill and it goes on
from the next episode. SetFit costs 25-160 s per episode on one CPU core, so 100 episodes take hours.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from metaprompt.baselines import BASELINES, MeanPooledEmbedder, choose_setting, score
from metaprompt.config import Config
from metaprompt.results import check_results
from metaprompt.run.eval_progress import EpisodeScores, eval_fingerprint
from metaprompt.run.evaluate import test_episodes
from metaprompt.run.integrity import check_test_source, data_record
from metaprompt.run.jsonio import dumps_strict
from metaprompt.run.provenance import git_commit, peak_rss_mb, provenance
from metaprompt.run.rundir import (PARTIAL_FILE, RESULTS_FILE, RunDirError, check_run_dir, check_writable,
                                   used_entries)
from metaprompt.run.setup import Setup, build_setup, fixed_episodes
from metaprompt.run.stats import ci95_note, fmt_pct, mean_ci95


def reference_name(method: str, label_words: bool) -> str:
    return f"{method}{'+label_words' if label_words else ''}"


def choose_settings(setup: Setup, spec_class, embed: MeanPooledEmbedder, label_words) -> tuple[dict, dict | None]:
    """The method's settings, and how they were chosen (on validation episodes) when they were:
    a method's ``tuned`` setting comes from ``baseline.<setting>``, or when that is null is
    chosen among its candidates on validation-class episodes."""
    b = setup.cfg.baseline
    if spec_class.tuned is None:
        return {}, None
    name = spec_class.tuned[0]
    if getattr(b, name) is not None:
        return {name: getattr(b, name)}, None
    _, val = fixed_episodes(setup, "val", b.val_episodes, setup.cfg.train.val_seed)
    best, tried = choose_setting(spec_class, embed, setup.dataset.texts, val, label_words)
    return {name: best}, {"on": f"{len(val)} validation episodes (seed {setup.cfg.train.val_seed})",
                          "validation_accuracy": {str(c): v for c, v in tried.items()}}


def run_baseline(cfg: Config, method: str, progress: bool = True, out: Path | None = None) -> dict[str, Any]:
    """Score ``method`` on the test episodes of ``cfg``; returns the results dict (not written).

    ``out``: the output directory, where the episodes are logged as they are scored and where a
    killed run's log is picked up (the caller holds its lock)."""
    spec_class = BASELINES.get(method)
    commit, prov = git_commit(), provenance()  # the code that scores, not the checkout when it ends hours later
    setup = build_setup(cfg)
    check_test_source(setup)
    header, test, sha = test_episodes(setup, cfg.eval.episodes)
    words = cfg.baseline.label_words
    label_words = setup.dataset.label_words if words else None
    # The text the prompt classifier reads: data.max_text_tokens word pieces and the special tokens.
    embed = MeanPooledEmbedder(setup.backbone, max_length=cfg.data.max_text_tokens + 2, device=setup.device)
    settings, selected = choose_settings(setup, spec_class, embed, label_words)
    spec = spec_class(**settings)
    name = reference_name(method, words)
    log, done = None, []
    if out is not None:
        fingerprint = eval_fingerprint({**cfg.to_dict(), "baseline_run": {"method": method, **spec.settings()}},
                                       sha, None)
        log = EpisodeScores(Path(out) / PARTIAL_FILE, fingerprint)
        done = log.done(name)
        if done:
            print(f"{method}: {len(done)} of {len(test)} episodes already scored in {log.path}; going on from there")
    accs, seconds = score(spec, embed, setup.dataset.texts, test, label_words, progress=progress, done=done,
                          record=(lambda i, a, s: log.record(name, i, a, s)) if log else None)
    mean, ci = mean_ci95(accs)
    note = ci95_note(len(accs))
    row = {"name": name, "accuracy_mean": mean, "accuracy_ci95": ci,
           **({"accuracy_ci95_note": note} if note else {}), "accuracies_per_episode": accs, "seconds": seconds,
           "description": f"{spec.title}; settings {spec.settings()}"
                          f"{'; chosen on ' + selected['on'] if selected else ''}; label words as one more support "
                          f"example: {'yes' if words else 'no'}; {cfg.data.max_text_tokens} word pieces per text"}
    d = cfg.data
    return {"label": cfg.label, "dataset": d.dataset, "n_way": d.n_way, "k_shot": d.k_shot, "n_query": d.n_query,
            "split": "test", "test_classes": [int(c) for c in setup.dataset.splits.test],
            "data_files": data_record(setup), "n_episodes": len(test), "episodes_sha256": sha,
            "episodes_seed": header.get("seed"), "model": cfg.model.name, "seed": cfg.seed, "commit": commit,
            "method": f"baseline:{method}", "adaptation": {"mode": method, "settings": spec.settings(),
                                                          "selected": selected, "label_words": words},
            "results": [], "references": [row], "data_sha256": setup.dataset.sha256,
            "peak_rss_mb": peak_rss_mb(), "provenance": prov, "config": cfg.to_dict()}


def check_baseline_dir(out: Path) -> None:
    """``out`` must be new, empty, or hold only the episode log of a killed baseline run."""
    out = Path(out)
    entries = set(used_entries(out))
    if entries and entries <= {PARTIAL_FILE, PARTIAL_FILE + ".stale"}:
        check_writable(out, out)
    else:
        check_run_dir(out, resume=False)  # also names what is in the way


def write_baseline(results: dict[str, Any], out: Path) -> Path:
    """``out``/results.json; the episode log is deleted once it is written. The caller holds the lock."""
    path = Path(out) / RESULTS_FILE
    if path.exists():
        raise RunDirError(f"{path} was written by another process meanwhile; choose another --out")
    check_results(results, path)
    path.write_text(dumps_strict(results, indent=2), encoding="utf-8")
    (Path(out) / PARTIAL_FILE).unlink(missing_ok=True)
    return path


def format_row(results: dict[str, Any]) -> str:
    row = results["references"][0]
    return (f"{results['dataset']} {results['n_way']}-way {results['k_shot']}-shot, {results['n_episodes']} test "
            f"episodes (sha256 {results['episodes_sha256'][:12]}): {row['name']} "
            f"{fmt_pct(row['accuracy_mean'], row['accuracy_ci95'])} ({row['seconds']:.0f} s)")
