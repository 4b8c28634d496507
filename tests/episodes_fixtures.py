"""Helpers shared by the tests of the ``episodes`` package: small data files written on the fly."""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Iterable

import pytest

SHARED_DATA = Path(os.environ.get("METAPROMPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_data_or_skip(name: str) -> Path:
    """The shared data folder if it holds ``name`` (e.g. ``reuters.jsonl.gz``), else skip the test."""
    if not (SHARED_DATA / name).is_file():
        pytest.skip(f"{SHARED_DATA / name} is not present")
    return SHARED_DATA


def write_jsonl(path: Path, rows: Iterable[dict | str], gz: bool = False) -> Path:
    """Write rows (dicts are JSON-encoded, strings written as is) one per line."""
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0) if gz else text.encode("utf-8"))
    return path


def balanced_rows(n_classes: int, per_class: int, prefix: str = "text") -> list[dict]:
    """``per_class`` rows per label 0 … n_classes-1, interleaved (label = row index mod n_classes)."""
    return [{"text": f"{prefix} {i} of class {i % n_classes}", "label": i % n_classes} for i in range(n_classes * per_class)]


def split_obj(train: list[int], val: list[int], test: list[int], **extra) -> dict:
    ids = train + val + test
    return {"train": train, "val": val, "test": test, "label_names": {str(i): f"Class {i}" for i in ids}, **extra}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def bao_lines(n_classes: int, per_class: int, with_raw: bool, tag: str = "w") -> bytes:
    """Lines in Bao et al.'s format: ``text`` a token list, ``label`` an int, optionally ``raw``."""
    out = io.StringIO()
    for i in range(n_classes * per_class):
        label = i % n_classes
        tokens = [tag, str(i), "class", str(label)]
        row = {"text": tokens, "label": label}
        if with_raw:
            row["raw"] = f"Raw {tag.upper()} {i} of class {label}."
        out.write(json.dumps(row) + "\n")
    return out.getvalue().encode("utf-8")


# Class counts of the four data sets in Bao et al.'s ids.
N_CLASSES = {"huffpost": 41, "amazon": 24, "reuters": 31, "20news": 20}


def bao_zip(path: Path, per_class: int = 25, names: Iterable[str] = N_CLASSES) -> Path:
    """A small stand-in for Bao's data.zip: ``data/<name>.json`` for each name."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(f"data/{name}.json", bao_lines(N_CLASSES[name], per_class, with_raw=name == "reuters", tag=name))
        archive.writestr("data/README.txt", "fixture")
    return path
