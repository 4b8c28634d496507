"""Checkpoints and saved inits as single safetensors files, written atomically.

A checkpoint holds the meta-parameters, the optimiser and scheduler state, the torch RNG
state and the trainer's counters (episode cursor, best validation, patience). Tensors go
into the safetensors body, everything else into its JSON metadata: nothing is pickled.
Files are written to a temporary name, fsynced and renamed over the old one, so a kill at
any moment leaves either the old or the new file, never a torn one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metaprompt.errors import UserError

CHECKPOINT_FORMAT = "metaprompt.checkpoint/v1"
INIT_FORMAT = "metaprompt.init/v1"


class CheckpointError(UserError, ValueError):
    pass


def check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse to save NaN or inf parameters: a file that exists is always a usable init."""
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"refusing to write {path}: '{name}' has non-finite values (NaN or inf)")


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    return tensors, metadata


def save_init(path: Path, params: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """A learned init: the meta-parameters and a JSON description (step, validation, config)."""
    check_finite(params, path)
    atomic_save(dict(params), {"format": INIT_FORMAT, "info": json.dumps(info)}, path)


def load_init(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != INIT_FORMAT:
        raise CheckpointError(f"{path}: not a metaprompt init (format {metadata.get('format')!r})")
    return tensors, _fields(path, {"info": "dict"}, {"info": "{}", **metadata})["info"]


def save_checkpoint(path: Path, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    scheduler, state: dict[str, Any]) -> None:
    check_finite(params, path)
    tensors = {f"param/{k}": v for k, v in params.items()}
    opt_state = optimizer.state_dict()
    layout: dict[str, dict[str, Any]] = {}
    for index, entry in opt_state["state"].items():
        layout[str(index)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}/{key}"] = value
                layout[str(index)][key] = "tensor"
            else:
                layout[str(index)][key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    # LambdaLR stores None for plain functions; they are rebuilt from the config on resume.
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "param_names": json.dumps(list(params)),
        "optimizer_layout": json.dumps(layout),
        "optimizer_groups": json.dumps(opt_state["param_groups"]),
        "scheduler": json.dumps(sched),
        "state": json.dumps(state),
    }
    atomic_save(tensors, metadata, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Returns {"params", "optimizer" (a state dict), "scheduler", "state", "rng"}."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a metaprompt checkpoint (format {metadata.get('format')!r})")
    meta = _fields(path, {"param_names": "strs", "optimizer_layout": "dict", "optimizer_groups": "list",
                          "scheduler": "dict", "state": "dict"}, metadata)

    def tensor(name: str) -> torch.Tensor:
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor '{name}' is missing (a damaged file?)")
        return tensors[name]

    params = {name: tensor(f"param/{name}") for name in meta["param_names"]}
    opt_state = {}
    for index, entry in meta["optimizer_layout"].items():
        if not index.isdigit() or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: metadata field 'optimizer_layout': malformed entry {index!r}")
        opt_state[int(index)] = {key: tensor(f"optim/{index}/{key}") if value == "tensor" else value
                                 for key, value in entry.items()}
    scheduler = meta["scheduler"]
    if not isinstance(scheduler.get("base_lrs"), list):
        raise CheckpointError(f"{path}: metadata field 'scheduler': 'base_lrs' is missing")
    scheduler["lr_lambdas"] = [None] * len(scheduler["base_lrs"])  # plain functions, rebuilt from the config
    return {
        "params": params,
        "optimizer": {"state": opt_state, "param_groups": meta["optimizer_groups"]},
        "scheduler": scheduler,
        "state": meta["state"],
        "rng": tensor("rng/torch"),
    }


def _fields(path: Path, spec: dict[str, str], metadata: dict[str, str]) -> dict[str, Any]:
    """The JSON fields ``spec`` of a safetensors header, parsed and type-checked (a damaged header
    becomes a CheckpointError naming the file and the field, not a KeyError or JSONDecodeError)."""
    from metaprompt.fields import FileFormatError, json_field

    try:
        return {key: json_field(metadata, key, kind, path, " (a damaged file?)") for key, kind in spec.items()}
    except FileFormatError as err:
        raise CheckpointError(str(err)) from None
