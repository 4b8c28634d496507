"""Reading and checking ``{"text": str, "label": int}`` JSON-lines data files.

We read the lines ourselves instead of using ``datasets``' JSON loader because
that loader cannot say on which line an error is; here every problem names
its file, line and field. One scanner (:func:`scan_data_file`) serves both
:func:`check_data_file` (report everything) and :func:`read_jsonl` (load, or
raise one error listing the problems).

Example ids are 0-based positions of the examples in the file. Blank lines are
skipped and do not count, so in a file without blank lines an example's id is
its line number minus one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

from .errors import Problem, describe_value, errors_only, raise_problems
from .splits import MAX_ID, ClassSplits, is_json_int

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import datasets

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ScanResult:
    """What one pass over a data file found: the valid examples, their line numbers and the problems."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sha256: str = ""
    keys: list[int] = field(default_factory=list)  # text_key of each text (finds duplicates)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (of the compressed bytes for ``.gz`` files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_binary(path: Path, problems: list[Problem]) -> IO[bytes]:
    """Open plain or gzip files alike; gzip is recognised by its magic bytes, not the name."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    if path.suffix == ".gz":
        problems.append(
            Problem(str(path), None, None, "the name ends in .gz but the file is not gzip-compressed; read as plain text",
                    "warning")
        )
    return open(path, "rb")


def _lines(path: Path, problems: list[Problem]) -> Iterator[tuple[int, bytes]]:
    try:
        handle = _open_binary(path, problems)
    except OSError as err:
        problems.append(Problem(str(path), None, None, f"cannot be read: {err.strerror or err}"))
        return
    number = 0
    with handle:
        try:
            for number, raw in enumerate(handle, start=1):
                yield number, raw
        except (EOFError, OSError, zlib.error) as err:
            # Typically a truncated or corrupt gzip stream; the lines before were checked.
            problems.append(
                Problem(str(path), None, None,
                        f"reading stopped after line {number}: the data is corrupt or truncated ({err}); "
                        f"download or copy the file again")
            )


def _check_line(path: str, number: int, raw: bytes, problems: list[Problem]) -> tuple[str, int] | None:
    """Validate one line; return (text, label) or None after recording its problems."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        problems.append(Problem(path, number, None, f"invalid UTF-8 at byte {err.start + 1} of the line; the file must be UTF-8 encoded"))
        return None
    if number == 1:
        line = line.lstrip("\ufeff")  # tolerate a byte-order mark
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        problems.append(Problem(path, number, None, f"malformed JSON: {err.msg} (column {err.colno})"))
        return None
    if not isinstance(obj, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(type(obj), "null")
        problems.append(Problem(path, number, None, f"expected a JSON object like {{\"text\": ..., \"label\": ...}}, got {kind}"))
        return None
    ok = True
    text = obj.get("text")
    if "text" not in obj:
        problems.append(Problem(path, number, "text", "missing"))
        ok = False
    elif not isinstance(text, str):
        hint = ""
        if isinstance(text, list):
            hint = " (a token list, as in Bao et al.'s files: convert those with `metaprompt data download`, which joins the tokens)"
        problems.append(Problem(path, number, "text", f"expected a string, got {describe_value(text)}{hint}"))
        ok = False
    elif not text.strip():
        problems.append(Problem(path, number, "text", "empty or whitespace-only text"))
        ok = False
    elif not text.isprintable() and all(_invisible(ch) for ch in text):  # isprintable: the fast C path
        shown = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".rstrip()
                          for ch in dict.fromkeys(c for c in text if not c.isspace()))
        problems.append(Problem(path, number, "text", f"no visible character (only {shown}): the text "
                                                      "tokenizes to nothing"))
        ok = False
    label = obj.get("label")
    if "label" not in obj:
        problems.append(Problem(path, number, "label", "missing"))
        ok = False
    elif not is_json_int(label):
        problems.append(Problem(path, number, "label", f"expected an integer, got {describe_value(label)}"))
        ok = False
    elif label < 0:
        problems.append(Problem(path, number, "label", f"expected a non-negative class id, got {label}"))
        ok = False
    elif label > MAX_ID:
        problems.append(Problem(path, number, "label", f"class id {label} is too large (at most 2**63 - 1)"))
        ok = False
    return (text, label) if ok else None  # type: ignore[return-value]


