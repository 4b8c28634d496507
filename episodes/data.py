"""Data sets for few-shot text classification: the four built-in benchmarks and custom data.

A data set is a JSON-lines file of ``{"text": str, "label": int}`` examples plus
class splits (see :mod:`episodes.splits`). Example ids are 0-based positions
of the examples in the data file (blank lines not counted): in a file without
blank lines, id = line number - 1. Episodes and episode files refer to
examples by these ids.

Built-in data sets are looked up in the folders of :func:`resolve_data_dir`.
Their class splits and label names come from ``splits.json`` beside the data
file if there is one, else from the copy shipped in ``episodes/resources``;
label words likewise from ``verbalizers.json``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from metaprompt.registry import Registry

from .errors import DataError, Problem
from .jsonl import check_data_file, load_validated, read_jsonl
from .paths import default_cache_dir, packaged_path, read_json_file, resolve_data_dir, search_dirs
from .splits import ClassSplits, derive_label_words, parse_label_words

if TYPE_CHECKING:
    import datasets

__all__ = [
    "BUILTIN_DATASETS",
    "DATASETS",
    "BuiltinDataset",
    "ClassSplits",
    "DataError",
    "Problem",
    "TextDataset",
    "check_data_dir",
    "check_data_file",
    "default_cache_dir",
    "load_custom_dataset",
    "load_dataset",
    "load_label_words",
    "read_jsonl",
    "resolve_data_dir",
]

@dataclass(frozen=True)
class BuiltinDataset:
    """A built-in data set: its name (``data.dataset``) and what it is. Its files are
    :func:`data_file_names` in a data folder, its class splits a section of ``splits.json`` and its
    label words a section of ``verbalizers.json`` (both packaged in ``episodes/resources``)."""

    name: str
    description: str


#: Built-in data sets by name (``data.dataset``; ``custom`` is a data set of one's own, not registered).
DATASETS: Registry[BuiltinDataset] = Registry("built-in data set")
for _name, _description in (("huffpost", "HuffPost news headlines, 41 categories"),
                            ("amazon", "Amazon product reviews, 24 product categories"),
                            ("reuters", "Reuters-21578 news articles, 31 topics"),
                            ("20news", "20 Newsgroups posts, 20 newsgroups")):
    DATASETS.register(_name)(BuiltinDataset(_name, _description))

#: The data sets of Bao et al.'s data.zip (``metaprompt data download``).
BUILTIN_DATASETS = DATASETS.names()
BAO_DATA_URL = "https://people.csail.mit.edu/yujia/files/distributional-signatures/data.zip"
SPLITS_FILE = "splits.json"
VERBALIZERS_FILE = "verbalizers.json"


def data_file_names(name: str) -> tuple[str, str]:
    """The file names a built-in data set may have, in order of preference."""
    return f"{name}.jsonl.gz", f"{name}.jsonl"


@dataclass(eq=False)
class TextDataset:
    """A loaded data set: the examples (a ``datasets.Dataset`` with ``text`` and ``label``) and its class splits.

    ``sha256`` is the hash of the data file's bytes; episode files record it to tie
    episodes to the data they index. Example ids index ``table`` rows.
    """

    name: str
    path: Path
    table: "datasets.Dataset"
    splits: ClassSplits
    sha256: str
    label_words: dict[int, list[str]]

    @cached_property
    def texts(self) -> list[str]:
        return self.table.data.column("text").to_pylist()

    @cached_property
    def labels(self) -> np.ndarray:
        """The label of every example, as int64."""
        return np.asarray(self.table.data.column("label").to_numpy(), dtype=np.int64)

    @cached_property
    def _ids_by_class(self) -> dict[int, np.ndarray]:
        order = np.argsort(self.labels, kind="stable")
        values, starts = np.unique(self.labels[order], return_index=True)
        return {int(v): ids for v, ids in zip(values, np.split(order, starts[1:]))}

    def indices_by_class(self, classes: Iterable[int]) -> dict[int, np.ndarray]:
        """Example ids of each class, ascending (an empty array for a class without examples)."""
        empty = np.zeros(0, dtype=np.int64)
        return {int(c): self._ids_by_class.get(int(c), empty) for c in classes}

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"TextDataset(name={self.name!r}, path={str(self.path)!r}, examples={len(self)}, classes={len(self.splits.all_classes)})"


# ---------------------------------------------------------------- splits and label words


def _splits_table(data_dir: Path | None) -> tuple[dict[str, Any], str]:
    """The parsed splits.json of ``data_dir`` if it has one, else the packaged copy."""
    if data_dir is not None and (data_dir / SPLITS_FILE).is_file():
        path = data_dir / SPLITS_FILE
        return read_json_file(path, "split file"), str(path)
    return read_json_file(packaged_path(SPLITS_FILE), "split file"), f"episodes/resources/{SPLITS_FILE}"


def load_splits(name: str, data_dir: str | Path | None = None) -> ClassSplits:
    """Class splits of a built-in data set (from ``data_dir/splits.json`` if it lists the data set)."""
    _check_builtin(name)
    table, source = _splits_table(Path(data_dir) if data_dir is not None else None)
    if not isinstance(table, dict) or name not in table:
        table, source = read_json_file(packaged_path(SPLITS_FILE), "split file"), f"episodes/resources/{SPLITS_FILE}"
    return ClassSplits.from_json(table[name], source, prefix=name)


def _label_words_from(name: str, data_dir: Path | None, splits: ClassSplits, section: str) -> dict[int, list[str]]:
    candidates: list[tuple[Any, str]] = []
    if data_dir is not None and (data_dir / VERBALIZERS_FILE).is_file():
        candidates.append((data_dir / VERBALIZERS_FILE, str(data_dir / VERBALIZERS_FILE)))
    candidates.append((packaged_path(VERBALIZERS_FILE), f"episodes/resources/{VERBALIZERS_FILE}"))
    for path, source in candidates:
        table = read_json_file(path, "label-word file")
        if isinstance(table, dict) and isinstance(table.get(section), dict) and name in table[section]:
            return parse_label_words(table[section][name], source, f"{section}.{name}", splits.all_classes)
    if section != "label_name":
        raise DataError(
            f"No label words of kind {section!r} (verbalizer.label_words) for data set {name!r} in {' or '.join(s for _, s in candidates)}; "
            f"use the 'label_name' words or add a '{section}' section."
        )
    return {cid: derive_label_words(splits.name(cid)) for cid in splits.all_classes}


def load_label_words(
    dataset_name: str, data_dir: str | Path | None = None, section: str = "label_name"
) -> dict[int, list[str]]:
    """Label words per class id of a built-in data set, from ``verbalizers.json``.

    ``section`` picks the word lists: ``"label_name"`` (words of the class names)
    or ``"metaprompter"`` (hand-edited words). The file beside the data set wins
    over the packaged one.
    """
    _check_builtin(dataset_name)
    data_file = _find_data_file(dataset_name, data_dir)
    folder = data_file.parent if data_file is not None else None
    return _label_words_from(dataset_name, folder, load_splits(dataset_name, folder), section)


# ---------------------------------------------------------------- built-in data sets


def _check_builtin(name: str) -> None:
    if name in DATASETS:
        return
    close = difflib.get_close_matches(str(name).lower(), DATASETS.names(), n=1, cutoff=0.4)
    guess = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(
        f"Unknown data set {name!r}.{guess} The built-in data sets are {', '.join(DATASETS.names())}; "
        f"for your own data use a custom data set (a JSON-lines file plus a class-split file)."
    )


def _find_data_file(name: str, data_dir: str | Path | None) -> Path | None:
    for folder in resolve_data_dir(data_dir):
        for file_name in data_file_names(name):
            if (folder / file_name).is_file():
                return folder / file_name
    return None


def _missing_message(name: str, data_dir: str | Path | None) -> str:
    places = "; ".join(f"{folder.absolute()} ({why})" for folder, why in search_dirs(data_dir))
    files = " or ".join(data_file_names(name))
    bao = [folder / f"{name}.json" for folder, _ in search_dirs(data_dir) if (folder / f"{name}.json").is_file()]
    bao_note = (
        f" ({bao[0]} looks like Bao et al.'s unconverted file: `episodes.download.convert_bao_file` converts it "
        f"to {name}.jsonl.gz.)" if bao else ""
    )
    if name == "amazon":
        return (
            f"The Amazon product-review data set is not available on this machine: metaprompt does not ship it "
            f"(no redistributable copy could be obtained), and no {files} was found in: {places}. "
            f"It comes from Bao et al.'s data.zip ({BAO_DATA_URL}): run `metaprompt data download` on a machine with "
            f"internet access, then put the resulting amazon.jsonl.gz in one of the folders above (or point "
            f"`data.dir` / $METAPROMPT_DATA at the folder that holds it).{bao_note}"
        )
    return (
        f"Data set {name!r} was not found: looked for {files} in: {places}. "
        f"Run `metaprompt data download` to fetch it (needs internet access), or put the file in one of these "
        f"folders, or set `data.dir` in the config (or $METAPROMPT_DATA) to the folder that holds it.{bao_note}"
    )


def load_dataset(name: str, data_dir: str | Path | None = None, label_words: str = "label_name") -> TextDataset:
    """Load a built-in data set ("huffpost", "amazon", "reuters" or "20news").

    ``data_dir`` (the config's ``data.dir``) is the only folder searched when given;
    otherwise :func:`resolve_data_dir` gives the search order. Every label must be
    a class of the splits. ``label_words``: the section of verbalizers.json (the config's
    ``verbalizer.label_words``).
    """
    _check_builtin(name)
    path = _find_data_file(name, data_dir)
    if path is None:
        raise DataError(_missing_message(name, data_dir))
    splits = load_splits(name, path.parent)
    words = _label_words_from(name, path.parent, splits, label_words)
    table, sha = load_validated(path, splits)
    return TextDataset(name=name, path=path, table=table, splits=splits, sha256=sha, label_words=words)


def read_split_file(splits_path: str | Path, name: str = "custom") -> tuple[ClassSplits, dict[str, Any], str]:
    """The class splits of a custom split file, with its JSON object and the prefix of the data set in it."""
    splits_path = Path(splits_path)
    if not splits_path.is_file():
        raise DataError(
            f"The class-split file {splits_path} does not exist. It must hold "
            f"{{\"train\": [...], \"val\": [...], \"test\": [...], \"label_names\": {{\"0\": \"name\", ...}}}}."
        )
    obj = read_json_file(splits_path, "split file")
    prefix = ""
    if isinstance(obj, dict) and "train" not in obj and isinstance(obj.get(name), dict):
        obj, prefix = obj[name], name  # a multi-data-set file like the built-in splits.json
    return ClassSplits.from_json(obj, str(splits_path), prefix=prefix), obj, prefix


def load_custom_dataset(path: str | Path, splits_path: str | Path, name: str = "custom") -> TextDataset:
    """Load your own data: a JSON-lines file and a class-split file.

    The split file is ``{"train": [...], "val": [...], "test": [...], "label_names": {"0": "name", ...}}``
    with an optional ``"label_words": {"0": ["w1", "w2"], ...}``; without it each class's
    words are its name's words (lower-cased, without "and", "the" and "&").
    """
    splits, obj, prefix = read_split_file(splits_path, name)
    words_field = f"{prefix}.label_words" if prefix else "label_words"
    if obj.get("label_words") is not None:
        label_words = parse_label_words(obj["label_words"], str(splits_path), words_field, splits.all_classes)
    else:
        label_words = {cid: derive_label_words(splits.name(cid)) for cid in splits.all_classes}
    table, sha = load_validated(path, splits)
    return TextDataset(name=name, path=Path(path), table=table, splits=splits, sha256=sha, label_words=label_words)


# ---------------------------------------------------------------- checking a data folder


def _as_problem(err: DataError, path: Path) -> Problem:
    message = str(err)
    prefix = f"{path}: "
    return Problem(str(path), None, None, message[len(prefix):] if message.startswith(prefix) else message)


def check_data_dir(data_dir: str | Path) -> list[Problem]:
    """Check a data folder: its ``splits.json`` / ``verbalizers.json`` and every built-in data file in it.

    A built-in data set that is absent is an ``info`` note, not an error.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        return [Problem(str(folder), None, None, "the data folder does not exist")]
    problems: list[Problem] = []
    splits_path = folder / SPLITS_FILE
    splits: dict[str, ClassSplits | None] = {}
    if splits_path.is_file():
        try:
            table = read_json_file(splits_path, "split file")
        except DataError as err:
            problems.append(_as_problem(err, splits_path))
            table = {}
        if not isinstance(table, dict):
            problems.append(Problem(str(splits_path), None, None, "expected an object keyed by data-set name"))
            table = {}
        for name in BUILTIN_DATASETS:
            if name not in table:
                continue
            try:
                splits[name] = ClassSplits.from_json(table[name], str(splits_path), prefix=name)
            except DataError as err:
                problems.append(_as_problem(err, splits_path))
                splits[name] = None
    else:
        problems.append(Problem(str(splits_path), None, None, "not present; the packaged class splits are used", "info"))
    verbalizers_path = folder / VERBALIZERS_FILE
    if verbalizers_path.is_file():
        problems.extend(_check_verbalizers(verbalizers_path, splits))
    for name in BUILTIN_DATASETS:
        path = next((folder / f for f in data_file_names(name) if (folder / f).is_file()), None)
        if path is None:
            how = ("it is not shipped; see `metaprompt data download`" if name == "amazon"
                   else "`metaprompt data download` fetches it")
            problems.append(Problem(str(folder), None, None, f"{name}: no {' or '.join(data_file_names(name))} ({how})", "info"))
            continue
        if name in splits and splits[name] is None:
            problems.extend(check_data_file(path))  # the splits are broken (reported above): check the lines only
            continue
        problems.extend(check_data_file(path, splits.get(name) or load_splits(name)))
    return problems


def _check_verbalizers(path: Path, splits: dict[str, ClassSplits | None]) -> list[Problem]:
    try:
        table = read_json_file(path, "label-word file")
    except DataError as err:
        return [_as_problem(err, path)]
    if not isinstance(table, dict):
        return [Problem(str(path), None, None, "expected an object of sections such as 'label_name'")]
    problems = []
    for section, entries in table.items():
        if section.startswith("_"):
            continue
        if not isinstance(entries, dict):
            problems.append(Problem(str(path), None, section, "expected an object keyed by data-set name"))
            continue
        for name in BUILTIN_DATASETS:
            if name not in entries:
                continue
            classes = (splits.get(name) or load_splits(name)).all_classes
            try:
                parse_label_words(entries[name], str(path), f"{section}.{name}", classes)
            except DataError as err:
                problems.append(_as_problem(err, path))
    return problems

