"""The results schema (metaprompt.results): what eval writes and every reader may rely on."""
from __future__ import annotations

import json

import pytest

from metaprompt.fields import FileFormatError
from metaprompt.results import FIELDS, check_results, is_results, read_results, score


def minimal() -> dict:
    """The required fields only."""
    return {"dataset": "huffpost", "n_way": 5, "k_shot": 1, "n_query": 15, "n_episodes": 2,
            "episodes_sha256": "1" * 64, "data_sha256": "a" * 64, "model": "minilm-offline",
            "results": [{"init": "pretrained", "accuracy_mean": 0.4, "accuracy_ci95": 0.1},
                        {"init": "meta", "accuracy_mean": 0.6, "accuracy_ci95": None}]}


def test_the_required_fields_are_enough_and_each_is_required():
    check_results(minimal(), "r.json")
    required = [name for name, kind in FIELDS.items() if "?" not in kind]
    assert set(required) == set(minimal())
    for name in required:
        broken = minimal()
        del broken[name]
        with pytest.raises(FileFormatError, match=f"r.json: field '{name}' is missing"):
            check_results(broken, "r.json")


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(n_way=0), "n_way"),
    (lambda r: r["results"][1].update(accuracy_mean="0.6"), "results[1].accuracy_mean"),
    (lambda r: r["results"][0].pop("init"), "results[0].init"),
    (lambda r: r.update(references=[{"name": "centroid", "accuracy_mean": None}]), "references[0].accuracy_mean"),
    (lambda r: r.update(data_change_warnings="changed"), "data_change_warnings"),
    (lambda r: r.update(provenance={"command": 3}), "provenance.command"),
])
def test_a_wrong_field_is_named(change, field):
    broken = minimal()
    change(broken)
    with pytest.raises(FileFormatError) as err:
        check_results(broken, "r.json")
    assert str(err.value).startswith(f"r.json: field '{field}'")


def test_read_results_reads_old_nan_as_null_and_names_a_broken_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(minimal()).replace('"accuracy_ci95": null', '"accuracy_ci95": NaN'))
    assert score(read_results(path), "meta")["accuracy_ci95"] is None
    assert score(read_results(path), "pretrained")["accuracy_mean"] == 0.4
    path.write_text('{"results": [')
    with pytest.raises(FileFormatError, match="results.json:1: the results file is not valid JSON"):
        read_results(path)


def test_is_results_tells_results_from_other_json():
    assert is_results(minimal())
    assert not is_results({"validation": []}) and not is_results([minimal()])
