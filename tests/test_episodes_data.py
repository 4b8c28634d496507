"""Reading, checking and loading data files: good input, bad input, and where data is looked for."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from episodes import (
    ClassSplits,
    DataError,
    EpisodeSampler,
    check_data_dir,
    check_data_file,
    default_cache_dir,
    load_custom_dataset,
    load_dataset,
    read_jsonl,
    resolve_data_dir,
)
from episodes.splits import derive_label_words

try:
    from episodes_fixtures import balanced_rows, split_obj, write_json, write_jsonl
except ImportError:  # tests/ imported as a package
    from tests.episodes_fixtures import balanced_rows, split_obj, write_json, write_jsonl


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    """Keep the user's data folders and cache out of these tests."""
    monkeypatch.delenv("METAPROMPT_DATA", raising=False)
    monkeypatch.setenv("METAPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _splits(n_classes=6) -> ClassSplits:
    ids = list(range(n_classes))
    return ClassSplits.from_json(split_obj(ids[:2], ids[2:4], ids[4:]), "splits.json")


# ---------------------------------------------------------------- reading good files


@pytest.mark.parametrize("gz", [False, True])
def test_read_jsonl_plain_and_gzip(tmp_path, gz):
    rows = balanced_rows(3, 2) + ["", "   "]  # blank lines are skipped
    rows[0] = {**rows[0], "extra": [1, 2]}  # extra fields are ignored
    table = read_jsonl(write_jsonl(tmp_path / ("d.jsonl.gz" if gz else "d.jsonl"), rows, gz=gz))
    assert table.column_names == ["text", "label"]
    assert len(table) == 6 and table[0] == {"text": "text 0 of class 0", "label": 0}


def test_custom_dataset(tmp_path):
    data = write_jsonl(tmp_path / "mine.jsonl", balanced_rows(6, 5))
    obj = split_obj([0, 1], [2, 3], [4, 5])
    obj["label_names"]["4"] = "Style & the Beauty"
    obj["label_words"] = {str(i): [f"word{i}"] for i in range(6)}
    dataset = load_custom_dataset(data, write_json(tmp_path / "splits.json", obj), name="mine")
    assert len(dataset) == 30 and dataset.name == "mine"
    assert dataset.labels.dtype == np.int64 and dataset.labels[:7].tolist() == [0, 1, 2, 3, 4, 5, 0]
    assert dataset.texts[1] == "text 1 of class 1"
    assert dataset.indices_by_class([1, 9]) == {1: pytest.approx([1, 7, 13, 19, 25]), 9: pytest.approx([])}
    assert dataset.label_words[4] == ["word4"]
    del obj["label_words"]
    dataset = load_custom_dataset(data, write_json(tmp_path / "splits.json", obj))
    assert dataset.label_words[4] == ["style", "beauty"] and dataset.label_words[0] == ["class", "0"]
    episode = EpisodeSampler(dataset.labels, dataset.splits.classes("test"), 2, 2, 3, seed=1).episode(0)
    assert set(episode.classes) == {4, 5}


def test_derived_label_words():
    assert derive_label_words("STYLE & BEAUTY") == ["style", "beauty"]
    assert derive_label_words("Home_and_Kitchen") == ["home", "kitchen"]
    assert derive_label_words("comp.sys.mac.hardware") == ["comp", "sys", "mac", "hardware"]
    assert derive_label_words("The Café") == ["café"]


# ---------------------------------------------------------------- bad lines


BAD_LINES = [
    ('{"text": "a", "label": 1', None, "malformed JSON"),
    ('["a", 1]', None, "expected a JSON object"),
    ('{"label": 1}', "text", "missing"),
    ('{"text": "a"}', "label", "missing"),
    ('{"text": "a", "label": "abc"}', "label", 'expected an integer, got "abc"'),
    ('{"text": "a", "label": true}', "label", "expected an integer, got true"),
    ('{"text": "a", "label": 1.5}', "label", "expected an integer, got 1.5"),
    ('{"text": "a", "label": -2}', "label", "non-negative"),
    ('{"text": 17, "label": 1}', "text", "expected a string, got 17"),
    ('{"text": ["tok", "ens"], "label": 1}', "text", "token list"),
    ('{"text": "", "label": 1}', "text", "empty or whitespace-only"),
    ('{"text": " \\t\\n ", "label": 1}', "text", "empty or whitespace-only"),
]


@pytest.mark.parametrize("line, field, message", BAD_LINES)
def test_bad_line_names_file_line_and_field(tmp_path, line, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "label": 0}, line, {"text": "ok", "label": 1}])
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    text = str(err.value)
    expected = f"{path}:2: " + (f"field '{field}': " if field else "")
    assert expected + message in text or (expected in text and message in text), text
    assert "metaprompt data check" in text


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok", "label": 0}\n{"text": "caf\xe9", "label": 1}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: invalid UTF-8"):
        read_jsonl(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(r) for r in balanced_rows(3, 200))).encode())[:-40])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_jsonl(path)


