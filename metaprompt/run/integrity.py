"""A test score that cannot leak or drift: what a run was trained on is pinned, and checked again.

- :func:`pinned_config`: the config a run directory keeps, with every path made absolute (and a
  built-in data set's folder fixed), so ``eval`` started from another folder reads the same files.
- :func:`data_record`: the data file's and the class-split file's paths and sha256, written to
  ``run.json`` at train time; :func:`check_data_unchanged` compares them at eval and export.
- :func:`read_test_episodes`: a fixed episode file is checked against the run's own test
  classes (from its config and split file), not against the split its header names, so an episode
  file drawn from train or val classes can never be scored as a test result.

Each check reads a file once per command; nothing runs per training step or per episode.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from episodes import DataError, EpisodeFile, read_episode_file
from episodes.paths import packaged_path
from metaprompt.config import Config

if TYPE_CHECKING:
    from metaprompt.run.setup import Setup

log = logging.getLogger(__name__)

PACKAGED_PREFIX = "episodes/resources/"
ALLOW_FLAG = "--allow-data-change"


def _absolute(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else value


def pinned_config(cfg: Config, setup: "Setup") -> Config:
    """``cfg`` with absolute paths: data.path, data.splits, data.test_episodes_file, a local model
    directory, and for a built-in data set data.dir = the folder its file was found in (else
    ``./data`` or $METAPROMPT_DATA of another shell could give another file)."""
    data = copy.deepcopy(cfg.to_dict())
    d = data["data"]
    for key in ("path", "splits", "test_episodes_file"):
        d[key] = _absolute(d[key])
    if d["dataset"] != "custom":
        d["dir"] = str(Path(setup.dataset.path).resolve().parent)
    from metaprompt.model.backbone import OFFLINE_ALIASES

    name = data["model"]["name"]
    if name not in OFFLINE_ALIASES and Path(name).expanduser().is_dir():  # a local model directory (hub ids and
        # aliases stay as they are)
        data["model"]["name"] = _absolute(name)
    return Config.from_dict(data, source="the run's config")


def _splits_file(setup: "Setup") -> tuple[str, str]:
    """(path, sha256) of the file the class splits were read from."""
    source = setup.dataset.splits.source
    if source.startswith(PACKAGED_PREFIX):  # the copy shipped with the package
        return source, hashlib.sha256(packaged_path(source[len(PACKAGED_PREFIX):]).read_bytes()).hexdigest()
    path = Path(source).resolve()
    try:
        return str(path), hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise DataError(f"{path}: cannot read the class-split file: {err.strerror or err}") from None


def data_record(setup: "Setup") -> dict[str, Any]:
    """What ``run.json["data_files"]`` records: the data set, its data file and split file with sha256."""
    splits_path, splits_sha = _splits_file(setup)
    return {"dataset": setup.cfg.data.dataset,
            "data": {"path": str(Path(setup.dataset.path).resolve()), "sha256": setup.dataset.sha256},
            "splits": {"path": splits_path, "sha256": splits_sha}}


def check_data_unchanged(setup: "Setup", run_dir: Path, allow: bool,
                         remedy: str = f"pass {ALLOW_FLAG} to go on anyway (the results then record this warning)"
                         ) -> list[str]:
    """Compare the data this command reads with what the run in ``run_dir`` was trained on (its
    run.json). A mismatch raises a DataError naming the file (``remedy``: what else the user can
    do), or with ``allow`` is returned as a warning (also logged) for the results to record.
    Another data set (``--set data.dataset=…``, an out-of-distribution evaluation) is not
    compared: the results record it as such (``meta_train_dataset``)."""
    import yaml

    from metaprompt.run.jsonio import read_json
    from metaprompt.run.rundir import CONFIG_FILE, RUN_FILE

    where = Path(run_dir) / RUN_FILE
    run_info = read_json(where, DataError, "run record") if where.is_file() else {}
    run_info = run_info if isinstance(run_info, dict) else {}
    record = run_info.get("data_files")
    if not isinstance(record, dict):  # runs made before the split file was recorded: the data file only
        sha = run_info.get("dataset_sha256")
        record = {"data": {"path": None, "sha256": sha}} if isinstance(sha, str) else {}
        config = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        record["dataset"] = (config.get("data") or {}).get("dataset", "huffpost")  # the default of DataConfig
    if record.get("dataset") != setup.cfg.data.dataset:
        return []
    now = data_record(setup)
    warnings = []
    for key, what in (("data", "data file"), ("splits", "class-split file")):
        then = record.get(key)
        if not isinstance(then, dict) or not then.get("sha256"):
            continue
        if then["sha256"] != now[key]["sha256"]:
            was = f" ({then['path']})" if then.get("path") and then["path"] != now[key]["path"] else ""
            warnings.append(
                f"the {what} {now[key]['path']} has sha256 {now[key]['sha256'][:12]}…, but the run was trained on "
                f"sha256 {then['sha256'][:12]}…{was} (recorded in {where}): the init was meta-trained on other "
                f"data, so the scored classes may have been seen in training")
    if warnings and not allow:
        raise DataError(f"{warnings[0]}. Use the files the run was trained on, or {remedy}")
    for text in warnings:
        log.warning("DATA CHANGED: %s", text)
        print(f"WARNING: {text}")
    return warnings


def _describe(setup: "Setup", classes) -> str:
    splits = setup.dataset.splits
    return ", ".join(f"{c} ({splits.name(c)}, {splits.split_of(c) or 'no'} split)" for c in classes[:10]) + \
        (" …" if len(classes) > 10 else "")


def read_test_episodes(setup: "Setup") -> EpisodeFile:
    """``data.test_episodes_file``, checked against this run: its classes must all be test classes
    of the run's split file (whatever split the file's header names), its example ids must fit the
    data, and its shape must be the config's. Errors name the file and the offending classes."""
    cfg = setup.cfg
    path = cfg.data.test_episodes_file
    stored = read_episode_file(path)
    test = set(setup.dataset.splits.test)
    outside = sorted({int(c) for episode in stored.episodes for c in episode.classes} - test)
    if outside or stored.header["split"] != "test":
        shown = _describe(setup, outside) if outside else f"its header says split {stored.header['split']!r}"
        raise DataError(
            f"{path}: data.test_episodes_file must hold episodes of the run's test classes "
            f"({', '.join(map(str, sorted(test)))} in {setup.dataset.splits.source}), but it has classes "
            f"{shown}; a score on them would not be a test result. Write a test episode file with "
            f"`metaprompt episodes --split test`")
    stored.check_against(setup.dataset)
    for key in ("n_way", "k_shot", "n_query"):
        if stored.header.get(key) != getattr(cfg.data, key):
            raise DataError(f"{path}: {key}={stored.header.get(key)} but the config says "
                            f"data.{key}={getattr(cfg.data, key)}")
    return stored


def check_test_source(setup: "Setup") -> None:
    """Before anything is written: the test episodes of this config can be had (a readable episode
    file of the run's test classes, or enough test classes and examples to sample them)."""
    cfg = setup.cfg
    if cfg.data.test_episodes_file:
        if not Path(cfg.data.test_episodes_file).is_file():
            raise DataError(f"config key 'data.test_episodes_file': {cfg.data.test_episodes_file} does not exist "
                            "(write one with `metaprompt episodes --split test --out FILE`, or drop the key to "
                            "score seeded test episodes)")
        read_test_episodes(setup)
    else:
        setup.sampler("test", cfg.eval.seed)
