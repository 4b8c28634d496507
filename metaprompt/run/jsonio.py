"""Strict JSON for every file metaprompt writes, and one reader for the JSON files it reads.

Python's ``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which no other JSON parser
accepts (a results.json of one test episode had ``"accuracy_ci95": NaN``). :func:`dumps_strict`
writes a non-finite number as ``null``, logs which field it was, and then serializes with
``allow_nan=False``, so the output is always valid JSON. Producers that know why a value is
missing say so in a field of their own (e.g. ``accuracy_ci95_note``).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def finite_or_none(value: Any, where: str = "", dropped: list[str] | None = None) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        if dropped is not None:
            dropped.append(where or "(top level)")
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v, f"{where}.{k}" if where else str(k), dropped) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v, f"{where}[{i}]", dropped) for i, v in enumerate(value)]
    return value


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN/Infinity (they become null; see the module docstring)."""
    dropped: list[str] = []
    clean = finite_or_none(obj, dropped=dropped)
    if dropped:
        log.warning("non-finite values written as null: %s", ", ".join(dropped[:5]))
    return json.dumps(clean, allow_nan=False, **kwargs)


def read_json(path: Path, error: type[Exception], what: str = "file") -> Any:
    """A whole JSON file; unreadable or malformed content raises ``error`` naming the file (and the
    line and column). Lenient where it is harmless: NaN and Infinity, which files written before
    :func:`dumps_strict` may hold, are read as null. (The reader of the data layer, raising ``error``.)"""
    from episodes import DataError
    from episodes.paths import read_json_file

    try:
        return read_json_file(Path(path), what, nan_as_null=True)
    except DataError as err:
        raise error(str(err)) from None