def test_all_problems_at_once(tmp_path):
    lines = ['{"text": "x", "label": "a"}'] * 25 + ['{"text": "", "label": 0}', "nope", '{"text": "ok", "label": 99}']
    path = write_jsonl(tmp_path / "many.jsonl", lines)
    problems = check_data_file(path, splits=_splits())
    assert len(problems) == 28 + 6  # every line, plus "no examples" warnings for the six split classes
    assert [p.line for p in problems if p.severity == "error"] == list(range(1, 29))
    assert str(problems[0]) == f"{path}:1: field 'label': expected an integer, got \"a\""
    assert "class 99 is not in any split" in str(problems[27])
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    text = str(err.value)
    assert "27 problems found" in text and "and 17 more problems" in text  # read_jsonl has no splits: 27


def test_check_counts_per_class(tmp_path):
    rows = balanced_rows(6, 4) + [{"text": "extra", "label": 0}]
    problems = check_data_file(write_jsonl(tmp_path / "d.jsonl", rows), splits=_splits(), min_per_class=5)
    messages = [p.message for p in problems]
    assert len(problems) == 5 and all("has 4 examples; at least 5 are needed" in m for m in messages)
    assert "class 1 (Class 1, train split)" in messages[0]
    assert check_data_file(tmp_path / "d.jsonl", splits=_splits(), min_per_class=4) == []


def test_missing_file_is_a_problem(tmp_path):
    [problem] = check_data_file(tmp_path / "nothing.jsonl")
    assert "does not exist" in str(problem)


# ---------------------------------------------------------------- split files


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o: o.update(test=[4, 5, 1]), "class 1 is listed in both 'train' and 'test'"),
        (lambda o: o.update(val=[]), "field 'val': the val split has no classes"),
        (lambda o: o["label_names"].pop("3"), "field 'label_names': no name for class 3"),
        (lambda o: o.update(train=[0, "1"]), "field 'train': class ids must be integers, got \"1\""),
        (lambda o: o.update(train=[0, True]), "class ids must be integers, got true"),
        (lambda o: o.update(train=[0, 1.0]), "class ids must be integers, got 1.0"),
        (lambda o: o.pop("test"), "field 'test' is missing"),
        (lambda o: o["label_names"].update(x="y"), "keys must be class ids"),
        (lambda o: o.update(n_classes=5), "class 5 is out of range"),
        (lambda o: o.update(label_words={"0": ["a"]}), "no label words for classes 1, 2, 3, 4, 5"),
    ],
)
def test_bad_split_file(tmp_path, change, message):
    obj = split_obj([0, 1], [2, 3], [4, 5])
    change(obj)
    data = write_jsonl(tmp_path / "d.jsonl", balanced_rows(6, 3))
    splits_path = write_json(tmp_path / "my_splits.json", obj)
    with pytest.raises(DataError) as err:
        load_custom_dataset(data, splits_path)
    assert str(err.value).startswith(f"{splits_path}: ") and message in str(err.value), str(err.value)


def test_split_file_syntax_error_names_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{\n"train": [0, 1],\n"val": [2,,]\n}')
    with pytest.raises(DataError, match=r"s\.json:3: the split file is not valid JSON"):
        load_custom_dataset(write_jsonl(tmp_path / "d.jsonl", balanced_rows(2, 2)), path)


def test_unknown_label_names_first_line(tmp_path):
    rows = balanced_rows(6, 3)
    rows[7] = {"text": "stray", "label": 6}
    rows[11] = {"text": "stray again", "label": 6}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_custom_dataset(path, write_json(tmp_path / "s.json", split_obj([0, 1], [2, 3], [4, 5])))
    assert f"{path}:8: field 'label': class 6 is not in any split" in str(err.value)
    assert "1 later line has it too" in str(err.value)


