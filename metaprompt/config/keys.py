"""Dotted config keys: flattening, differences between configs, and the keys that only change how a run goes."""
from __future__ import annotations

import typing
from typing import Any

if typing.TYPE_CHECKING:
    from metaprompt.config import Config

#: Keys that change how a run goes, not what it computes: CPU threads, progress bars and the
#: Weights & Biases mirror of the metrics. They are the only keys ``train --resume`` accepts
#: with a new value (recorded in run.json; config.yaml stays what trained the run), and the
#: only ones an interrupted evaluation ignores when it decides whether saved scores still count.
#: Everything else (model.device too: model.tf32 and the kernels differ per device) decides a result.
RUNTIME_KEYS = ("threads", "log.progress", "log.wandb", "log.wandb_project")


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def changed_keys(before: "Config | dict[str, Any]", after: "Config | dict[str, Any]") -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every dotted key whose value differs between two configs."""
    old = flat(before if isinstance(before, dict) else before.to_dict())
    new = flat(after if isinstance(after, dict) else after.to_dict())
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def without_runtime_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without :data:`RUNTIME_KEYS` (sections they leave empty are dropped)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            kept = {k: v for k, v in value.items() if f"{key}.{k}" not in RUNTIME_KEYS}
            if kept:
                out[key] = kept
        elif key not in RUNTIME_KEYS:
            out[key] = value
    return out
