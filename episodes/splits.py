"""Class splits (which classes are meta-train, meta-val and meta-test) and label words.

In few-shot text classification the splits are over *classes*, not examples:
a model meta-trains on episodes of the train classes and is scored on
episodes of the test classes it has never seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import DataError, describe_value

SPLIT_NAMES = ("train", "val", "test")

# Words that carry no class meaning in names such as "STYLE & BEAUTY" or "Home_and_Kitchen".
_STOP_WORDS = frozenset({"and", "the", "&"})


#: The largest class id (labels become 64-bit integer columns and index arrays; no data set has more classes).
MAX_CLASS_ID = 2**31 - 1


def is_json_int(value: object) -> bool:
    # JSON true/false parse as Python bools, which are ints; they are never class ids.
    return isinstance(value, int) and not isinstance(value, bool)


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _validate(
    ids: Mapping[str, tuple[int, ...]],
    label_names: Mapping[int, str],
    source: str,
    prefix: str,
    n_classes: int | None = None,
) -> None:
    """Raise a DataError naming ``source`` and the field if the splits are not usable."""
    owner: dict[int, str] = {}
    for split in SPLIT_NAMES:
        where = f"{source}: field '{_field(prefix, split)}'"
        values = ids[split]
        if len(values) == 0:
            raise DataError(f"{where}: the {split} split has no classes; list at least one class id.")
        for value in values:
            if not is_json_int(value):
                raise DataError(f"{where}: class ids must be integers, got {describe_value(value)}.")
            if value < 0:
                raise DataError(f"{where}: class ids must be non-negative, got {value}.")
            if value > MAX_CLASS_ID:
                raise DataError(f"{where}: class id {value} is too large (at most 2**31 - 1).")
            if n_classes is not None and value >= n_classes:
                raise DataError(
                    f"{where}: class {value} is out of range: '{_field(prefix, 'n_classes')}' is {n_classes}, "
                    f"so ids run from 0 to {n_classes - 1}."
                )
            if value in owner:
                other = owner[value]
                detail = "twice" if other == split else f"in both '{other}' and '{split}'"
                raise DataError(
                    f"{where}: class {value} is listed {detail}; each class belongs to exactly one split "
                    f"(meta-train, meta-val and meta-test classes must not overlap)."
                )
            owner[value] = split
    missing = sorted(set(owner) - set(label_names))
    if missing:
        shown = ", ".join(str(c) for c in missing[:10]) + (" …" if len(missing) > 10 else "")
        raise DataError(
            f"{source}: field '{_field(prefix, 'label_names')}': no name for class{'es' if len(missing) > 1 else ''} "
            f"{shown}; give every class of the splits a name, e.g. {{\"{missing[0]}\": \"sports\"}}."
        )
    for cid, name in label_names.items():
        if not isinstance(name, str) or not name.strip():
            raise DataError(
                f"{source}: field '{_field(prefix, 'label_names')}.{cid}': a label name must be a non-empty string, "
                f"got {describe_value(name)}."
            )


def _int_keyed(obj: object, source: str, field_name: str) -> dict[int, Any]:
    """Turn a JSON object with integer-string keys ("0", "1", …) into an int-keyed dict."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{source}: field '{field_name}': expected an object mapping class ids to values, "
            f"like {{\"0\": …}}, got {describe_value(obj)}."
        )
    out: dict[int, Any] = {}
    for key, value in obj.items():
        try:
            cid = int(key)
        except (TypeError, ValueError):
            cid = None
        if cid is None or str(cid) != str(key).strip() or cid < 0:
            raise DataError(
                f"{source}: field '{field_name}': keys must be class ids (non-negative integers), got {describe_value(key)}."
            )
        out[cid] = value
    return out


