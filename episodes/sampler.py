"""N-way K-shot Q-query episode sampling.

An episode draws ``n_way`` classes of a split, then ``k_shot`` support and
``n_query`` query examples of each, all without replacement. Episode ``i`` of a
sampler depends only on ``(seed, i)``, so training can resume at any episode
cursor and two runs with the same seed see the same tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import DataError, describe_value
from .splits import MAX_ID, is_json_int


class EpisodeError(DataError):
    """An episode cannot be sampled or is malformed (bad N/K/Q, too few examples, bad ids)."""


def _int_tuple(values: Any, what: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise EpisodeError(f"Episode field '{what}': expected a list of integer ids, got {values!r}.")
    out = []
    for value in values:
        if isinstance(value, np.integer):
            value = int(value)
        if not is_json_int(value) or not 0 <= value <= MAX_ID:
            raise EpisodeError(f"Episode field '{what}': ids must be non-negative integers below 2**63, "
                               f"got {describe_value(value)}.")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class Episode:
    """One few-shot task: its classes and the example ids of its support and query sets.

    Ids are in class-major order: the support holds the ``k_shot`` examples of
    ``classes[0]``, then those of ``classes[1]``, and so on; the query likewise.
    A class's *local* label is its position in ``classes``.
    """

    classes: tuple[int, ...]
    support: tuple[int, ...]
    query: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("classes", "support", "query"):
            object.__setattr__(self, name, _int_tuple(getattr(self, name), name))
        n = len(self.classes)
        if n < 2:
            raise EpisodeError(f"An episode needs at least 2 classes, got {n}.")
        if len(set(self.classes)) != n:
            raise EpisodeError(f"Episode field 'classes': a class is listed twice in {list(self.classes)}.")
        for name in ("support", "query"):
            ids = getattr(self, name)
            if not ids or len(ids) % n:
                raise EpisodeError(
                    f"Episode field '{name}': {len(ids)} ids cannot be split evenly over {n} classes "
                    f"(expected a positive multiple of {n})."
                )
        if len(set(self.support + self.query)) != len(self.support) + len(self.query):
            raise EpisodeError("An episode's support and query ids must all be different; an id appears twice.")

    @property
    def n_way(self) -> int:
        return len(self.classes)

    @property
    def k_shot(self) -> int:
        return len(self.support) // self.n_way

    @property
    def n_query(self) -> int:
        return len(self.query) // self.n_way

    def support_labels(self) -> np.ndarray:
        """Local labels (0 … n_way-1) of the support ids."""
        return np.repeat(np.arange(self.n_way, dtype=np.int64), self.k_shot)

    def query_labels(self) -> np.ndarray:
        """Local labels (0 … n_way-1) of the query ids."""
        return np.repeat(np.arange(self.n_way, dtype=np.int64), self.n_query)

    def to_json(self) -> dict[str, list[int]]:
        return {"classes": list(self.classes), "support": list(self.support), "query": list(self.query)}

    @classmethod
    def from_json(cls, obj: Any) -> "Episode":
        if not isinstance(obj, dict):
            raise EpisodeError(f"An episode must be an object with 'classes', 'support' and 'query', got {describe_value(obj)}.")
        missing = [k for k in ("classes", "support", "query") if k not in obj]
        if missing:
            raise EpisodeError(f"Episode field '{missing[0]}' is missing.")
        return cls(obj["classes"], obj["support"], obj["query"])


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if not is_json_int(value):
        raise EpisodeError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise EpisodeError(f"{name} must be ≥ {minimum}, got {value}.")
    if value > MAX_ID:
        raise EpisodeError(f"{name} must be at most 2**63 - 1, got {value}.")
    return value


class EpisodeSampler:
    """Samples ``n_way``-way ``k_shot``-shot episodes with ``n_query`` queries per class.

    ``labels`` holds the label of every example (example id = position);
    ``classes`` are the class ids of one split. Everything is checked here, so a
    sampler that was built can sample any episode. ``label_names`` and ``source``
    (e.g. ``"reuters train"``) only make messages clearer.

    >>> sampler = EpisodeSampler(np.repeat(np.arange(5), 4), [0, 1, 2, 3, 4], n_way=3, k_shot=1, n_query=2, seed=0)
    >>> episode = sampler.episode(7)
    >>> episode.n_way, len(episode.support), len(episode.query)
    (3, 3, 6)
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes: Sequence[int],
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int,
        label_names: dict[int, str] | None = None,
        source: str = "",
    ) -> None:
        self.n_way = _check_int(n_way, "n_way", 2)
        self.k_shot = _check_int(k_shot, "k_shot", 1)
        self.n_query = _check_int(n_query, "n_query", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.source = source
        self.label_names = dict(label_names or {})
        labels = np.asarray(labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise EpisodeError(f"labels must be a 1-D array of integer class ids, got shape {labels.shape} of {labels.dtype}.")
        self.classes = tuple(_check_int(c, "a class id", 0) for c in classes)
        if len(set(self.classes)) != len(self.classes):
            raise EpisodeError(f"{self._where()}the class list has duplicates: {list(self.classes)}.")
        if self.n_way > len(self.classes):
            raise EpisodeError(
                f"{self._where()}n_way = {self.n_way} is larger than the number of classes ({len(self.classes)}); "
                f"an episode draws {self.n_way} different classes. Use n_way ≤ {len(self.classes)}."
            )
        order = np.argsort(labels, kind="stable")
        values, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        groups = {int(v): order[s : s + c] for v, s, c in zip(values, starts, counts)}
        self._ids = [groups.get(c, np.zeros(0, dtype=np.int64)).astype(np.int64) for c in self.classes]
        self._check_sizes()

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def _name(self, class_id: int) -> str:
        return f"class {class_id}" + (f" ({self.label_names[class_id]})" if class_id in self.label_names else "")

    def _check_sizes(self) -> None:
        need = self.k_shot + self.n_query
        absent = [c for c, ids in zip(self.classes, self._ids) if len(ids) == 0]
        if absent:
            names = ", ".join(self._name(c) for c in absent[:10]) + (" …" if len(absent) > 10 else "")
            raise EpisodeError(
                f"{self._where()}{len(absent)} class{'es' if len(absent) > 1 else ''} of the split "
                f"{'have' if len(absent) > 1 else 'has'} no examples in the data: {names}. "
                f"Check that the class splits belong to this data file."
            )
        short = [(c, len(ids)) for c, ids in zip(self.classes, self._ids) if len(ids) < need]
        if short:
            listed = "; ".join(f"{self._name(c)} has {n}" for c, n in short[:10]) + (" …" if len(short) > 10 else "")
            raise EpisodeError(
                f"{self._where()}too few examples for {self.k_shot}-shot episodes with {self.n_query} queries per class: "
                f"every class needs k_shot + n_query = {need} examples, but {listed}. "
                f"Lower k_shot or n_query, or remove the class from the split."
            )

    def episode(self, index: int) -> Episode:
        """Episode number ``index``: a pure function of ``(seed, index)``."""
        index = _check_int(index, "episode index", 0)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        picked = rng.choice(len(self.classes), size=self.n_way, replace=False)
        support: list[int] = []
        query: list[int] = []
        for position in picked:
            ids = self._ids[position]
            chosen = ids[rng.choice(len(ids), size=self.k_shot + self.n_query, replace=False)]
            support.extend(chosen[: self.k_shot].tolist())
            query.extend(chosen[self.k_shot :].tolist())
        return Episode(tuple(self.classes[p] for p in picked), tuple(support), tuple(query))

    def episodes(self, count: int, start: int = 0) -> list[Episode]:
        """Episodes ``start`` … ``start + count - 1``."""
        count = _check_int(count, "count", 0)
        start = _check_int(start, "start", 0)
        return [self.episode(i) for i in range(start, start + count)]
