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
    line and column). Lenient where it is harmless: NaN and Infinity are read as null."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: the {what} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    try:
        # NaN / Infinity, which files written before dumps_strict may hold, are read as null
        return json.loads(text, parse_constant=lambda name: None)
    except json.JSONDecodeError as err:
        raise error(f"{path}: the {what} is not valid JSON ({err})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: What a field may hold, by name (for :func:`check_fields`).
KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "count": (lambda v: _is_int(v) and v >= 0, "an integer ≥ 0"),
    "size": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1"),
    "number": (lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v), "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "ints": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
    "strs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "shapes": (lambda v: isinstance(v, dict) and all(isinstance(s, list) and all(_is_int(x) and x >= 0 for x in s)
                                                     for s in v.values()), "an object of tensor shapes"),
}


def check_fields(obj: dict, spec: dict[str, str], path: Path | str, error: type[Exception], hint: str = "") -> None:
    """Check the fields of a parsed JSON object: ``spec`` maps dotted keys to a kind of :data:`KINDS`,
    with ``?`` after the kind for an optional field (``null`` allowed with ``?null``). The first
    mismatch raises ``error`` naming the file and the field."""
    for key, kind in spec.items():
        optional, nullable = kind.endswith("?") or kind.endswith("?null"), kind.endswith("?null")
        test, what = KINDS[kind.split("?")[0]]
        node: Any = obj
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        present = isinstance(node, dict) and parts[-1] in node
        if not present:
            if optional:
                continue
            raise error(f"{path}: field '{key}' is missing{hint}")
        value = node[parts[-1]]
        if (value is None and nullable) or test(value):
            continue
        raise error(f"{path}: field '{key}': expected {what}, got {json.dumps(value, default=str)[:40]}{hint}")
