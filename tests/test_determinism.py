"""Same config, seed and data → the same episode files, metrics and results (CPU), and the
results record what they depend on (seeds, episode hash, versions, commit)."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from episodes import ClassSplits, EpisodeSampler, episodes_sha256, serialize_episodes
from metaprompt.cli import main
from metaprompt.run.checkpoint import read_init_file
from tests.conftest import tiny_overrides
from tests.tiny import cli_sets


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the CLI sets threads=1



def test_two_runs_give_identical_metrics_and_results(tmp_path, tiny_data, tiny_models):
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"train.episodes": 6,
                                                                               "meta.algorithm": "maml++"}))
    results = []
    for name in ("a", "b"):
        run = tmp_path / name
        assert main(["train", "--out", str(run), *sets]) == 0
        assert main(["eval", str(run), "--episodes", "4"]) == 0
        results.append(json.loads((run / "results.json").read_text()))
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    best_a, info_a = read_init_file(a / "best.safetensors")
    best_b, info_b = read_init_file(b / "best.safetensors")
    assert info_a == info_b and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    ra, rb = results
    for row_a, row_b in zip(ra["results"] + ra["references"], rb["results"] + rb["references"], strict=True):
        assert row_a["accuracies_per_episode"] == row_b["accuracies_per_episode"]
        assert row_a["accuracy_mean"] == row_b["accuracy_mean"]
    assert ra["episodes_sha256"] == rb["episodes_sha256"]

    # What a result depends on is written next to it.
    assert ra["seeds"] == {"train": 1999, "val": 999, "test": 1234}
    assert re.fullmatch(r"[0-9a-f]{64}", ra["episodes_sha256"]) and ra["n_episodes"] == 4
    assert ra["data_sha256"] == hashlib.sha256(tiny_data[0].read_bytes()).hexdigest()
    assert ra["commit"] and ra["provenance"]["commit"] == ra["commit"]
    versions = ra["provenance"]["versions"]
    for package in ("python", "torch", "transformers", "safetensors", "numpy", "metaprompt"):
        assert versions[package] and versions[package] != "not installed", package
    assert ra["config"]["seed"] == 1999 and ra["config"]["train"]["val_seed"] == 999
    assert info_a["base_model"]["model_type"] == "bert"
    run_info = json.loads((a / "run.json").read_text())
    assert run_info["dataset_sha256"] == ra["data_sha256"] and run_info["versions"] == versions


def test_episodes_command_is_byte_identical(tmp_path, tiny_data, capsys):
    data = cli_sets([f"data.path={tiny_data[0]}", f"data.splits={tiny_data[1]}"])
    argv = ["episodes", "--dataset", "custom", "--n-way", "3", "--k-shot", "2", "--count", "50"]
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert main([*argv, "--seed", seed, "--out", str(tmp_path / f"{name}.jsonl"), *data]) == 0
    a, b, c = ((tmp_path / f"{n}.jsonl").read_bytes() for n in "abc")
    assert a == b and a != c
    header = json.loads(a.splitlines()[0])
    assert header["seed"] == 7 and header["data_sha256"] == hashlib.sha256(tiny_data[0].read_bytes()).hexdigest()


# ---------------------------------------------------------------- sampler properties


@st.composite
def split_datasets(draw):
    """Labels of a data set whose classes fall into train / val / test splits of random sizes."""
    n_way = draw(st.integers(2, 4))
    k_shot, n_query = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    counts = [draw(st.integers(n_way, n_way + 3)) for _ in range(3)]
    ids = draw(st.permutations(range(sum(counts))))
    splits = {"train": ids[: counts[0]], "val": ids[counts[0]: counts[0] + counts[1]],
              "test": ids[counts[0] + counts[1]:]}
    sizes = {c: draw(st.integers(k_shot + n_query, k_shot + n_query + 4)) for c in ids}
    labels = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    labels = labels[np.random.default_rng(draw(st.integers(0, 99))).permutation(len(labels))]
    return labels, splits, n_way, k_shot, n_query, draw(st.integers(0, 2**31))


@settings(max_examples=40, deadline=None)
@given(split_datasets())
def test_episodes_stay_inside_their_split_and_repeat_exactly(setup):
    labels, splits, n_way, k_shot, n_query, seed = setup
    class_splits = ClassSplits(tuple(splits["train"]), tuple(splits["val"]), tuple(splits["test"]),
                               {c: f"class {c}" for ids in splits.values() for c in ids})
    seen: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        sampler = EpisodeSampler(labels, class_splits.classes(split), n_way, k_shot, n_query, seed)
        episodes = sampler.episodes(5)
        classes = {c for e in episodes for c in e.classes}
        examples = [i for e in episodes for i in e.support + e.query]
        assert classes <= set(splits[split])
        assert set(labels[examples].tolist()) <= set(splits[split])  # no example of another split's class
        seen[split] = classes
        again = EpisodeSampler(labels, class_splits.classes(split), n_way, k_shot, n_query, seed).episodes(5)
        assert again == episodes
        header = {"format": "metaprompt.episodes/v1", "dataset": "toy", "split": split, "n_way": n_way,
                  "k_shot": k_shot, "n_query": n_query, "seed": seed, "count": 5, "data_sha256": "0" * 64}
        assert serialize_episodes(header, episodes) == serialize_episodes(header, again)
        assert episodes_sha256(header, episodes) == episodes_sha256(header, again)
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
