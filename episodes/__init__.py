"""Data → few-shot tasks. Knows nothing of models.

- :mod:`episodes.data`: load and check data sets (the four built-in benchmarks or your own).
- :mod:`episodes.sampler`: N-way K-shot Q-query episodes, reproducible from a seed.
- :mod:`episodes.store`: fixed episode files and their hash.
- :mod:`episodes.download`: fetch and convert Bao et al.'s public copies (needs internet).

>>> from episodes import load_dataset, EpisodeSampler             # doctest: +SKIP
>>> reuters = load_dataset("reuters")                              # doctest: +SKIP
>>> sampler = EpisodeSampler(reuters.labels, reuters.splits.classes("train"),
...                          n_way=5, k_shot=5, n_query=15, seed=0)  # doctest: +SKIP
>>> episode = sampler.episode(0)                                   # doctest: +SKIP
"""

from .data import (
    BUILTIN_DATASETS,
    ClassSplits,
    DataError,
    Problem,
    TextDataset,
    check_data_dir,
    check_data_file,
    default_cache_dir,
    load_custom_dataset,
    load_dataset,
    load_label_words,
    read_jsonl,
    resolve_data_dir,
)
from .download import BAO_DATA_URL, download_datasets
from .episode_data import EpisodeData, Examples, TextTask
from .sampler import Episode, EpisodeError, EpisodeSampler
from .store import (
    EpisodeFile,
    episodes_sha256,
    make_episode_file,
    read_episode_file,
    serialize_episodes,
    write_episode_file,
)

__all__ = [
    "BAO_DATA_URL",
    "BUILTIN_DATASETS",
    "ClassSplits",
    "DataError",
    "Episode",
    "EpisodeData",
    "EpisodeError",
    "EpisodeFile",
    "EpisodeSampler",
    "Examples",
    "Problem",
    "TextTask",
    "TextDataset",
    "check_data_dir",
    "check_data_file",
    "default_cache_dir",
    "download_datasets",
    "episodes_sha256",
    "load_custom_dataset",
    "load_dataset",
    "load_label_words",
    "make_episode_file",
    "read_episode_file",
    "read_jsonl",
    "resolve_data_dir",
    "serialize_episodes",
    "write_episode_file",
]