def _invisible(ch: str) -> bool:
    """Whitespace, control and format characters (zero-width space U+200B, joiners, BOM, soft
    hyphen): tokenizers drop them, so a text of only these becomes no tokens at all."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp")


def text_key(text: str) -> int:
    """A key of a text for finding duplicates: case and runs of white space do not count (within one
    process; a 64-bit hash, so a false match among a million texts has a chance of about 3e-8)."""
    return hash(" ".join(text.split()).casefold())


def scan_data_file(path: str | Path, keep_texts: bool = True) -> ScanResult:
    """Read and validate every line of a data file, collecting all problems instead of stopping at the first."""
    path = Path(path)
    result = ScanResult()
    name = str(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        result.problems.append(Problem(name, None, None, f"the data file {what}"))
        return result
    try:
        result.sha256 = file_sha256(path)
    except OSError as err:
        result.problems.append(Problem(name, None, None, f"cannot be read: {err.strerror or err}"))
        return result
    for number, raw in _lines(path, result.problems):
        if not raw.strip():
            continue
        example = _check_line(name, number, raw, result.problems)
        if example is not None:
            result.texts.append(example[0] if keep_texts else "")
            result.keys.append(text_key(example[0]))
            result.labels.append(example[1])
            result.lines.append(number)
    if not result.labels and not errors_only(result.problems):
        result.problems.append(Problem(name, None, None, "the file has no examples"))
    return result


def split_problems(
    path: str, scan: ScanResult, splits: ClassSplits | None, min_per_class: int | None
) -> list[Problem]:
    """Problems of the labels as a whole: classes outside the splits, and classes that are too small."""
    problems: list[Problem] = []
    counts = Counter(scan.labels)
    if splits is not None:
        known = set(splits.all_classes)
        first_line: dict[int, int] = {}
        for label, line in zip(scan.labels, scan.lines):
            if label not in known and label not in first_line:
                first_line[label] = line
        where = f" of {splits.source}" if splits.source else ""
        for label, line in sorted(first_line.items(), key=lambda item: item[1]):
            n = counts[label]
            others = f"; {n - 1} later line{'s have' if n > 2 else ' has'} it too" if n > 1 else ""
            problems.append(
                Problem(path, line, "label",
                        f"class {label} is not in any split (train/val/test){where}{others}")
            )
        problems.extend(cross_split_duplicates(path, scan, splits))
    classes = splits.all_classes if splits is not None else tuple(sorted(counts))
    for cid in classes:
        n = counts.get(cid, 0)
        desc = f"class {cid}" + (f" ({splits.name(cid)}, {splits.split_of(cid)} split)" if splits is not None else "")
        if min_per_class is not None and n < min_per_class:
            problems.append(
                Problem(path, None, "label",
                        f"{desc} has {n} example{'s' if n != 1 else ''}; at least {min_per_class} are needed "
                        f"(k_shot + n_query of one episode)")
            )
        elif n == 0:
            problems.append(Problem(path, None, "label", f"{desc} has no examples in this file", "warning"))
    return problems


def cross_split_duplicates(path: str, scan: ScanResult, splits: ClassSplits) -> list[Problem]:
    """Warnings for a text that is under classes of two different splits: a test class that shares
    a text with a training class leaks meta-training data into the test score. (A warning, not an
    error: the 20 Newsgroups benchmark itself has two such texts.)"""
    first: dict[int, tuple[int, int]] = {}
    problems = []
    for key, label, line in zip(scan.keys, scan.labels, scan.lines):
        if key not in first:
            first[key] = (label, line)
            continue
        other, other_line = first[key]
        a, b = splits.split_of(other), splits.split_of(label)
        if a is None or b is None or a == b:
            continue
        problems.append(Problem(
            path, line, "text",
            f"the same text is under class {label} ({splits.name(label)}, {b} split) here and under class {other} "
            f"({splits.name(other)}, {a} split) on line {other_line}: a leak between {a} and {b} classes", "warning"))
    return problems


def check_data_file(
    path: str | Path, splits: ClassSplits | None = None, min_per_class: int | None = None
) -> list[Problem]:
    """Every problem of a data file at once, without raising.

    Checks each line (JSON, object, ``text`` a non-empty string, ``label`` an integer),
    and, given ``splits``, that every label is a class of a split; given
    ``min_per_class``, that every class has at least that many examples.
    """
    scan = scan_data_file(path, keep_texts=splits is not None)
    return scan.problems + split_problems(str(path), scan, splits, min_per_class)


def to_table(texts: list[str], labels: list[int]) -> "datasets.Dataset":
    import datasets  # imported here: it is slow to import and only needed once data is loaded

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)


def load_validated(path: str | Path, splits: ClassSplits | None = None) -> tuple["datasets.Dataset", str]:
    """Scan a data file, raise one DataError if it has problems, else return (table, sha256 of the file)."""
    scan = scan_data_file(path)
    problems = scan.problems + (split_problems(str(path), scan, splits, None) if splits is not None else [])
    raise_problems(problems, path)
    leaks = [p for p in problems if p.severity == "warning" and "a leak between" in p.message]
    if leaks:
        log.warning("%s: %d text(s) under classes of two different splits (first: %s); `metaprompt data check %s` "
                    "lists them", path, len(leaks), leaks[0], path)
    return to_table(scan.texts, scan.labels), scan.sha256


def read_jsonl(path: str | Path) -> "datasets.Dataset":
    """Load a ``{"text": str, "label": int}`` JSON-lines file (plain or gzip) as a ``datasets.Dataset``.

    Every line is validated; if any is bad, one :class:`DataError` lists the first
    problems as ``FILE:LINE: field 'label': expected an integer, got "abc"``.
    Extra fields are ignored and blank lines skipped.
    """
    return load_validated(path)[0]
