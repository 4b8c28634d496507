"""experiments/class_folds.py (not part of the package): the folds never hold a test class, every
pooled class is held out at least once, and a fold's split file loads as a custom data set."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture()
def class_folds(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import class_folds

    return class_folds


def test_folds_cover_the_pool_and_only_the_pool(class_folds):
    pool = [1, 5, 10, 11, 13, 14, 16, 18, 4, 6, 7, 12, 17]  # 20 Newsgroups' training + validation classes
    folds = class_folds.make_folds(pool, held=5, folds=3, seed=0)
    assert len(folds) == 3 and all(len(f) == len(set(f)) == 5 for f in folds)
    assert set().union(*folds) == set(pool)  # 3 × 5 ≥ 13: every class held out at least once
    assert folds == class_folds.make_folds(pool, held=5, folds=3, seed=0)  # seeded
    assert folds != class_folds.make_folds(pool, held=5, folds=3, seed=1)


def test_fold_split_file_trains_on_the_rest_and_keeps_test_classes_out(class_folds, tiny_data, tmp_path):
    from episodes.data import load_custom_dataset

    path, splits = tiny_data
    dataset = load_custom_dataset(path, splits)
    s = dataset.splits
    pool = sorted(set(s.train) | set(s.val))
    held = tuple(pool[:3])
    fold = class_folds.fold_split_file(dataset, held, tmp_path / "fold0" / "splits.json")
    obj = json.loads(fold.read_text())
    assert obj["val"] == list(held) and obj["test"] == list(s.test)
    assert sorted(obj["train"]) == [c for c in pool if c not in held]
    loaded = load_custom_dataset(path, fold)
    assert loaded.label_words == dataset.label_words
    assert not set(loaded.splits.train) & set(s.test) and not set(loaded.splits.val) & set(s.test)


def test_summary_pairs_each_fold_with_its_own_strongest_baseline(class_folds):
    curves = {"v": [[{"episodes": 0, "val_accuracy": 0.5}, {"episodes": 100, "val_accuracy": 0.7}],
                    [{"episodes": 0, "val_accuracy": 0.4}, {"episodes": 100, "val_accuracy": 0.5}]]}
    baselines = [{"centroid": {"val_accuracy": 0.6}, "linear_probe": {"val_accuracy": 0.65}},
                 {"centroid": {"val_accuracy": 0.55}, "linear_probe": {"val_accuracy": 0.45}}]
    rows = class_folds.summarise(curves, baselines)
    at = {r["episodes"]: r for r in rows}
    assert at[100]["folds"] == [0.7, 0.5] and at[100]["ahead_in_folds"] == 1
    assert at[100]["minus_strongest"] == pytest.approx(((0.7 - 0.65) + (0.5 - 0.55)) / 2)
    assert at[0]["ahead_in_folds"] == 0
