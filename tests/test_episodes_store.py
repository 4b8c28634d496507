"""Fixed episode files: round trip, byte-identical output, hashes, malformed files, checks against data."""

from __future__ import annotations

import json

import pytest

from episodes import (
    DataError,
    EpisodeError,
    episodes_sha256,
    load_custom_dataset,
    make_episode_file,
    read_episode_file,
    serialize_episodes,
    write_episode_file,
)

try:
    from episodes_fixtures import balanced_rows, split_obj, write_json, write_jsonl
except ImportError:  # tests/ imported as a package
    from tests.episodes_fixtures import balanced_rows, split_obj, write_json, write_jsonl


@pytest.fixture
def dataset(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", balanced_rows(10, 8))
    splits = write_json(tmp_path / "s.json", split_obj([0, 1, 2, 3], [4, 5], [6, 7, 8, 9]))
    return load_custom_dataset(data, splits, name="toy")


def test_round_trip_and_hash(tmp_path, dataset):
    header, episodes = make_episode_file(dataset, "test", 3, 2, 3, count=12, seed=5)
    assert header["format"] == "metaprompt.episodes/v1" and header["data_sha256"] == dataset.sha256
    path = tmp_path / "out" / "test.episodes.jsonl"
    written = write_episode_file(path, header, episodes)
    loaded = read_episode_file(path)
    assert loaded.header == header and loaded.episodes == episodes
    assert loaded.sha256 == written == episodes_sha256(header, episodes)
    loaded.check_against(dataset)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    lines = path.read_text().splitlines()
    assert lines[0].startswith('{"count":12,"data_sha256":') and " " not in lines[1]


def test_same_seed_same_bytes(tmp_path, dataset):
    a = serialize_episodes(*make_episode_file(dataset, "test", 3, 2, 3, count=5, seed=9))
    b = serialize_episodes(*make_episode_file(dataset, "test", 3, 2, 3, count=5, seed=9))
    c = serialize_episodes(*make_episode_file(dataset, "test", 3, 2, 3, count=5, seed=10))
    assert a == b != c
    write_episode_file(tmp_path / "e.jsonl", *make_episode_file(dataset, "test", 3, 2, 3, count=5, seed=9))
    assert (tmp_path / "e.jsonl").read_bytes() == a


def _rewrite(path, line_number, change):
    lines = path.read_text().splitlines()
    obj = json.loads(lines[line_number - 1])
    change(obj)
    lines[line_number - 1] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line, change, message",
    [
        (1, lambda h: h.update(format="other/v9"), ":1: field 'format'"),
        (1, lambda h: h.pop("seed"), ":1: field 'seed' is missing"),
        (1, lambda h: h.update(count=5), ":1: field 'count': the header says 5 episodes, but the file has 4"),
        (1, lambda h: h.update(data_sha256="abc"), ":1: field 'data_sha256'"),
        (3, lambda e: e.pop("support"), ":3: Episode field 'support' is missing"),
        (3, lambda e: e.update(query=e["query"][:-1]), ":3: Episode field 'query'"),
        (4, lambda e: e.update(support=e["support"][:3]), ":4: field 'support': the episode has k_shot = 1"),
        (5, lambda e: e.update(query=[e["support"][0]] + e["query"][1:]), ":5: An episode's support and query ids"),
    ],
)
def test_malformed_file_names_the_line(tmp_path, dataset, line, change, message):
    path = tmp_path / "e.jsonl"
    write_episode_file(path, *make_episode_file(dataset, "test", 3, 2, 3, count=4, seed=1))
    _rewrite(path, line, change)
    with pytest.raises(EpisodeError) as err:
        read_episode_file(path)
    assert f"{path}{message}" in str(err.value), str(err.value)


def test_bad_json_line(tmp_path, dataset):
    path = tmp_path / "e.jsonl"
    write_episode_file(path, *make_episode_file(dataset, "val", 2, 1, 1, count=3, seed=1))
    path.write_text(path.read_text().replace("]}", "]", 1))
    with pytest.raises(EpisodeError, match=r"e\.jsonl:2: malformed JSON"):
        read_episode_file(path)


def test_check_against_other_data(tmp_path, dataset):
    path = tmp_path / "e.jsonl"
    write_episode_file(path, *make_episode_file(dataset, "test", 3, 2, 3, count=4, seed=1))
    other = load_custom_dataset(
        write_jsonl(tmp_path / "o.jsonl", balanced_rows(10, 9)), tmp_path / "s.json", name="toy"
    )
    with pytest.raises(DataError, match="was made from different data"):
        read_episode_file(path).check_against(other)
    # Same hash but ids that do not fit (e.g. a hand-edited file).
    _rewrite(path, 2, lambda e: e.update(support=[e["support"][1], e["support"][0]] + e["support"][2:]))
    read_episode_file(path).check_against(dataset)  # order within a class is free
    # Swap the first ids of the first two classes.
    _rewrite(path, 2, lambda e: e.update(support=[e["support"][2], e["support"][1], e["support"][0]] + e["support"][3:]))
    with pytest.raises(DataError, match=r"e\.jsonl:2: field 'support': example \d+ has label \d+"):
        read_episode_file(path).check_against(dataset)
    _rewrite(path, 2, lambda e: e.update(support=[999] + e["support"][1:]))
    with pytest.raises(DataError, match="example id 999 is out of range"):
        read_episode_file(path).check_against(dataset)


def test_serialize_checks_header(dataset):
    header, episodes = make_episode_file(dataset, "test", 3, 2, 3, count=2, seed=1)
    with pytest.raises(EpisodeError, match="'count' is 2, but 1 episodes"):
        serialize_episodes(header, episodes[:1])
    with pytest.raises(EpisodeError, match="k_shot = 2, but the header says 3"):
        serialize_episodes({**header, "k_shot": 3}, episodes)
