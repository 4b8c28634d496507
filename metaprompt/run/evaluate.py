"""Meta-test: score the pretrained init and the meta-learned init on the same fixed test episodes."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from episodes import episodes_sha256
from metaprompt.config import Config, DataConfig
from metaprompt.meta.algorithms import build_algorithm
from metaprompt.meta.engines import build_engine
from metaprompt.model.backbone import ARCHITECTURE_FACTS
from metaprompt.peft import method_label
from metaprompt.run.adaptation import adapt_and_score
from metaprompt.run.checkpoint import load_init
from metaprompt.run.eval_progress import PARTIAL_FILE, EpisodeScores, eval_fingerprint
from metaprompt.run.integrity import check_data_unchanged, data_record, read_test_episodes
from metaprompt.run.jsonio import dumps_strict, read_json
from metaprompt.run.provenance import drift_message, git_commit, peak_rss_mb, provenance, version_drift
from metaprompt.run.reference import centroid_reference
from metaprompt.run.setup import Setup, build_setup, fixed_episodes
from metaprompt.run.stats import ci95_note, fmt_pct, mean_ci95
from metaprompt.run.train import BEST_FILE, CONFIG_FILE, RUN_FILE

RESULTS_FILE = "results.json"
log = logging.getLogger(__name__)


class EvalError(ValueError):
    pass


def test_episodes(setup: Setup, count: int) -> tuple[dict, list, str]:
    """The fixed test episodes: ``data.test_episodes_file`` if given (checked against the run's
    test classes, see :func:`metaprompt.run.integrity.read_test_episodes`), else seeded ones."""
    cfg = setup.cfg
    if cfg.data.test_episodes_file:
        stored = read_test_episodes(setup)
        header = stored.header
        episodes = stored.episodes[:count]
        if len(episodes) < count:
            raise EvalError(f"{cfg.data.test_episodes_file} has {len(stored.episodes)} episodes, {count} asked for")
        # the first ``count`` episodes: the hash of the file that would hold just them
        return header, episodes, stored.sha256 if len(episodes) == len(stored.episodes) else \
            episodes_sha256({**header, "count": len(episodes)}, episodes)
    header, episodes = fixed_episodes(setup, "test", count, cfg.eval.seed)
    return header, episodes, episodes_sha256(header, episodes)


def _algorithm(setup: Setup, backbone_lr: float | None = None):
    meta = setup.cfg.meta if backbone_lr is None else dataclasses.replace(setup.cfg.meta, inner_lr_backbone=backbone_lr)
    return build_algorithm(meta, build_engine(meta.engine), setup.classifier)


def select_backbone_lr(setup: Setup, params: dict[str, torch.Tensor], label: str) -> dict[str, Any] | None:
    """The candidate of ``eval.select_backbone_lr`` that scores best on validation episodes when
    ``params`` adapts with it (the first of equal ones); None when no candidates are set."""
    cfg = setup.cfg
    candidates = cfg.eval.select_backbone_lr
    if not candidates:
        return None
    _, episodes = fixed_episodes(setup, "val", cfg.eval.select_episodes, cfg.train.val_seed)
    validation = {}
    for lr in candidates:
        algorithm = _algorithm(setup, lr)
        accuracies = [adapt_and_score(algorithm, params, task, cfg.eval) for task in
                      tqdm(setup.tasks(episodes), total=len(episodes), desc=f"select {label} backbone step {lr:g}",
                           disable=not cfg.log.progress)]
        validation[lr] = mean_ci95(accuracies)[0]
    best = max(candidates, key=lambda lr: validation[lr])
    log.info("eval %s: backbone step %g (validation accuracy %s)", label, best,
             ", ".join(f"{lr:g}: {100 * acc:.1f}%" for lr, acc in validation.items()))
    return {"inner_lr_backbone": best, "val_episodes": len(episodes),
            "val_accuracy": {f"{lr:g}": acc for lr, acc in validation.items()}}


def score_init(setup: Setup, params: dict[str, torch.Tensor], episodes, label: str,
               scores: EpisodeScores | None = None) -> dict[str, Any]:
    """Adapt ``params`` on every episode and score its queries; ``scores``: skip the episodes it
    already holds and record each new one as soon as it is scored."""
    selected = scores.selected(label) if scores is not None else None
    if selected is not None:
        log.info("eval %s: backbone step %g, as chosen before the evaluation stopped (%s)",
                 label, selected["inner_lr_backbone"], scores.path.name)
    else:
        selected = select_backbone_lr(setup, params, label)
        if selected is not None and scores is not None:
            scores.record_selected(label, selected)
    # the scores saved under ``label`` were made with the step recorded before them (the fingerprint
    # fixes the candidates, and a choice is written before the first score made with it)
    algorithm = _algorithm(setup, selected and selected["inner_lr_backbone"])
    done = scores.done(label)[:len(episodes)] if scores is not None else []
    accuracies, times = [a for a, _ in done], [s for _, s in done]
    if done:
        log.info("eval %s: %d of %d episodes already scored (%s), going on from episode %d",
                 label, len(done), len(episodes), scores.path.name, len(done))
    remaining = (setup.task(episode, index) for index, episode in enumerate(episodes) if index >= len(done))
    for task in tqdm(remaining, total=len(episodes), initial=len(done), desc=f"eval {label}",
                     disable=not setup.cfg.log.progress):
        started = time.perf_counter()
        accuracy = adapt_and_score(algorithm, params, task, setup.cfg.eval)
        seconds = time.perf_counter() - started
        if scores is not None:
            scores.record(label, task.index, accuracy, seconds)
        accuracies.append(accuracy)
        times.append(seconds)
    mean, ci = mean_ci95(accuracies)
    return {"init": label, "accuracy_mean": mean, "accuracy_ci95": ci, **_ci_note(len(accuracies)),
            "accuracies_per_episode": accuracies,
            "seconds": sum(times), "seconds_per_episode": sum(times) / len(episodes),
            "episodes_resumed": len(done), **({"selected": selected} if selected else {})}


def load_meta_params(run_dir: Path, setup: Setup) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = run_dir / BEST_FILE
    if not path.is_file():
        hint = (f"continue its training with `metaprompt train --resume {run_dir}`"
                if (run_dir / "checkpoint.safetensors").is_file() else
                f"train it with `metaprompt train --config {run_dir / CONFIG_FILE} --out NEW_RUN_DIR`")
        raise EvalError(f"{path} not found: the run has no meta-learned init yet; {hint}")
    tensors, info = load_init(path)
    trained, here = info.get("base_model"), setup.backbone.facts()
    if isinstance(trained, dict):  # inits written before base models were recorded: the shape check below
        differ = [k for k in ARCHITECTURE_FACTS if trained.get(k) != here[k]]
        if differ:
            raise EvalError(
                f"{path} was meta-trained on base model '{trained.get('name')}' "
                f"({', '.join(f'{k} {trained.get(k)}' for k in differ)}), but this evaluation loads "
                f"'{here['name']}' ({', '.join(f'{k} {here[k]}' for k in differ)}); an init only fits the model "
                f"it was trained on: evaluate with model.name={trained.get('name')}")
        if trained.get("name") != here["name"]:
            log.warning("%s was meta-trained on '%s' and is evaluated on '%s' (same architecture sizes)",
                        path, trained.get("name"), here["name"])
    expected = setup.classifier.init_params()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise EvalError(f"{path} lacks {missing[:3]}: it was trained with another config")
    for name, value in expected.items():
        if tensors[name].shape != value.shape:
            raise EvalError(f"{path}: '{name}' has shape {tuple(tensors[name].shape)}, this model needs "
                            f"{tuple(value.shape)} (another base model?)")
    return {k: v.to(setup.device) for k, v in tensors.items()}, info


def _trained_versions_drift(run_dir: Path) -> dict[str, tuple[str, str]]:
    """The numeric packages whose versions differ from the training run's (``run.json``); warned."""
    where = run_dir / RUN_FILE
    info = read_json(where, EvalError, "run record") if where.is_file() else {}
    drift = version_drift(info.get("versions") if isinstance(info, dict) else None)
    if drift:
        log.warning(drift_message(f"the run in {run_dir}", drift, "this evaluation"))
    return drift


