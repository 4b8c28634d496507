"""The one writer and the one reader of metaprompt's safetensors files.

Writing (``metaprompt.run.checkpoint.atomic_save``, which uses :func:`canonicalize_file`): atomic
(temporary file, fsync, rename) and byte-deterministic.
The safetensors library writes the metadata in hash-map order, which differs from call to call,
so two saves of the same tensors gave different bytes; the header is rewritten with the metadata
keys sorted, and a ``header_sha256`` entry (the sha256 of the header with that value zeroed) lets
the reader tell a damaged header from a valid one.

Reading (:func:`read_safetensors`): every problem is a :class:`CheckpointError` whose message
names the file and the tensor or metadata field: unreadable or damaged files, a header that does
not match its checksum, unexpected metadata fields, and tensors holding NaN or inf (metaprompt
never writes those, so a file that has them was damaged or written by something else). Each
check runs once per file read, never per training step.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

import torch

from metaprompt.errors import UserError

CHECKSUM_KEY = "header_sha256"
ZEROS = "0" * 64
_CHECKSUM_RE = re.compile(rb'"header_sha256":"([^"]*)"')


class CheckpointError(UserError, ValueError):
    """A checkpoint, init or export tensor file cannot be written or read (the message names it)."""


def _finite(value: torch.Tensor) -> bool:
    """Whether every value is finite. A sum is about 3x faster than ``isfinite().all()`` and is
    NaN or inf whenever a value is; only then (or when the sum overflows) is each value looked at."""
    if not value.is_floating_point() or not value.numel():
        return True
    with torch.no_grad():
        return bool(torch.isfinite(value.sum())) or bool(torch.isfinite(value).all())


def check_finite(tensors: dict[str, torch.Tensor], path: Path, reading: bool = False) -> None:
    """Raise unless every floating-point tensor is finite; the message names the file and the tensor."""
    for name, value in tensors.items():
        if not _finite(value):
            if not reading:
                raise CheckpointError(f"refusing to write {path}: '{name}' has non-finite values (NaN or inf)")
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{path}: tensor '{name}' holds non-finite values ({bad} of {value.numel()} are NaN or inf); "
                "metaprompt never writes NaN or inf, so the file is damaged or was not written by metaprompt")


def _canonical_header(raw: bytes, checksum: bool) -> bytes:
    """The header with sorted metadata (and its checksum), padded to ``len(raw)`` when it fits."""
    header = json.loads(raw)
    metadata = header.pop("__metadata__", None)
    ordered: dict = {}
    if metadata is not None:
        metadata = dict(sorted(metadata.items()))
        if checksum:
            metadata[CHECKSUM_KEY] = ZEROS
            metadata = dict(sorted(metadata.items()))
        ordered["__metadata__"] = metadata
    ordered.update(header)  # tensor entries keep the library's (deterministic) order
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    size = len(raw) if len(text) <= len(raw) else len(text) + (-len(text) % 8)
    text = text + b" " * (size - len(text))
    if checksum:
        digest = hashlib.sha256(text).hexdigest().encode()
        text = text.replace(b'"header_sha256":"' + ZEROS.encode() + b'"', b'"header_sha256":"' + digest + b'"', 1)
    return text


def canonicalize_file(path: Path, checksum: bool = False) -> None:
    """Rewrite a safetensors file's header in canonical order (in place when its length is kept).

    Also used on the files that transformers and peft write (``save_pretrained``), so that every
    safetensors file metaprompt writes is byte-deterministic."""
    path = Path(path)
    with open(path, "r+b") as handle:
        first = handle.read(8)
        n = int.from_bytes(first, "little")
        raw = handle.read(n)
        new = _canonical_header(raw, checksum)
        if new == raw:
            return
        if len(new) == len(raw):
            handle.seek(8)
            handle.write(new)
            return
    body_start = 8 + n
    with open(path, "rb") as handle:
        handle.seek(body_start)
        body = handle.read()
    path.write_bytes(len(new).to_bytes(8, "little") + new + body)


def _verify_checksum(path: Path) -> None:
    with open(path, "rb") as handle:  # safetensors has already refused headers over 100 MB
        n = int.from_bytes(handle.read(8), "little")
        raw = handle.read(n)
    found = _CHECKSUM_RE.findall(raw)
    if not found:
        return  # a file written before checksums were recorded: the structure checks still apply
    zeroed = _CHECKSUM_RE.sub(b'"header_sha256":"' + ZEROS.encode() + b'"', raw, count=1)
    if len(found) != 1 or hashlib.sha256(zeroed).hexdigest().encode() != found[0]:
        raise CheckpointError(f"{path}: the header does not match its checksum (field '{CHECKSUM_KEY}'): the file "
                              "is damaged")


def read_safetensors(path: Path, fields: Iterable[str] | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, checked (see the module docstring).

    ``fields``: the metadata keys the file may have (besides the checksum); others are refused."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    _verify_checksum(path)
    metadata.pop(CHECKSUM_KEY, None)
    if fields is not None:
        unknown = sorted(set(metadata) - set(fields))
        if unknown:
            raise CheckpointError(f"{path}: unexpected metadata field '{unknown[0]}' (expected "
                                  f"{', '.join(sorted(fields))}): the file is damaged or not metaprompt's")
    check_finite(tensors, path, reading=True)
    return tensors, metadata
