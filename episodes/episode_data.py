"""Few-shot tasks of texts from a labelled corpus, for Python users: :class:`EpisodeData`.

``EpisodeData`` holds texts, integer class ids, the class splits and a name and label words
per class; :meth:`EpisodeData.episodes` yields :class:`TextTask` s (support and query texts
with local labels). Labels may be strings or integers; class names double as label words
when none are given. Episodes come from :class:`~episodes.sampler.EpisodeSampler`, so episode
``i`` depends only on ``(seed, i)``.

>>> data = EpisodeData.from_texts(["a goal", "a song", "the match", "the album"] * 3,
...                               ["sports", "music", "sports", "music"] * 3,
...                               splits={"train": ["sports", "music"], "val": [], "test": []})
>>> task = next(data.episodes("train", n_way=2, k_shot=1, n_query=1, seed=0, count=1))
>>> len(task.support.texts), task.class_names in (("sports", "music"), ("music", "sports"))
(2, True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import DataError
from .sampler import Episode, EpisodeSampler

if TYPE_CHECKING:
    import datasets

SPLITS = ("train", "val", "test")


@dataclass(eq=False)
class Examples:
    """One side of a task (support or query): texts and their local labels (0 … n_way-1).
    ``task`` is the task they belong to (a prototype verbalizer scores a query from its support)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    task: "TextTask" = field(repr=False)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(eq=False)
class TextTask:
    """One episode as texts. A class's local label is its position in ``classes`` (global ids)."""

    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    label_words: dict[int, list[str]]  # of the task's classes
    episode: Episode
    index: int
    support: Examples = field(init=False, repr=False)
    query: Examples = field(init=False, repr=False)