@dataclass(frozen=True)
class ClassSplits:
    """The meta-train, meta-val and meta-test class ids of a data set, with a name per class.

    ``source`` (where the splits were read from) is only used in messages.
    """

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    label_names: dict[int, str] = field(hash=False)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for split in SPLIT_NAMES:
            object.__setattr__(self, split, tuple(getattr(self, split)))
        _validate(
            {s: getattr(self, s) for s in SPLIT_NAMES}, self.label_names, self.source or "ClassSplits", ""
        )

    @classmethod
    def from_json(cls, obj: object, source: str, prefix: str = "") -> "ClassSplits":
        """Build splits from a parsed JSON object ``{"train": [...], "val": [...], "test": [...], "label_names": {...}}``.

        ``source`` is the file it came from and ``prefix`` the path of ``obj`` inside it
        (e.g. ``"huffpost"`` in the built-in ``splits.json``); both appear in error messages.
        An optional ``"n_classes"`` bounds the ids; other keys are ignored.
        """
        if not isinstance(obj, dict):
            raise DataError(
                f"{source}: field '{prefix or '(top level)'}': expected an object with 'train', 'val', 'test' and "
                f"'label_names', got {describe_value(obj)}."
            )
        ids: dict[str, tuple[int, ...]] = {}
        for split in SPLIT_NAMES:
            if split not in obj:
                raise DataError(
                    f"{source}: field '{_field(prefix, split)}' is missing; a split file needs 'train', 'val' and "
                    f"'test' lists of class ids and a 'label_names' object."
                )
            values = obj[split]
            if not isinstance(values, list):
                raise DataError(
                    f"{source}: field '{_field(prefix, split)}': expected a list of class ids, got {describe_value(values)}."
                )
            ids[split] = tuple(values)
        if "label_names" not in obj:
            raise DataError(
                f"{source}: field '{_field(prefix, 'label_names')}' is missing; give each class id a name, "
                f"like {{\"0\": \"sports\", \"1\": \"politics\"}}."
            )
        names = _int_keyed(obj["label_names"], source, _field(prefix, "label_names"))
        n_classes = obj.get("n_classes")
        if n_classes is not None and (not is_json_int(n_classes) or n_classes < 1):
            raise DataError(
                f"{source}: field '{_field(prefix, 'n_classes')}': expected a positive integer, got {describe_value(n_classes)}."
            )
        _validate(ids, names, source, prefix, n_classes)
        return cls(ids["train"], ids["val"], ids["test"], names, source=source)

    def classes(self, split: str) -> tuple[int, ...]:
        """The class ids of ``split`` ("train", "val" or "test")."""
        if split not in SPLIT_NAMES:
            raise DataError(f"Unknown split {split!r}: use one of 'train', 'val' or 'test'.")
        return getattr(self, split)

    @property
    def all_classes(self) -> tuple[int, ...]:
        return self.train + self.val + self.test

    def split_of(self, class_id: int) -> str | None:
        for split in SPLIT_NAMES:
            if class_id in getattr(self, split):
                return split
        return None

    def name(self, class_id: int) -> str:
        return self.label_names.get(class_id, str(class_id))


def derive_label_words(label_name: str) -> list[str]:
    """Label words from a class name: lower-cased alphanumeric runs, without "and"/"the"/"&".

    ``"STYLE & BEAUTY"`` → ``["style", "beauty"]``; ``"Home_and_Kitchen"`` → ``["home", "kitchen"]``.
    """
    words = [w for w in re.findall(r"[^\W_]+", label_name.lower()) if w not in _STOP_WORDS]
    return words or [label_name.strip().lower()]


def parse_label_words(obj: object, source: str, field_name: str, class_ids: tuple[int, ...]) -> dict[int, list[str]]:
    """Validate a JSON ``{"0": ["w1", "w2"], ...}`` object covering every class in ``class_ids``."""
    words = _int_keyed(obj, source, field_name)
    for cid, value in words.items():
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(w, str) and w.strip() for w in value)
        ):
            raise DataError(
                f"{source}: field '{field_name}.{cid}': expected a non-empty list of words, "
                f"like [\"sports\", \"games\"], got {describe_value(value)}."
            )
    missing = [c for c in class_ids if c not in words]
    if missing:
        raise DataError(
            f"{source}: field '{field_name}': no label words for class{'es' if len(missing) > 1 else ''} "
            f"{', '.join(map(str, missing[:10]))}{' …' if len(missing) > 10 else ''}; give every class a list of words "
            f"or leave '{field_name}' out to derive the words from the label names."
        )
    return {cid: list(value) for cid, value in words.items()}
