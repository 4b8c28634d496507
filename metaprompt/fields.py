"""Typed reading of the JSON that metaprompt reads back from disk.

metaprompt.json of an export, results.json of a run and the JSON metadata of a checkpoint are
written by metaprompt, but a file can be truncated, flipped or edited by hand. Code that reads
them indexes into them directly, so a wrong type surfaced as a ``KeyError`` or ``TypeError``
deep inside. :func:`check_fields` checks the fields a reader uses, up front, and turns a wrong or
missing one into a :class:`FileFormatError` that names the file and the field.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from metaprompt.errors import UserError


class FileFormatError(UserError, ValueError):
    """A file metaprompt wrote is malformed (the message names the file and the field)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool))


#: kind -> (test, words); a kind ending in "?" may be missing, one ending in "?null" missing or null.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "count": (lambda v: _is_int(v) and v >= 0, "an integer ≥ 0"),
    "size": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1"),
    "number": (lambda v: _is_number(v) and math.isfinite(v), "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "ints": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
    "strs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "shapes": (lambda v: isinstance(v, dict) and all(isinstance(s, list) and all(_is_int(d) and d >= 0 for d in s)
                                                     for s in v.values()), "an object of tensor shapes"),
}

_MISSING = object()


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def check_fields(obj: Any, spec: dict[str, str], path: str | Path, hint: str = "", prefix: str = "") -> None:
    """Check ``obj`` (parsed JSON) against ``spec`` ({dotted field: kind}, see :data:`KINDS`).

    A field under an optional parent that is absent is not checked."""
    if not isinstance(obj, dict):
        where = f"field '{prefix.rstrip('.')}': " if prefix else ""
        raise FileFormatError(f"{path}: {where}expected a JSON object, got {_show(obj)}{hint}")
    for dotted, kind in spec.items():
        optional, nullable = "?" in kind, kind.endswith("?null")
        test, words = KINDS[kind.split("?")[0]]
        parent = dotted.rpartition(".")[0]
        if parent and not isinstance(_get(obj, parent), dict):
            continue  # the parent's own entry reports it (or it is optional and absent)
        value = _get(obj, dotted)
        if value is _MISSING:
            if optional:
                continue
            raise FileFormatError(f"{path}: field '{prefix}{dotted}' is missing{hint}")
        if value is None and nullable:
            continue
        if not test(value):
            raise FileFormatError(f"{path}: field '{prefix}{dotted}': expected {words}, got {_show(value)}{hint}")


#: The fields of an export's metaprompt.json that `metaprompt load` and `load_init` use.
EXPORT_FIELDS = {
    "format": "str",
    "export_format": "str?", "title": "str?", "auto_class": "str?", "template": "str", "config": "dict",
    "base_model": "dict", "base_model.name": "str", "base_model.model_type": "str", "base_model.class": "str?",
    "base_model.path": "str?", "base_model.hidden_size": "size", "base_model.num_hidden_layers": "size",
    "base_model.vocab_size": "size", "parameters": "shapes", "meta_learned": "strs?",
    "prompt": "dict", "prompt.kind": "str", "prompt.length": "count",
    "verbalizer": "dict", "verbalizer.kind": "str", "verbalizer.temperature": "number?",
    "dataset": "str", "n_way": "size", "k_shot": "size", "meta_train_classes": "ints", "meta_test_classes": "ints?",
    "training": "dict?", "training.step": "count?null", "training.val_accuracy": "number?null",
    "training.commit": "str?null", "commit": "str?null", "metrics": "dict?", "peft": "dict?null",
    "peft.available": "bool?", "peft.reason": "str?", "peft.peft_type": "str?null", "peft.exact": "bool?",
    "peft.not_exact_because": "str?", "peft.how_to": "str?", "peft.adapter": "str?null",
    "peft.backbone_adapter": "str?null", "peft.base_model_dir": "str?null",
}

def check_export_meta(meta: Any, path: str | Path) -> None:
    hint = " (a truncated or hand-edited file? export the run again)"
    check_fields(meta, EXPORT_FIELDS, path, hint)
    for key, value in (meta.get("metrics") or {}).items():
        if isinstance(value, dict) and "accuracy_mean" in value:  # a score row (not e.g. the adaptation settings)
            check_fields(value, {"accuracy_mean": "number", "accuracy_ci95": "number?null"}, path, hint,
                         f"metrics.{key}.")
    peft = meta.get("peft")
    if isinstance(peft, dict) and peft.get("available"):
        check_fields(peft, {"exact": "bool", "how_to": "str"}, path, hint, "peft.")
        if not peft["exact"]:
            check_fields(peft, {"not_exact_because": "str"}, path, hint, "peft.")
    elif isinstance(peft, dict) and not isinstance(peft.get("reason"), str):
        raise FileFormatError(f"{path}: field 'peft.reason' is missing{hint}")
    for key in ("base_model_dir", "backbone_adapter"):  # folders inside the export, never outside it
        value = (peft or {}).get(key)
        if isinstance(value, str) and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise FileFormatError(f"{path}: field 'peft.{key}': {value!r} is not a folder inside the export{hint}")