class EpisodeData:
    """Texts with class ids, split into meta-train / meta-val / meta-test classes.

    ``label_names``: a name per class id; ``label_words``: words per class id (default: the
    class name). Build one with :meth:`from_texts`, :meth:`from_dataset` or :meth:`load`."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], splits: Mapping[str, Sequence[int]],
                 label_names: Mapping[int, str], label_words: Mapping[int, Sequence[str]] | None = None,
                 name: str = "data"):
        self.texts = list(texts)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.texts) != len(self.labels):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        unknown = [k for k in splits if k not in SPLITS]
        if unknown:
            raise DataError(f"unknown split(s) {unknown}: the splits are {', '.join(SPLITS)}")
        self.splits = {s: tuple(int(c) for c in splits.get(s, ())) for s in SPLITS}
        self.label_names = {int(k): str(v) for k, v in label_names.items()}
        words = {int(k): [str(w) for w in v] for k, v in (label_words or {}).items()}
        self.label_words = {c: words.get(c) or [name_] for c, name_ in self.label_names.items()}
        self.name = name
        listed = [c for s in SPLITS for c in self.splits[s]]
        if len(set(listed)) != len(listed):
            raise DataError(f"a class is in more than one split: {self.splits}")
        nameless = [c for c in listed if c not in self.label_names]
        if nameless:
            raise DataError(f"classes {nameless[:5]} of the splits have no name (label_names)")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s} {len(self.splits[s])}" for s in SPLITS)
        return f"EpisodeData({self.name!r}, {len(self.texts)} texts, classes: {sizes})"

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def from_texts(cls, texts: Sequence[str], labels: Sequence[Any], splits: Mapping[str, Sequence[Any]],
                   label_names: Mapping[Any, str] | Sequence[str] | None = None,
                   label_words: Mapping[Any, Sequence[str]] | None = None, name: str = "data") -> "EpisodeData":
        """``labels`` and the classes in ``splits``: strings (class names) or integer ids.

        String labels get ids in order of first appearance and are their own names; integer
        labels take their names from ``label_names`` (a mapping, or a list indexed by id)."""
        labels = list(labels)
        if labels and all(isinstance(v, str) for v in labels):
            order = list(dict.fromkeys(labels))
            ids = {v: i for i, v in enumerate(order)}
            names = {i: v for v, i in ids.items()}
            if label_names is not None:
                raise DataError("string labels are their own class names: give label_names only with integer labels")
            to_id = ids.__getitem__
        else:
            bad = [v for v in labels if isinstance(v, (bool, str)) or not float(v).is_integer()]
            if bad:
                raise DataError(f"labels must all be strings or all integers, got {bad[0]!r}")
            if label_names is None:
                names = {int(v): str(v) for v in set(labels)}
            elif isinstance(label_names, Mapping):
                names = {int(k): str(v) for k, v in label_names.items()}
            else:
                names = dict(enumerate(map(str, label_names)))
            to_id = int
        try:
            split_ids = {s: [to_id(c) for c in splits.get(s, ())] for s in splits}
            words = {to_id(k): v for k, v in (label_words or {}).items()}
        except KeyError as err:
            raise DataError(f"class {err.args[0]!r} of the splits or label words is not a label of the data") from None
        return cls(texts, [to_id(v) for v in labels], split_ids, names, words, name)

    @classmethod
    def from_dataset(cls, dataset: "datasets.Dataset", splits: Mapping[str, Sequence[Any]], text: str = "text",
                     label: str = "label", label_names: Mapping[Any, str] | Sequence[str] | None = None,
                     label_words: Mapping[Any, Sequence[str]] | None = None, name: str | None = None) -> "EpisodeData":
        """From a ``datasets.Dataset`` with a text and a label column (a ``ClassLabel`` column
        gives the class names)."""
        feature = dataset.features.get(label)
        if label_names is None and hasattr(feature, "names"):
            label_names = list(feature.names)
        return cls.from_texts(dataset[text], dataset[label], splits, label_names, label_words,
                              name or getattr(dataset.info, "dataset_name", None) or "dataset")

    @classmethod
    def load(cls, name: str, data_dir: str | None = None, label_words: str = "label_name") -> "EpisodeData":
        """A built-in data set (``huffpost``, ``amazon``, ``reuters``, ``20news``) from the data folder
        (``METAPROMPT_DATA``), with its class splits and label words."""
        from .data import load_dataset

        dataset = load_dataset(name, data_dir, label_words)
        s = dataset.splits
        return cls(dataset.texts, dataset.labels, {"train": s.train, "val": s.val, "test": s.test},
                   s.label_names, dataset.label_words, name)

    # -- tasks ------------------------------------------------------------------------------------
    def classes(self, split: str) -> tuple[int, ...]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: the splits are {', '.join(SPLITS)}")
        return self.splits[split]

    def subset(self, per_class: int, seed: int = 0) -> "EpisodeData":
        """At most ``per_class`` texts of each class (drawn with ``seed``): a small copy for quick tries."""
        rng = np.random.default_rng(seed)
        keep = []
        for c in np.unique(self.labels):
            ids = np.flatnonzero(self.labels == c)
            keep.extend(sorted(rng.choice(ids, size=min(per_class, len(ids)), replace=False).tolist()))
        keep.sort()
        return EpisodeData([self.texts[i] for i in keep], self.labels[keep], self.splits, self.label_names,
                           self.label_words, self.name)

    def sampler(self, split: str, n_way: int, k_shot: int, n_query: int, seed: int = 0) -> EpisodeSampler:
        return EpisodeSampler(self.labels, self.classes(split), n_way, k_shot, n_query, seed,
                              label_names=self.label_names, source=f"{self.name} ({split} classes)")

    def task(self, episode: Episode, index: int = 0) -> TextTask:
        """The texts of ``episode`` (example ids index :attr:`texts`)."""
        task = TextTask(tuple(episode.classes), tuple(self.label_names[c] for c in episode.classes),
                        {c: list(self.label_words[c]) for c in episode.classes}, episode, index)
        task.support = Examples(tuple(self.texts[i] for i in episode.support),
                                tuple(int(v) for v in episode.support_labels()), task)
        task.query = Examples(tuple(self.texts[i] for i in episode.query),
                              tuple(int(v) for v in episode.query_labels()), task)
        return task

    def episodes(self, split: str, n_way: int, k_shot: int, n_query: int, seed: int = 0,
                 count: int | None = None, start: int = 0) -> Iterator[TextTask]:
        """Tasks ``start``, ``start + 1``, … of ``split`` (``count`` of them; None: without end)."""
        sampler = self.sampler(split, n_way, k_shot, n_query, seed)  # checked now, not at the first task
        return self._tasks(sampler, start, count)

    def _tasks(self, sampler: EpisodeSampler, start: int, count: int | None) -> Iterator[TextTask]:
        index = start
        while count is None or index < start + count:
            yield self.task(sampler.episode(index), index)
            index += 1
