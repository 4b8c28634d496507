"""train → eval → export on the tiny model and data, through the CLI."""
import json

import pytest

from metaprompt.cli import main
from tests.conftest import tiny_overrides


def _sets(overrides):
    out = []
    for item in overrides:
        out += ["--set", item]
    return out


@pytest.mark.parametrize("verbalizer", ["soft", "label_words"])
def test_train_eval_export(tmp_path, tiny_data, tiny_models, verbalizer):
    run = tmp_path / "run"
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), **{"verbalizer.kind": verbalizer}))
    assert main(["train", "--out", str(run), *sets]) == 0
    for name in ("config.yaml", "run.json", "checkpoint.safetensors", "best.safetensors", "metrics.jsonl",
                 "train_summary.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["episodes"] == 4
    assert [p["step"] for p in summary["validation"]] == [0, 2, 4]

    assert main(["eval", str(run), "--episodes", "3", "--json", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    for key in ("dataset", "n_way", "k_shot", "n_query", "n_episodes", "episodes_sha256", "model", "seed",
                "commit", "results"):
        assert key in results
    assert [r["init"] for r in results["results"]] == ["pretrained", "meta"]
    for row in results["results"]:
        assert len(row["accuracies_per_episode"]) == 3
        assert 0.0 <= row["accuracy_mean"] <= 1.0
    assert results["n_episodes"] == 3 and len(results["episodes_sha256"]) == 64

    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "metaprompt.json").read_text())
    assert meta["base_model"]["hidden_size"] == 32
    assert (tmp_path / "export" / "init.safetensors").is_file()


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "maml++", "reptile"])
@pytest.mark.parametrize("engine", ["torch_func", "higher"])
def test_every_algorithm_trains_with_every_engine(tmp_path, tiny_data, tiny_models, algorithm, engine):
    run = tmp_path / "run"
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), **{
        "meta.algorithm": algorithm, "meta.engine": engine, "train.episodes": 2, "train.val_every": 2,
        "meta.meta_batch": 2, "meta.first_order_fraction": 0.5}))
    assert main(["train", "--out", str(run), *sets]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["outer_steps"] == 1 and summary["episodes"] == 2


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, tiny_data, tiny_models):
    run = tmp_path / "run"
    # A learning rate too small to change validation accuracy: no improvement after the start.
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), **{
        "train.lr": 1e-12, "train.episodes": 10, "train.val_every": 2, "train.patience": 2}))
    assert main(["train", "--out", str(run), *sets]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["stopped_early"] and summary["outer_steps"] == 4
    assert summary["best_step"] == 0


def test_refuses_to_overwrite_a_run(tmp_path, tiny_data, tiny_models, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("earlier work")
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert")))
    assert main(["train", "--out", str(run), *sets]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]
