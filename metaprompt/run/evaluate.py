"""Meta-test: score the pretrained init and the meta-learned init on the same fixed test episodes.

Where the result goes (:func:`results_plan`): ``RUN/results.json`` is the run's own evaluation
(both inits, ``eval.episodes`` of config.yaml, config.yaml unchanged); it is also where the
first evaluation of a run goes, whatever it is. A later evaluation never replaces a result of
another kind: a different ``--init``, ``--episodes`` or ``--set`` is written beside it as
``results.<init>-<N>ep[.<hash of the changed keys>].json``, and the run's own evaluation moves
an earlier partial one out of ``results.json`` to such a name. A result of the same kind on
other data or other episodes is refused before anything is scored. Each move is said on stderr.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from episodes import episodes_sha256
from metaprompt.config import RUNTIME_KEYS, Config, DataConfig, changed_keys
from metaprompt.errors import UserError
from metaprompt.meta.algorithms import build_algorithm
from metaprompt.meta.engines import build_engine
from metaprompt.model.backbone import ARCHITECTURE_FACTS
from metaprompt.tuners import method_label
from metaprompt.run.adaptation import adapt_and_score
from metaprompt.run.checkpoint import read_init_file
from metaprompt.run.eval_progress import EpisodeScores, eval_fingerprint
from metaprompt.run.integrity import check_data_unchanged, data_record, read_test_episodes
from metaprompt.run.jsonio import dumps_strict, read_json
from metaprompt.run.provenance import drift_message, git_commit, peak_rss_mb, provenance, version_drift
from metaprompt.run.reference import centroid_reference
from metaprompt.run.rundir import (BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, RESULTS_FILE, RUN_FILE, check_output_file,
                                   owned, partial_file, write_text_atomic)
from metaprompt.run.setup import Setup, build_setup, fixed_episodes
from metaprompt.run.stats import ci95_note, fmt_pct, mean_ci95

log = logging.getLogger(__name__)


class EvalError(UserError, ValueError):
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
        raise EvalError(f"{path} not found: {_how_to_train(run_dir)}")
    tensors, info = read_init_file(path)
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


def _how_to_train(run_dir: Path) -> str:
    """A command that works for a run without a learned init (`train --out` refuses an existing run)."""
    if (run_dir / CHECKPOINT_FILE).is_file():
        return f"the run has not validated an init yet; continue its training with `metaprompt train --resume {run_dir}`"
    return (f"the run stopped before its first checkpoint; train its config again into a new directory with "
            f"`metaprompt train --config {run_dir / CONFIG_FILE} --out NEW_RUN`, or score the pretrained init "
            f"alone with `metaprompt eval {run_dir} --init pretrained`")


def _variant_name(inits: tuple[str, ...] | list[str], n_episodes: int, changes: dict[str, Any]) -> str:
    label = "both" if sorted(inits) == ["meta", "pretrained"] else "-".join(inits)
    digest = "." + hashlib.sha256(json.dumps(changes, sort_keys=True, default=str).encode()).hexdigest()[:8] \
        if changes else ""
    return f"results.{label}-{n_episodes}ep{digest}.json"


def _scored_changes(stored: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Keys of ``config`` that differ from the run's config.yaml and change a score (not the episode count)."""
    return {k: new for k, (_, new) in changed_keys(stored, config).items()
            if k not in RUNTIME_KEYS and k != "eval.episodes"}


def own_inits(run_dir: Path) -> tuple[str, ...]:
    return ("pretrained", "meta") if (run_dir / BEST_FILE).is_file() else ("pretrained",)


def results_name(run_dir: Path, stored: dict[str, Any], inits, n_episodes: int, config: dict[str, Any]) -> str:
    """``results.json`` for the run's own evaluation, else its variant name (see the module docstring)."""
    changes = _scored_changes(stored, config)
    own = tuple(sorted(inits)) == tuple(sorted(own_inits(run_dir)))
    if own and not changes and n_episodes == stored["eval"]["episodes"]:
        return RESULTS_FILE
    return _variant_name(inits, n_episodes, changes)


def _same_material(old: dict[str, Any], data_sha: str, episodes_sha: str) -> bool:
    return old.get("data_sha256") == data_sha and old.get("episodes_sha256") == episodes_sha


