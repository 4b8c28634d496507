"""Episode sampling: properties over random N, K, Q and class sizes, and the error messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from episodes import Episode, EpisodeError, EpisodeSampler


@st.composite
def valid_setups(draw):
    """A label array plus sampler arguments that can always be satisfied."""
    n_classes = draw(st.integers(2, 8))
    n_way = draw(st.integers(2, n_classes))
    k_shot = draw(st.integers(1, 4))
    n_query = draw(st.integers(1, 4))
    need = k_shot + n_query
    sizes = draw(st.lists(st.integers(need, need + 6), min_size=n_classes, max_size=n_classes))
    # Class ids need not be 0..n-1, and other classes (other splits) may be in the data too.
    ids = draw(st.lists(st.integers(0, 50), min_size=n_classes + 2, max_size=n_classes + 2, unique=True))
    classes, others = ids[:n_classes], ids[n_classes:]
    labels = np.concatenate([np.full(n, c) for c, n in zip(classes, sizes)] + [np.full(3, o) for o in others])
    labels = labels[np.random.default_rng(draw(st.integers(0, 1000))).permutation(len(labels))]
    seed = draw(st.integers(0, 2**32 - 1))
    return labels, classes, n_way, k_shot, n_query, seed


@settings(max_examples=80, deadline=None)
@given(valid_setups(), st.integers(0, 10_000))
def test_episodes_are_valid(setup, index):
    labels, classes, n_way, k_shot, n_query, seed = setup
    sampler = EpisodeSampler(labels, classes, n_way, k_shot, n_query, seed)
    episode = sampler.episode(index)
    assert (episode.n_way, episode.k_shot, episode.n_query) == (n_way, k_shot, n_query)
    assert len(episode.support) == n_way * k_shot and len(episode.query) == n_way * n_query
    assert len(set(episode.classes)) == n_way and set(episode.classes) <= set(classes)
    assert not set(episode.support) & set(episode.query)
    assert len(set(episode.support)) == len(episode.support) and len(set(episode.query)) == len(episode.query)
    # Class-major order: the local label of each id is the position of its class.
    np.testing.assert_array_equal(labels[list(episode.support)], np.asarray(episode.classes)[episode.support_labels()])
    np.testing.assert_array_equal(labels[list(episode.query)], np.asarray(episode.classes)[episode.query_labels()])
    # A pure function of (seed, index): a fresh sampler gives the same episode.
    assert EpisodeSampler(labels, classes, n_way, k_shot, n_query, seed).episode(index) == episode
    assert Episode.from_json(episode.to_json()) == episode


@settings(max_examples=30, deadline=None)
@given(valid_setups())
def test_seeds_and_indices_differ(setup):
    labels, classes, n_way, k_shot, n_query, seed = setup
    a = EpisodeSampler(labels, classes, n_way, k_shot, n_query, seed).episodes(20)
    b = EpisodeSampler(labels, classes, n_way, k_shot, n_query, seed + 1).episodes(20)
    assert a != b
    assert len(set(a)) > 1


def test_resume_at_cursor():
    labels = np.repeat(np.arange(10), 12)
    sampler = EpisodeSampler(labels, range(10), 5, 2, 3, seed=7)
    assert sampler.episodes(10)[4:] == sampler.episodes(6, start=4)


def test_exactly_enough_examples():
    # Like Reuters: 20 examples per class, 5-shot with 15 queries uses every example of a class.
    labels = np.repeat(np.arange(6), 20)
    episode = EpisodeSampler(labels, range(6), 5, 5, 15, seed=0).episode(3)
    for position, cid in enumerate(episode.classes):
        ids = episode.support[5 * position : 5 * position + 5] + episode.query[15 * position : 15 * position + 15]
        assert sorted(ids) == list(np.flatnonzero(labels == cid))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_way=1), "n_way must be ≥ 2, got 1"),
        (dict(k_shot=0), "k_shot must be ≥ 1, got 0"),
        (dict(n_query=0), "n_query must be ≥ 1, got 0"),
        (dict(n_way=2.5), "n_way must be an integer"),
        (dict(k_shot=True), "k_shot must be an integer"),
        (dict(seed=-1), "seed must be ≥ 0"),
        (dict(n_way=5), "n_way = 5 is larger than the number of classes (4)"),
        (dict(classes=[0, 1, 1, 2]), "duplicates"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = dict(labels=np.repeat(np.arange(4), 10), classes=[0, 1, 2, 3], n_way=2, k_shot=1, n_query=1, seed=0)
    args.update(kwargs)
    with pytest.raises(EpisodeError) as err:
        EpisodeSampler(**args, source="toy train")
    assert message in str(err.value)


def test_too_few_examples_names_class_count_and_need():
    labels = np.concatenate([np.repeat([0, 1, 2], 20), np.full(7, 3)])
    with pytest.raises(EpisodeError) as err:
        EpisodeSampler(labels, [0, 1, 2, 3], 3, 5, 5, 0, label_names={3: "cocoa"}, source="reuters train")
    text = str(err.value)
    assert text.startswith("reuters train:")
    assert "class 3 (cocoa) has 7" in text and "k_shot + n_query = 10" in text


def test_class_missing_from_data():
    with pytest.raises(EpisodeError, match=r"class 9 \(ghost\)"):
        EpisodeSampler(np.repeat(np.arange(3), 5), [0, 1, 9], 2, 1, 1, 0, label_names={9: "ghost"})


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"classes": [1], "support": [0], "query": [1]}, "at least 2 classes"),
        ({"classes": [1, 2], "support": [0, 1, 2], "query": [3, 4]}, "cannot be split evenly"),
        ({"classes": [1, 2], "support": [0, 1], "query": [1, 4]}, "appears twice"),
        ({"classes": [1, 1], "support": [0, 1], "query": [2, 3]}, "listed twice"),
        ({"classes": [1, 2], "support": [0, -1], "query": [2, 3]}, "non-negative integers"),
        ({"classes": [1, 2], "support": [0, 1]}, "'query' is missing"),
    ],
)
def test_malformed_episodes(obj, message):
    with pytest.raises(EpisodeError, match=message):
        Episode.from_json(obj)


def test_local_labels():
    episode = Episode((7, 3, 5), (10, 11, 20, 21, 30, 31), (12, 22, 32))
    assert episode.support_labels().tolist() == [0, 0, 1, 1, 2, 2]
    assert episode.query_labels().tolist() == [0, 1, 2]
    assert (episode.n_way, episode.k_shot, episode.n_query) == (3, 2, 1)


@settings(max_examples=40, deadline=None)
@given(valid_setups(), st.data())
def test_a_short_class_is_always_reported(setup, data):
    labels, classes, n_way, k_shot, n_query, seed = setup
    victim = data.draw(st.sampled_from(classes))
    keep = data.draw(st.integers(1, k_shot + n_query - 1))
    ids = np.flatnonzero(labels == victim)
    labels = np.delete(labels, ids[keep:])
    with pytest.raises(EpisodeError) as err:
        EpisodeSampler(labels, classes, n_way, k_shot, n_query, seed)
    assert f"class {victim} has {keep}" in str(err.value)
    assert f"k_shot + n_query = {k_shot + n_query}" in str(err.value)


@settings(max_examples=20, deadline=None)
@given(valid_setups())
def test_n_way_above_class_count_is_reported(setup):
    labels, classes, _, k_shot, n_query, seed = setup
    with pytest.raises(EpisodeError, match=f"larger than the number of classes \\({len(classes)}\\)"):
        EpisodeSampler(labels, classes, len(classes) + 1, k_shot, n_query, seed)