def evaluate(run_dir: str | Path, overrides: list[str] = (), episodes: int | None = None,
             json_path: str | Path | None = None, inits: tuple[str, ...] = ("pretrained", "meta"),
             setup: Setup | None = None, allow_data_change: bool = False) -> dict[str, Any]:
    """Score ``inits`` of the run in ``run_dir``; ``setup``: reuse one built from its config.

    The data and split files must be the ones the run was trained on (their sha256 in run.json);
    ``allow_data_change``: score anyway, with the warning written into the results."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise EvalError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    if episodes is not None and episodes < 1:
        raise EvalError(f"--episodes must be ≥ 1, got {episodes}")
    extra = [f"eval.episodes={episodes}"] if episodes else []
    if setup is None:
        setup = build_setup(Config.load(run_dir / CONFIG_FILE, list(overrides) + extra))
    cfg = setup.cfg
    data_warnings = check_data_unchanged(setup, run_dir, allow_data_change)  # the data the run was trained on?
    drift = _trained_versions_drift(run_dir)
    meta_params, info = load_meta_params(run_dir, setup) if "meta" in inits else (None, None)
    header, test, sha = test_episodes(setup, episodes or cfg.eval.episodes)
    # Scores are saved episode by episode: a killed evaluation, run again, goes on where it stopped.
    scores = EpisodeScores(run_dir / PARTIAL_FILE, eval_fingerprint(
        cfg.to_dict(), sha, run_dir / BEST_FILE if "meta" in inits else None))
    rows = [score_init(setup, setup.classifier.init_params() if init == "pretrained" else meta_params, test, init,
                       scores) for init in inits]
    references = []
    if cfg.eval.reference:
        accs, seconds = centroid_reference(setup, test)
        mean, ci = mean_ci95(accs)
        references.append({"name": "nearest_centroid_mean_pooled", "accuracy_mean": mean, "accuracy_ci95": ci,
                           **_ci_note(len(accs)), "accuracies_per_episode": accs, "seconds": seconds,
                           "description": "no training: nearest class centroid of mean-pooled backbone "
                                          "embeddings of the plain texts (cosine)"})
    d = cfg.data
    # The data set the meta-learned init was trained on (another one when `--set data.dataset=...`
    # evaluates the run out of distribution; label words and template then follow the new data set).
    trained_on = (yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8")) or {}).get("data", {})
    results = {
        "label": cfg.label, "dataset": d.dataset, "n_way": d.n_way, "k_shot": d.k_shot, "n_query": d.n_query,
        "meta_train_dataset": trained_on.get("dataset", DataConfig.dataset) if "meta" in inits else None,
        "split": "test", "test_classes": [int(c) for c in setup.dataset.splits.test],
        "episodes_file": str(Path(cfg.data.test_episodes_file).resolve()) if cfg.data.test_episodes_file else None,
        "data_files": data_record(setup),
        **({"data_change_warnings": data_warnings} if data_warnings else {}),
        "n_episodes": len(test), "episodes_sha256": sha, "episodes_seed": header.get("seed"),
        "model": cfg.model.name, "seed": cfg.seed, "commit": git_commit(),
        "seeds": {"train": cfg.seed, "val": cfg.train.val_seed, "test": header.get("seed")},
        "method": method_label(cfg), "algorithm": cfg.meta.algorithm, "engine": cfg.meta.engine,
        "prompt": cfg.prompt.kind, "verbalizer": cfg.verbalizer.kind,
        "trainable_params": setup.classifier.count(setup.classifier.init_params())["total"],
        "adaptation": {"mode": cfg.eval.adapt, "steps": cfg.meta.inner_steps if cfg.eval.steps is None else cfg.eval.steps,
                       "lr": cfg.meta.inner_lr if cfg.eval.lr is None else cfg.eval.lr},
        "meta_init": None if info is None else {"file": BEST_FILE, **info},
        "results": rows, "references": references,
        "data_sha256": setup.dataset.sha256, "peak_rss_mb": peak_rss_mb(),
        "provenance": provenance(), "config": cfg.to_dict(),
        "version_drift": {name: {"trained": old, "evaluated": new} for name, (old, new) in drift.items()},
    }
    text = dumps_strict(results, indent=2)
    (run_dir / RESULTS_FILE).write_text(text, encoding="utf-8")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text, encoding="utf-8")
    scores.remove()
    print(format_table(results))
    return results


def _ci_note(n: int) -> dict[str, str]:
    """``accuracy_ci95_note``: why ``accuracy_ci95`` is null (one episode), when it is."""
    note = ci95_note(n)
    return {"accuracy_ci95_note": note} if note else {}


def format_table(results: dict[str, Any]) -> str:
    title = (f"{results['dataset']} {results['n_way']}-way {results['k_shot']}-shot, {results['n_query']} queries/class, "
             f"{results['n_episodes']} test episodes (sha256 {results['episodes_sha256'][:12]}), model {results['model']}")
    lines = [title, "", "| init | accuracy (%) mean ± 95% CI | episodes | seconds | s/episode |",
             "|---|---|---|---|---|"]
    for row in results["results"]:
        lines.append(f"| {row['init']} | {fmt_pct(row['accuracy_mean'], row['accuracy_ci95'])} | "
                     f"{len(row['accuracies_per_episode'])} | {row['seconds']:.0f} | {row['seconds_per_episode']:.2f} |")
    for ref in results.get("references", []):
        lines.append(f"| reference: {ref['name']} | {fmt_pct(ref['accuracy_mean'], ref['accuracy_ci95'])} | "
                     f"{len(ref['accuracies_per_episode'])} | {ref['seconds']:.0f} | - |")
    return "\n".join(lines)
