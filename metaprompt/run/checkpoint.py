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
from safetensors.torch import save_file

from metaprompt.run.jsonio import dumps_strict
from metaprompt.run.tensorfile import (CHECKSUM_KEY, ZEROS, CheckpointError, canonicalize_file, check_finite,
                                       read_safetensors)


CHECKPOINT_FORMAT = "metaprompt.checkpoint/v1"
INIT_FORMAT = "metaprompt.init/v1"
INIT_FIELDS = ("format", "info")
CHECKPOINT_FIELDS = ("format", "param_names", "optimizer_layout", "optimizer_groups", "scheduler", "state")

__all__ = ["CHECKPOINT_FORMAT", "INIT_FORMAT", "CheckpointError", "atomic_save", "check_finite", "load_checkpoint",
           "read_init_file", "read_safetensors", "save_checkpoint", "write_init_file"]


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """The one writer of metaprompt's safetensors files: atomic and byte-deterministic.

    The metadata gets a placeholder checksum before the library writes the file, so that sorting
    its keys and filling in the checksum (:func:`~metaprompt.run.tensorfile.canonicalize_file`)
    keep the header's length: the body is never copied."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata={**metadata, CHECKSUM_KEY: ZEROS})
        canonicalize_file(Path(tmp), checksum=True)
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


def _field(metadata: dict[str, str], key: str, path: Path, kind: type) -> Any:
    """A JSON-valued metadata field, parsed and type-checked (errors name the file and field)."""
    if key not in metadata:
        raise CheckpointError(f"{path}: metadata field '{key}' is missing: the file is damaged or not metaprompt's")
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata field '{key}': not valid JSON ({err.msg}, column {err.colno}): "
                              "the file is damaged") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: metadata field '{key}': expected a JSON {kind.__name__}, got "
                              f"{type(value).__name__}: the file is damaged")
    return value


def _format(metadata: dict[str, str], path: Path, expected: str, what: str) -> None:
    if metadata.get("format") != expected:
        raise CheckpointError(f"{path}: not a metaprompt {what} (format {metadata.get('format')!r})")


def _floating(tensors: dict[str, torch.Tensor], names, path: Path) -> None:
    for name in names:
        if not tensors[name].is_floating_point():
            raise CheckpointError(f"{path}: tensor '{name}' has dtype {str(tensors[name].dtype).replace('torch.', '')}; "
                                  "parameters are floating-point: the file is damaged")


def write_init_file(path: Path, params: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """A learned init: the meta-parameters and a JSON description (step, validation, config)."""
    check_finite(params, path)
    atomic_save(dict(params), {"format": INIT_FORMAT, "info": dumps_strict(info)}, path)


def read_init_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and description of an init, every one checked (finite, floating, named fields)."""
    tensors, metadata = read_safetensors(path, fields=INIT_FIELDS)
    _format(metadata, path, INIT_FORMAT, "init")
    info = _field(metadata, "info", path, dict)
    _floating(tensors, tensors, path)
    return tensors, info


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
        "param_names": dumps_strict(list(params)),
        "optimizer_layout": dumps_strict(layout),
        "optimizer_groups": dumps_strict(opt_state["param_groups"]),
        "scheduler": dumps_strict(sched),
        "state": dumps_strict(state),
    }
    atomic_save(tensors, metadata, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Returns {"params", "optimizer" (a state dict), "scheduler", "state", "rng"}; every field is
    checked, so a damaged file is an error that names it and the field, never a traceback."""
    tensors, metadata = read_safetensors(path, fields=CHECKPOINT_FIELDS)
    _format(metadata, path, CHECKPOINT_FORMAT, "checkpoint")
    names = _field(metadata, "param_names", path, list)
    layout = _field(metadata, "optimizer_layout", path, dict)
    groups = _field(metadata, "optimizer_groups", path, list)
    scheduler = _field(metadata, "scheduler", path, dict)
    state = _field(metadata, "state", path, dict)

    def tensor(key: str, field: str) -> torch.Tensor:
        if key not in tensors:
            raise CheckpointError(f"{path}: metadata field '{field}' names tensor '{key}', which the file does not "
                                  "hold: the file is damaged")
        return tensors[key]

    if not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: metadata field 'param_names': expected a list of names: the file is damaged")
    params = {name: tensor(f"param/{name}", "param_names") for name in names}
    _floating(tensors, [f"param/{n}" for n in names], path)
    opt_state = {}
    for index, entry in layout.items():
        if not index.isdigit() or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: metadata field 'optimizer_layout': entry {index!r} is not a "
                                  "parameter index with its state: the file is damaged")
        opt_state[int(index)] = {key: tensor(f"optim/{index}/{key}", "optimizer_layout") if value == "tensor"
                                 else value for key, value in entry.items()}
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise CheckpointError(f"{path}: metadata field 'optimizer_groups': expected parameter groups with "
                              "'params': the file is damaged")
    if not isinstance(scheduler.get("base_lrs"), list):
        raise CheckpointError(f"{path}: metadata field 'scheduler': 'base_lrs' is missing: the file is damaged")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: metadata field 'state': 'step' must be a count ≥ 0, got {step!r}: "
                              "the file is damaged")
    rng = tensor("rng/torch", "rng")
    if rng.dtype != torch.uint8 or rng.dim() != 1:
        raise CheckpointError(f"{path}: tensor 'rng/torch' must be a 1-D uint8 tensor: the file is damaged")
    scheduler["lr_lambdas"] = [None] * len(scheduler["base_lrs"])  # plain functions, rebuilt from the config
    return {
        "params": params,
        "optimizer": {"state": opt_state, "param_groups": groups},
        "scheduler": scheduler,
        "state": state,
        "rng": rng,
    }
