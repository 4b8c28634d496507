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
