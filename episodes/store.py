"""Fixed episode files: the exact test tasks a result was scored on, and their hash.

Format (JSON lines, UTF-8)::

    {"count":…,"data_sha256":"…","dataset":"reuters","format":"metaprompt.episodes/v1","k_shot":5,"n_query":15,"n_way":5,"seed":1234,"split":"test"}
    {"classes":[…],"query":[…],"support":[…]}
    …

Serialization is compact and deterministic (sorted keys, no spaces, ``\\n``
line ends), so the same episodes always give the same bytes and the same
sha256, whether hashed in memory (:func:`episodes_sha256`) or read from a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .data import TextDataset
from .errors import DataError, describe_value
from .sampler import Episode, EpisodeError, EpisodeSampler
from .splits import MAX_ID, SPLIT_NAMES, is_json_int

FORMAT = "metaprompt.episodes/v1"
HEADER_FIELDS = ("format", "dataset", "split", "n_way", "k_shot", "n_query", "seed", "count", "data_sha256")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_header(header: Any, where: str) -> None:
    """Raise an EpisodeError naming ``where`` (e.g. ``file:1``) if the header is not a v1 header."""
    if not isinstance(header, dict):
        raise EpisodeError(f"{where}: the first line must be the header object, got {describe_value(header)}.")
    if header.get("format") != FORMAT:
        raise EpisodeError(
            f"{where}: field 'format': expected {FORMAT!r}, got {describe_value(header.get('format'))}; "
            f"this is not a metaprompt episode file, or one of a newer format."
        )
    for name in HEADER_FIELDS:
        if name not in header:
            raise EpisodeError(f"{where}: field '{name}' is missing from the header.")
    for name in ("dataset", "split"):
        if not isinstance(header[name], str) or not header[name]:
            raise EpisodeError(f"{where}: field '{name}': expected a non-empty string, got {describe_value(header[name])}.")
    if header["split"] not in SPLIT_NAMES:
        raise EpisodeError(f"{where}: field 'split': expected 'train', 'val' or 'test', got {describe_value(header['split'])}.")
    for name, minimum in (("n_way", 2), ("k_shot", 1), ("n_query", 1), ("seed", 0), ("count", 0)):
        value = header[name]
        if not is_json_int(value) or not minimum <= value <= MAX_ID:
            raise EpisodeError(f"{where}: field '{name}': expected an integer from {minimum} to 2**63 - 1, "
                               f"got {describe_value(value)}.")
    if not isinstance(header["data_sha256"], str) or not _SHA_RE.match(header["data_sha256"]):
        raise EpisodeError(
            f"{where}: field 'data_sha256': expected 64 lower-case hex digits, got {describe_value(header['data_sha256'])}."
        )


def _check_shape(episode: Episode, header: dict[str, Any], where: str) -> None:
    for name in ("n_way", "k_shot", "n_query"):
        if getattr(episode, name) != header[name]:
            field = {"n_way": "classes", "k_shot": "support", "n_query": "query"}[name]
            raise EpisodeError(
                f"{where}: field '{field}': the episode has {name} = {getattr(episode, name)}, "
                f"but the header says {header[name]}."
            )


def serialize_episodes(header: dict[str, Any], episodes: Sequence[Episode]) -> bytes:
    """The bytes of an episode file: the header line, then one line per episode."""
    _check_header(header, "episode header")
    if header["count"] != len(episodes):
        raise EpisodeError(f"episode header: field 'count' is {header['count']}, but {len(episodes)} episodes were given.")
    lines = [_dumps(header)]
    for number, episode in enumerate(episodes, start=2):
        _check_shape(episode, header, f"episode {number - 1}")
        lines.append(_dumps(episode.to_json()))
    return ("\n".join(lines) + "\n").encode("utf-8")


def episodes_sha256(header: dict[str, Any], episodes: Sequence[Episode]) -> str:
    """sha256 of :func:`serialize_episodes`; equals the hash of the file :func:`write_episode_file` writes."""
    return hashlib.sha256(serialize_episodes(header, episodes)).hexdigest()


def write_episode_file(path: str | Path, header: dict[str, Any], episodes: Sequence[Episode]) -> str:
    """Write an episode file atomically (a temporary file in the same folder, fsync, rename); return its sha256."""
    path = Path(path)
    data = serialize_episodes(header, episodes)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


@dataclass
class EpisodeFile:
    """A read episode file. ``sha256`` is the hash of the file's bytes."""

    header: dict[str, Any]
    episodes: list[Episode]
    sha256: str
    path: Path | None = None

    def check_against(self, dataset: TextDataset) -> None:
        """Raise a DataError unless these episodes fit ``dataset``: same data file, ids in range, labels matching."""
        name = str(self.path) if self.path else "episode file"
        if self.header["data_sha256"] != dataset.sha256:
            raise DataError(
                f"{name} was made from different data: it records data sha256 {self.header['data_sha256'][:12]}… "
                f"(data set {self.header['dataset']!r}), but {dataset.path} has sha256 {dataset.sha256[:12]}…. "
                f"Its example ids would point at the wrong texts. Use the data file the episodes were made from, "
                f"or make a new episode file from this data."
            )
        split = self.header["split"]
        allowed = set(dataset.splits.classes(split))
        labels = dataset.labels
        size = len(labels)
        for number, episode in enumerate(self.episodes, start=2):
            where = f"{name}:{number}"
            for cid in episode.classes:
                if cid not in allowed:
                    raise DataError(
                        f"{where}: field 'classes': class {cid} is not a {split} class of {dataset.name}."
                    )
            for field, ids, per in (("support", episode.support, episode.k_shot), ("query", episode.query, episode.n_query)):
                for position, example in enumerate(ids):
                    if example >= size:
                        raise DataError(
                            f"{where}: field '{field}': example id {example} is out of range; "
                            f"{dataset.name} has {size} examples (ids 0 to {size - 1})."
                        )
                    expected = episode.classes[position // per]
                    if labels[example] != expected:
                        raise DataError(
                            f"{where}: field '{field}': example {example} has label {int(labels[example])}, "
                            f"but its place in the episode is for class {expected}."
                        )


def read_episode_file(path: str | Path) -> EpisodeFile:
    """Read and validate an episode file; errors name the file, line and field."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise EpisodeError(f"Cannot read the episode file {path}: {err.strerror or err}.") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise EpisodeError(f"{path}: the episode file is empty; it needs a header line.")
    parsed: list[Any] = []
    for number, raw in enumerate(lines, start=1):
        try:
            parsed.append(json.loads(raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise EpisodeError(f"{path}:{number}: invalid UTF-8 at byte {err.start + 1} of the line.") from None
        except json.JSONDecodeError as err:
            raise EpisodeError(f"{path}:{number}: malformed JSON: {err.msg} (column {err.colno}).") from None
    header = parsed[0]
    _check_header(header, f"{path}:1")
    episodes: list[Episode] = []
    for number, obj in enumerate(parsed[1:], start=2):
        try:
            episode = Episode.from_json(obj)
        except EpisodeError as err:
            raise EpisodeError(f"{path}:{number}: {err}") from None
        _check_shape(episode, header, f"{path}:{number}")
        episodes.append(episode)
    if len(episodes) != header["count"]:
        raise EpisodeError(
            f"{path}:1: field 'count': the header says {header['count']} episodes, but the file has {len(episodes)}; "
            f"it may be truncated."
        )
    return EpisodeFile(header=header, episodes=episodes, sha256=hashlib.sha256(data).hexdigest(), path=path)


def make_header(dataset: TextDataset, split: str, n_way: int, k_shot: int, n_query: int, count: int, seed: int) -> dict[str, Any]:
    return {
        "format": FORMAT, "dataset": dataset.name, "split": split, "n_way": n_way, "k_shot": k_shot,
        "n_query": n_query, "seed": seed, "count": count, "data_sha256": dataset.sha256,
    }


def make_episode_file(
    dataset: TextDataset, split: str, n_way: int, k_shot: int, n_query: int, count: int, seed: int
) -> tuple[dict[str, Any], list[Episode]]:
    """Sample ``count`` episodes of ``split`` and the header that describes them (write them with :func:`write_episode_file`)."""
    sampler = EpisodeSampler(
        dataset.labels, dataset.splits.classes(split), n_way, k_shot, n_query, seed,
        label_names=dataset.splits.label_names, source=f"{dataset.name} {split}",
    )
    episodes = sampler.episodes(count)
    return make_header(dataset, split, n_way, k_shot, n_query, count, seed), episodes
