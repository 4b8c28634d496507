"""The real benchmark files in ../shared/data (skipped where absent)."""

from __future__ import annotations

import pytest

from episodes import DataError, EpisodeSampler, load_dataset, make_episode_file

try:
    from episodes_fixtures import shared_data_or_skip
except ImportError:  # tests/ imported as a package
    from tests.episodes_fixtures import shared_data_or_skip


@pytest.fixture(scope="module")
def reuters():
    return load_dataset("reuters", shared_data_or_skip("reuters.jsonl.gz"))


def test_reuters_5way_5shot_15query(reuters):
    assert len(reuters) == 620
    for split in ("train", "val", "test"):
        classes = reuters.splits.classes(split)
        sampler = EpisodeSampler(reuters.labels, classes, 5, 5, 15, seed=0, label_names=reuters.splits.label_names)
        for episode in sampler.episodes(5):
            assert set(episode.classes) <= set(classes)
            assert not set(episode.support) & set(episode.query)
    header, episodes = make_episode_file(reuters, "test", 5, 5, 15, count=3, seed=1234)
    assert header["data_sha256"] == "45cc53d53e13f6b059f029e324a0c626ae3d1943b1b5447d51eb73e1d3d0258f"


def test_reuters_splits_are_disjoint(reuters):
    train, val, test = (set(reuters.splits.classes(s)) for s in ("train", "val", "test"))
    assert not (train & test or train & val or val & test)
    assert train | val | test == set(range(31))
    assert reuters.label_words[7] == ["consumer", "price", "index"]


def test_huffpost():
    dataset = load_dataset("huffpost", shared_data_or_skip("huffpost.jsonl.gz"))
    assert len(dataset) == 36900 and len(dataset.splits.test) == 16
    counts = {c: len(ids) for c, ids in dataset.indices_by_class(dataset.splits.classes("test")).items()}
    assert set(counts.values()) == {900}
    assert not set(dataset.splits.train) & set(dataset.splits.test)


def test_20news():
    dataset = load_dataset("20news", shared_data_or_skip("20news.jsonl.gz"))
    assert len(dataset) == 18846
    assert dataset.texts[0].startswith("From: ")
    episode = EpisodeSampler(dataset.labels, dataset.splits.classes("test"), 5, 5, 5, seed=3).episode(0)
    assert set(dataset.labels[list(episode.query)]) == set(episode.classes)


def test_amazon_is_not_available():
    folder = shared_data_or_skip("splits.json")
    with pytest.raises(DataError) as err:
        load_dataset("amazon", folder)
    text = str(err.value)
    assert "not available on this machine" in text and "data.zip" in text
    assert "metaprompt data download" in text and str(folder) in text