def results_plan(run_dir: Path, stored: dict[str, Any], inits, n_episodes: int, config: dict[str, Any],
                 data_sha: str, episodes_sha: str) -> tuple[str, str | None]:
    """(file to write, name to move an earlier results.json to first, or None); decided before any
    episode is scored, so a refusal costs nothing."""
    name = results_name(run_dir, stored, inits, n_episodes, config)
    main = run_dir / RESULTS_FILE
    if not main.is_file():
        return RESULTS_FILE, None  # the run's first evaluation
    try:
        old = json.loads(main.read_text(encoding="utf-8"))
        old_name = results_name(run_dir, stored, [r["init"] for r in old["results"]], old["n_episodes"],
                                old["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EvalError(f"{main} cannot be read ({err}); it is not replaced: move it away, then evaluate again") \
            from None
    if name == RESULTS_FILE and old_name != RESULTS_FILE:
        target = run_dir / old_name
        if target.exists():
            raise EvalError(f"{main} holds an evaluation of another kind, to be moved to {target}, which exists; "
                            "move one of them away, then evaluate again")
        return RESULTS_FILE, old_name
    if name == old_name:
        if not _same_material(old, data_sha, episodes_sha):
            raise EvalError(
                f"{main} scored other data or test episodes (data sha256 {str(old.get('data_sha256'))[:12]}, "
                f"episodes {str(old.get('episodes_sha256'))[:12]}; now {data_sha[:12]}, {episodes_sha[:12]}); it is "
                "not replaced: move it away, then evaluate again")
        return RESULTS_FILE, None  # the same evaluation again (a newer init after a resume, say)
    target = run_dir / name
    if target.is_file():
        try:
            same = _same_material(json.loads(target.read_text(encoding="utf-8")), data_sha, episodes_sha)
        except (OSError, ValueError):
            same = False
        if not same:
            raise EvalError(f"{target} holds an evaluation of other data or test episodes (or cannot be read); it "
                            "is not replaced: move it away, then evaluate again")
    return name, None


def evaluate(run_dir: str | Path, overrides: list[str] = (), episodes: int | None = None,
             json_path: str | Path | None = None, inits: tuple[str, ...] = ("pretrained", "meta"),
             setup: Setup | None = None, force: bool = False, allow_data_change: bool = False) -> dict[str, Any]:
    """Score ``inits`` of the run in ``run_dir``; ``setup``: reuse one built from its config.

    ``json_path``: also write the results there (refused if the file exists, unless ``force``).
    The run directory is owned (:func:`metaprompt.run.rundir.owned`) while it is evaluated. The
    data and split files must be the ones the run was trained on (their sha256 in run.json);
    ``allow_data_change``: score anyway, with the warning written into the results."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise EvalError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    if episodes is not None and episodes < 1:
        raise EvalError(f"--episodes must be ≥ 1, got {episodes}")
    if json_path is not None:
        check_output_file(json_path, "--json", force)
    extra = [f"eval.episodes={episodes}"] if episodes else []
    stored = Config.load(run_dir / CONFIG_FILE)
    from metaprompt.run.resume import check_config_unedited

    check_config_unedited(run_dir, stored)
    cfg = setup.cfg if setup is not None else Config.load(run_dir / CONFIG_FILE, list(overrides) + extra)
    with owned(run_dir, "eval"):  # a bad --set was refused above, before the run is touched
        try:
            return _evaluate(run_dir, stored, cfg, episodes, json_path, tuple(inits), setup, allow_data_change)
        except OSError as err:  # disk full, folder gone: the episodes scored so far are kept
            raise EvalError(f"cannot write to {run_dir}: {err.strerror or err}; the episodes scored so far are kept in "
                            f"{run_dir} (its .partial.jsonl file): free some space, then run the same command again "
                            "(it goes on where it stopped)") from None


def _evaluate(run_dir: Path, stored: Config, cfg: Config, episodes: int | None, json_path, inits: tuple[str, ...],
              setup: Setup | None, allow_data_change: bool) -> dict[str, Any]:
    if setup is None:
        setup = build_setup(cfg)
    data_warnings = check_data_unchanged(setup, run_dir, allow_data_change)  # the data the run was trained on?
    drift = _trained_versions_drift(run_dir)
    meta_params, info = load_meta_params(run_dir, setup) if "meta" in inits else (None, None)
    header, test, sha = test_episodes(setup, episodes or cfg.eval.episodes)
    name, move_old = results_plan(run_dir, stored.to_dict(), inits, len(test), cfg.to_dict(),
                                  setup.dataset.sha256, sha)
    # Scores are saved episode by episode: a killed evaluation, run again, goes on where it stopped.
    scores = EpisodeScores(run_dir / partial_file(name), eval_fingerprint(
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
        "version_drift": {package: {"trained": old, "evaluated": new} for package, (old, new) in drift.items()},
    }
    results["results_file"] = name
    text = dumps_strict(results, indent=2)
    if move_old:
        (run_dir / RESULTS_FILE).rename(run_dir / move_old)
        print(f"note: moved the earlier {run_dir / RESULTS_FILE} (not the run's own evaluation) to "
              f"{run_dir / move_old}", file=sys.stderr)
    write_text_atomic(run_dir / name, text)
    if name != RESULTS_FILE:
        print(f"note: this is not the run's own evaluation ({' and '.join(own_inits(run_dir))} init, "
              f"{stored.eval.episodes} episodes, its config.yaml unchanged): written to {run_dir / name}; "
              f"{run_dir / RESULTS_FILE} is left as it is", file=sys.stderr)
    if json_path:
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