def test_class_splits_direct():
    splits = _splits()
    assert splits.classes("val") == (2, 3) and splits.split_of(5) == "test"
    with pytest.raises(DataError, match="Unknown split 'dev'"):
        splits.classes("dev")
    with pytest.raises(DataError, match="listed in both"):
        ClassSplits((0, 1), (1,), (2,), {0: "a", 1: "b", 2: "c"})


# ---------------------------------------------------------------- built-in data sets and folders


def test_unknown_dataset_suggests_nearest():
    with pytest.raises(DataError) as err:
        load_dataset("reuter")
    assert "Did you mean 'reuters'?" in str(err.value) and "huffpost, amazon, reuters, 20news" in str(err.value)


def test_missing_data_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("METAPROMPT_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        load_dataset("reuters")
    text = str(err.value)
    for place in (tmp_path / "env", tmp_path / "data", tmp_path / "cache" / "data"):
        assert str(place) in text
    assert "metaprompt data download" in text and "data.dir" in text and "$METAPROMPT_DATA" in text
    with pytest.raises(DataError) as err:
        load_dataset("reuters", data_dir=tmp_path / "given")
    assert str(tmp_path / "given") in str(err.value) and str(tmp_path / "env") not in str(err.value)


def test_search_order(tmp_path, monkeypatch):
    assert resolve_data_dir(None) == [tmp_path / "data", tmp_path / "cache" / "data"]
    monkeypatch.setenv("METAPROMPT_DATA", "/somewhere")
    assert resolve_data_dir(None)[0] == Path("/somewhere") and len(resolve_data_dir(None)) == 3
    assert resolve_data_dir(tmp_path / "x") == [tmp_path / "x"]
    monkeypatch.delenv("METAPROMPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "metaprompt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "metaprompt"


def _fake_reuters(folder: Path, per_class: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_jsonl(folder / "reuters.jsonl.gz", balanced_rows(31, per_class), gz=True)


def test_builtin_from_search_path(tmp_path, monkeypatch):
    _fake_reuters(tmp_path / "data")  # ./data
    dataset = load_dataset("reuters")
    assert len(dataset) == 620 and dataset.splits.classes("val") == (15, 16, 17, 18, 19)
    assert dataset.label_words[2] == ["balance", "of", "payment"]
    assert len(dataset.sha256) == 64
    # $METAPROMPT_DATA comes before ./data.
    _fake_reuters(tmp_path / "env", per_class=21)
    monkeypatch.setenv("METAPROMPT_DATA", str(tmp_path / "env"))
    assert len(load_dataset("reuters")) == 651


def test_splits_beside_data_win(tmp_path):
    _fake_reuters(tmp_path / "d")
    table = {"reuters": split_obj(list(range(20)), list(range(20, 25)), list(range(25, 31)))}
    write_json(tmp_path / "d" / "splits.json", table)
    dataset = load_dataset("reuters", tmp_path / "d")
    assert len(dataset.splits.train) == 20 and dataset.splits.name(3) == "Class 3"
    table["reuters"]["test"] = list(range(25, 30))
    write_json(tmp_path / "d" / "splits.json", table)
    with pytest.raises(DataError, match="class 30 is not in any split"):
        load_dataset("reuters", tmp_path / "d")


def test_check_data_dir(tmp_path):
    folder = tmp_path / "d"
    _fake_reuters(folder)
    write_jsonl(folder / "huffpost.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 41}])
    problems = check_data_dir(folder)
    infos = [str(p) for p in problems if p.severity == "info"]
    errors = [str(p) for p in problems if p.severity == "error"]
    assert any("amazon: no amazon.jsonl.gz" in s for s in infos) and any("20news" in s for s in infos)
    assert any("splits.json: note: not present" in s for s in infos)
    assert errors == [f"{folder / 'huffpost.jsonl'}:2: field 'label': class 41 is not in any split (train/val/test) "
                      f"of episodes/resources/splits.json"]
    write_json(folder / "splits.json", {"reuters": {"train": [0], "val": [0], "test": [1], "label_names": {}}})
    errors = [str(p) for p in check_data_dir(folder) if p.severity == "error"]
    assert any("splits.json: field 'reuters.val': class 0 is listed in both" in e for e in errors), errors
    assert [p.severity for p in check_data_dir(tmp_path / "nope")] == ["error"]
