"""``train --resume``: what a resumed run may change, and the record of each resume.

config.yaml is the truth of a run: its checkpoint (optimiser state, learning-rate schedule,
episode cursor) was made with it, and `eval` and `export` read it. A resumed run therefore
refuses a config that differs from it, except in :data:`~metaprompt.config.RUNTIME_KEYS`
(threads, progress bars, wandb: recorded in run.json, config.yaml unchanged) and in
:data:`EXTENSIBLE_KEYS` when the steps done do not depend on them (then config.yaml is updated,
so it stays the truth).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from metaprompt.config import RUNTIME_KEYS, Config, ConfigError, changed_keys, flat
from metaprompt.run.provenance import command_line
from metaprompt.run.rundir import CONFIG_FILE, RUN_FILE, write_text_atomic

#: What ``train --resume`` may change besides :data:`RUNTIME_KEYS`: the episode budget, when the
#: training so far does not depend on it (then the extended run is the run a larger budget gives).
EXTENSIBLE_KEYS = ("train.episodes",)


def _extension_problem(cfg: Config) -> str | None:
    """Why the steps done so far depend on ``train.episodes`` (None: they do not)."""
    if cfg.train.schedule != "constant":
        return f"train.schedule={cfg.train.schedule} spreads the learning rate over train.episodes"
    if cfg.meta.algorithm == "maml++" and 0 < cfg.meta.first_order_fraction < 1:
        return ("meta.algorithm=maml++ switches to second order after meta.first_order_fraction of "
                "train.episodes")
    return None


#: Where the data lies, not what it is: its identity is checked by content hashes, and the way a
#: path is written may change (relative / resolved) without changing the run.
_LOCATION_KEYS = ("data.path", "data.splits", "data.dir", "data.test_episodes_file")


def _run_info(run_dir: Path) -> dict[str, Any]:
    try:
        info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def check_config_unedited(run_dir: Path, stored: Config) -> None:
    """Refuse a config.yaml edited by hand after training started: run.json records the config the
    run was trained with (``config``), and eval, export and --resume would otherwise read values
    that did not produce the init. Runs written before run.json had ``config`` are not checked."""
    trained = _run_info(run_dir).get("config")
    if not isinstance(trained, dict):
        return
    before, now = flat(trained), flat(stored.to_dict())
    edited = {k: (before[k], now[k]) for k in before.keys() & now.keys()  # keys a newer version added: not edits
              if before[k] != now[k] and k not in RUNTIME_KEYS and k not in _LOCATION_KEYS}
    edited = dict(sorted(edited.items()))
    if edited:
        listed = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in edited.items())
        raise ConfigError(
            f"{run_dir / CONFIG_FILE} was edited after this run was trained with it (run.json records that config): "
            f"{listed}. config.yaml is what eval, export and --resume read: restore these values, or train a new "
            "run with them (metaprompt train --config FILE --out NEW_RUN)")


def resume_changes(cfg: Config, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The keys in which ``cfg`` differs from ``RUN/config.yaml``, the truth of the run; refuses
    any that would change what is trained (see :data:`RUNTIME_KEYS`, :data:`EXTENSIBLE_KEYS`)."""
    stored = Config.load(run_dir / CONFIG_FILE)
    check_config_unedited(run_dir, stored)
    changes = changed_keys(stored, cfg)
    problem = _extension_problem(stored)
    refused = {k: v for k, v in changes.items()
               if k not in RUNTIME_KEYS and not (k in EXTENSIBLE_KEYS and problem is None)}
    if refused:
        listed = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in refused.items())
        why = f" (train.episodes cannot grow here: {problem})" if "train.episodes" in refused and problem else ""
        raise ConfigError(
            f"train --resume {run_dir}: {run_dir / CONFIG_FILE} is what this run trains, and its checkpoint was made "
            f"with it; refusing to change {listed}{why}. On resume only {', '.join(RUNTIME_KEYS)} may change (and "
            "train.episodes, to extend a run with train.schedule=constant). To train with other values, start a "
            f"new run: metaprompt train --config {run_dir / CONFIG_FILE} --out NEW_RUN --set KEY=VALUE")
    return changes


def record_resume(run_dir: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Write an extended budget into config.yaml (it stays the truth) and log the resume in run.json."""
    extended = {k: new for k, (_, new) in changes.items() if k in EXTENSIBLE_KEYS}
    path = run_dir / RUN_FILE
    info = _run_info(run_dir)
    if extended:
        updated = Config.load(run_dir / CONFIG_FILE, [f"{k}={v}" for k, v in extended.items()])
        if isinstance(info.get("config"), dict):  # run.json keeps recording the config that trains the run
            info["config"] = updated.to_dict()
            write_text_atomic(path, json.dumps(info, indent=2))
        write_text_atomic(run_dir / CONFIG_FILE, updated.to_yaml())
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command_line(), "at_step": step,
             "runtime": {k: new for k, (_, new) in changes.items() if k in RUNTIME_KEYS},
             "config_changes": {k: {"from": old, "to": new} for k, (old, new) in changes.items() if k in extended}}
    info.setdefault("resumes", []).append(entry)
    write_text_atomic(path, json.dumps(info, indent=2))
