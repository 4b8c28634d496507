"""A test score that cannot leak or drift (issue 23, part 2): test episodes are checked against the
run's own test classes, data and split files are pinned (absolute paths, sha256) and compared at
eval and export, every tensor read is finite, results are strict JSON, and the same tensors give
the same bytes. Each cause is tried with at least two instances.

docs/reliability.md ("Test scores: leaks, drift, damaged files") lists every case with its message.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from metaprompt.cli import main
from metaprompt.results import read_results
from metaprompt.run.checkpoint import (CheckpointError, atomic_save, load_checkpoint, read_init_file, save_checkpoint,
                                       write_init_file)
from metaprompt.run.tensorfile import CHECKSUM_KEY
from tests.conftest import tiny_overrides
from tests.tiny import cli_sets

pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the CLI sets threads=1


def _strict(text: str):
    """json.loads that refuses NaN / Infinity (what any other JSON parser does)."""
    def refuse(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


def _expect_error(capsys, argv, *parts) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)
    return err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train(run: Path, data, model_dir, **extra) -> Path:
    sets = cli_sets(tiny_overrides(data, model_dir, **{"threads": 1, "train.episodes": 2, **extra}))
    assert main(["train", "--out", str(run), *sets]) == 0
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data, tiny_models):
    """A trained run on the shared tiny data (tests copy it before changing anything)."""
    return _train(tmp_path_factory.mktemp("trained") / "run", tiny_data, tiny_models("bert"))


@pytest.fixture
def run_copy(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def own_data(tmp_path, tiny_data):
    """A private copy of the tiny data set (data file, split file) that a test may change."""
    folder = tmp_path / "data"
    folder.mkdir()
    return shutil.copy(tiny_data[0], folder / "tiny.jsonl"), shutil.copy(tiny_data[1], folder / "splits.json")


def _episodes(tmp_path, tiny_data, split, name=None) -> Path:
    out = tmp_path / (name or f"{split}.jsonl")
    sets = cli_sets([f"data.path={tiny_data[0]}", f"data.splits={tiny_data[1]}"])
    assert main(["episodes", "--dataset", "custom", "--split", split, "--n-way", "3", "--k-shot", "2",
                 "--n-query", "4", "--count", "3", "--out", str(out), *sets]) == 0
    return out


# ---------------------------------------------------------------- test episodes: the run's test classes


def test_episode_files_of_train_or_val_classes_are_never_scored_as_test(run_copy, tmp_path, tiny_data, tiny_models,
                                                                        capsys):
    run = run_copy
    before = {p.name for p in run.iterdir()}
    relabelled = _episodes(tmp_path, tiny_data, "train", "relabelled.jsonl")
    lines = relabelled.read_text().splitlines()
    header = json.loads(lines[0])
    header["split"] = "test"  # a hand-edited header: the classes, not the header, decide
    relabelled.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    for path, named in ((_episodes(tmp_path, tiny_data, "train"), "train split"),
                        (_episodes(tmp_path, tiny_data, "val"), "val split"), (relabelled, "train split")):
        err = _expect_error(capsys, ["eval", str(run), "--set", f"data.test_episodes_file={path}"],
                            str(path), "must hold episodes of the run's test classes (9, 10, 11", named)
        assert "metaprompt episodes --split test" in err
        assert {p.name for p in run.iterdir()} == before  # no results.json, no partial scores
        # training refuses it too, before the run directory exists
        sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1,
                                       **{"data.test_episodes_file": str(path)}))
        _expect_error(capsys, ["train", "--out", str(tmp_path / "new"), *sets], str(path), named)
        assert not (tmp_path / "new").exists()
    missing = tmp_path / "missing.jsonl"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"data.test_episodes_file": str(missing)}))
    _expect_error(capsys, ["train", "--out", str(tmp_path / "new"), *sets], str(missing))
    assert not (tmp_path / "new").exists()
    # a real test file is scored, and the results say which split and file they scored
    test_file = _episodes(tmp_path, tiny_data, "test")
    assert main(["eval", str(run), "--episodes", "2", "--set", f"data.test_episodes_file={test_file}"]) == 0
    results = _strict((run / "results.json").read_text())
    assert results["split"] == "test" and results["test_classes"] == [9, 10, 11]
    assert results["episodes_file"] == str(test_file)


# ---------------------------------------------------------------- pinned paths and data hashes


def test_saved_config_has_absolute_paths_so_eval_elsewhere_scores_the_same_file(tmp_path, tiny_data, tiny_models,
                                                                                  monkeypatch, capsys):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    shutil.copy(tiny_data[0], home / "data" / "tiny.jsonl")
    shutil.copy(tiny_data[1], home / "data" / "splits.json")
    monkeypatch.chdir(home)
    _train(Path("runs/a"), ("data/tiny.jsonl", "data/splits.json"), tiny_models("bert"))
    saved = yaml.safe_load((home / "runs/a/config.yaml").read_text())["data"]
    assert saved["path"] == str(home / "data/tiny.jsonl") and saved["splits"] == str(home / "data/splits.json")
    record = json.loads((home / "runs/a/run.json").read_text())["data_files"]
    assert record["data"] == {"path": str(home / "data/tiny.jsonl"), "sha256": _sha(home / "data/tiny.jsonl")}
    assert record["splits"]["sha256"] == _sha(home / "data/splits.json")
    # Another folder whose data/ holds other files (its test classes are the run's training classes).
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    obj = json.loads(Path(tiny_data[1]).read_text())
    obj.update(train=[8, 9, 10, 11], val=[3, 4, 5, 6, 7], test=[0, 1, 2])
    (elsewhere / "data" / "splits.json").write_text(json.dumps(obj))
    (elsewhere / "data" / "tiny.jsonl").write_text(Path(tiny_data[0]).read_text() + '{"text": "x y", "label": 1}\n')
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(home / "runs/a"), "--episodes", "2"]) == 0
    results = _strict((home / "runs/a/results.json").read_text())
    assert results["data_files"]["data"]["path"] == str(home / "data/tiny.jsonl")
    assert results["data_sha256"] == _sha(home / "data/tiny.jsonl") and results["test_classes"] == [9, 10, 11]


def test_pinned_config_fixes_a_builtin_data_sets_folder(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from metaprompt.config import Config
    from metaprompt.run.integrity import pinned_config

    monkeypatch.chdir(tmp_path)
    cfg = Config.load(None, ["data.dataset=reuters", "data.test_episodes_file=eps/test.jsonl"])
    setup = SimpleNamespace(dataset=SimpleNamespace(path=Path("data/reuters.jsonl.gz")))
    pinned = pinned_config(cfg, setup)
    assert pinned.data.dir == str(tmp_path / "data") and pinned.data.test_episodes_file == str(tmp_path / "eps/test.jsonl")
    assert cfg.data.dir is None  # the config in use is not changed


CHANGES = [
    ("data file", "tiny.jsonl", lambda p: p.write_text(p.read_text() + '{"text": "goal match today", "label": 0}\n')),
    ("class-split file", "splits.json",
     lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "val": [6, 7, 9], "test": [8, 10, 11]}))),
]


@pytest.mark.parametrize("what, name, change", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_changed_data_or_split_file_is_refused_unless_allowed(tmp_path, own_data, tiny_models, capsys, what,
                                                                name, change):
    run = _train(tmp_path / "run", own_data, tiny_models("bert"))
    changed = tmp_path / "data" / name
    change(changed)
    err = _expect_error(capsys, ["eval", str(run), "--episodes", "2"], f"the {what} {changed} has sha256",
                        "but the run was trained on sha256", "--allow-data-change")
    assert str(run / "run.json") in err and not (run / "results.json").exists()
    _expect_error(capsys, ["export", str(run), "--out", str(tmp_path / "export")], f"the {what} {changed}")
    assert not (tmp_path / "export").exists()
    before = {p.name: _sha(p) for p in run.iterdir()}
    _expect_error(capsys, ["train", "--resume", str(run)], f"the {what} {changed}", "start a new run on the new data")
    assert {p.name: _sha(p) for p in run.iterdir()} == before
    if what == "data file":  # a run.json written before the split file was recorded: the data hash still counts
        info = json.loads((run / "run.json").read_text())
        del info["data_files"]
        (run / "run.json").write_text(json.dumps(info))
        _expect_error(capsys, ["eval", str(run), "--episodes", "2"], f"the {what} {changed} has sha256")
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--allow-data-change"]) == 0
    assert f"WARNING: the {what} {changed}" in capsys.readouterr().out
    warnings = _strict((run / "results.json").read_text())["data_change_warnings"]
    read_results(run / "results.json")  # the warning is a field of the results schema
    assert len(warnings) == 1 and str(changed) in warnings[0]
    assert main(["export", str(run), "--out", str(tmp_path / "export"), "--allow-data-change"]) == 0
    assert str(changed) in _strict((tmp_path / "export" / "metaprompt.json").read_text())["data_change_warnings"][0]


# ---------------------------------------------------------------- tensors read from disk are finite


def _poison(path: Path, value: float, which: int = 0) -> str:
    """Put ``value`` into the ``which``-th floating tensor of a safetensors file (a valid file otherwise)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = {k: v for k, v in (handle.metadata() or {}).items() if k != CHECKSUM_KEY}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    name = [k for k, v in tensors.items() if v.is_floating_point() and v.numel()][which]
    tensors[name].view(-1)[0] = value
    atomic_save(tensors, metadata, path)  # the writer, without write_init_file's finite check
    return name


def test_nan_or_inf_in_a_run_file_is_refused_naming_file_and_tensor(run_copy, tmp_path, capsys):
    run = run_copy
    best = run / "best.safetensors"
    name = _poison(best, float("nan"))
    _expect_error(capsys, ["eval", str(run), "--episodes", "2"], f"{best}: tensor '{name}' holds non-finite values")
    assert not (run / "results.json").exists()
    err = _expect_error(capsys, ["export", str(run), "--out", str(tmp_path / "export")], f"{best}: tensor '{name}'")
    assert ".tmp" not in err and ".export." not in err and not (tmp_path / "export").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    checkpoint = run / "checkpoint.safetensors"
    name = _poison(checkpoint, float("inf"), which=1)
    _expect_error(capsys, ["train", "--resume", str(run)], f"{checkpoint}: tensor '{name}' holds non-finite values")


def test_nan_or_inf_in_an_export_is_refused_by_load_init_and_metaprompt_load(trained, tmp_path, capsys):
    from metaprompt.load import LoadError
    from metaprompt.load import load_export

    good = tmp_path / "export"
    assert main(["export", str(trained), "--out", str(good)]) == 0
    for value in (float("inf"), float("-inf"), float("nan")):
        broken = Path(shutil.copytree(good, tmp_path / f"broken{value}"))
        name = _poison(broken / "init.safetensors", value)
        with pytest.raises(LoadError, match=f"tensor '{name}' holds non-finite values"):
            load_export(broken)
        _expect_error(capsys, ["load", str(broken)], f"{broken / 'init.safetensors'}: tensor '{name}'")
    peft = tmp_path / "peft"
    assert main(["export", str(trained), "--out", str(peft), "--format", "peft"]) == 0
    for file in ("adapter_model.safetensors", "verbalizer.safetensors"):
        broken = Path(shutil.copytree(peft, tmp_path / f"broken-{file}"))
        name = _poison(broken / file, float("nan"))
        with pytest.raises(LoadError, match=f"{file}: tensor '{name}' holds non-finite values"):
            load_export(broken)


# ---------------------------------------------------------------- strict JSON, CI of one episode


def test_one_episode_gives_strict_json_with_a_null_ci_and_a_reason(run_copy, tmp_path, capsys):
    run = run_copy
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "± n/a" in out and "nan" not in out.lower()
    results = _strict((run / "results.json").read_text())
    read_results(run / "results.json")  # null CIs are what the results schema allows
    for row in results["results"] + results["references"]:
        assert row["accuracy_ci95"] is None
        assert row["accuracy_ci95_note"] == "a 95% CI needs at least 2 episodes, got 1"
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    meta = _strict((tmp_path / "export" / "metaprompt.json").read_text())
    assert meta["metrics"]["meta"]["accuracy_ci95"] is None
    assert "± n/a" in (tmp_path / "export" / "README.md").read_text()
    assert main(["load", str(tmp_path / "export")]) == 0
    assert "± n/a" in capsys.readouterr().out
    # a results.json written before this fix (NaN in it) is still exported, the NaN read as null
    old = (run / "results.json").read_text().replace('"accuracy_ci95": null', '"accuracy_ci95": NaN')
    (run / "results.json").write_text(old)
    assert main(["export", str(run), "--out", str(tmp_path / "export2")]) == 0
    assert _strict((tmp_path / "export2" / "metaprompt.json").read_text())["metrics"]["meta"]["accuracy_ci95"] is None


def test_one_validation_episode_gives_strict_metrics_and_summary(tmp_path, tiny_data, tiny_models):
    run = _train(tmp_path / "run", tiny_data, tiny_models("bert"), **{"train.val_episodes": 1})
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = _strict(line)
        assert "val_ci95" not in record or record["val_ci95"] is None
    summary = _strict((run / "train_summary.json").read_text())
    assert all(point["val_ci95"] is None for point in summary["validation"])
    _strict((run / "run.json").read_text())
    assert read_init_file(run / "best.safetensors")[1]["val_ci95"] is None


def test_strict_writer_never_writes_nan():
    from metaprompt.run.jsonio import dumps_strict

    text = dumps_strict({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": float("-inf")}, "e": 2})
    assert _strict(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}


# ---------------------------------------------------------------- same tensors, same bytes


def _params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(3, 4, generator=generator) for name in ("prompt.embeds", "verbalizer.transform",
                                                                       "backbone.x", "a.b", "z.y")}


def test_saving_the_same_tensors_twice_gives_the_same_bytes(tmp_path):
    params = _params()
    info = {f"key{i}": i for i in range(12)}  # many metadata keys: hash-map order differed from save to save
    hashes = set()
    for i in range(6):
        write_init_file(tmp_path / f"init{i}.safetensors", params, info)
        hashes.add(_sha(tmp_path / f"init{i}.safetensors"))
    assert len(hashes) == 1
    optimizer = torch.optim.Adam([p.requires_grad_() for p in params.values()])
    for p in params.values():
        p.grad = torch.ones_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    hashes = set()
    for i in range(6):
        save_checkpoint(tmp_path / f"ckpt{i}.safetensors", params, optimizer, scheduler, {"step": 1, "best_val": 0.5})
        hashes.add(_sha(tmp_path / f"ckpt{i}.safetensors"))
    assert len(hashes) == 1
    loaded = load_checkpoint(tmp_path / "ckpt0.safetensors")
    assert all(torch.equal(loaded["params"][k], params[k]) for k in params)


def test_two_identical_runs_and_exports_give_identical_files(tmp_path, tiny_data, tiny_models):
    files = {}
    for name in ("a", "b"):
        run = _train(tmp_path / name, tiny_data, tiny_models("bert"))
        export = tmp_path / f"{name}-export"
        assert main(["export", str(run), "--out", str(export), "--format", "peft"]) == 0
        # (checkpoint.safetensors also holds the training time in seconds, which differs from run to run)
        files[name] = {"best.safetensors": _sha(run / "best.safetensors"),
                       **{f"export/{p.relative_to(export)}": _sha(p) for p in export.rglob("*.safetensors")}}
    assert {"best.safetensors", "export/init.safetensors",
            "export/adapter_model.safetensors", "export/verbalizer.safetensors"} <= set(files["a"])
    assert files["a"] == files["b"]


# ---------------------------------------------------------------- damaged headers, hand-edited files


@pytest.mark.parametrize("file, read", [("best.safetensors", read_init_file), ("checkpoint.safetensors", load_checkpoint)])
def test_every_flipped_byte_in_a_header_is_a_clear_error(trained, tmp_path, file, read):
    good = (trained / file).read_bytes()
    size = 8 + int.from_bytes(good[:8], "little")
    target = tmp_path / file
    for position in range(size):
        for bit in (0x01, 0x80):
            data = bytearray(good)
            data[position] ^= bit
            target.write_bytes(bytes(data))
            with pytest.raises(CheckpointError, match=str(target)):
                read(target)


def test_flipped_bytes_reach_the_user_as_one_error_line(run_copy, capsys):
    run = run_copy
    for file, argv in (("best.safetensors", ["eval", str(run), "--episodes", "2"]),
                       ("checkpoint.safetensors", ["train", "--resume", str(run)])):
        data = bytearray((run / file).read_bytes())
        data[40] ^= 0x04
        (run / file).write_bytes(bytes(data))
        _expect_error(capsys, argv, str(run / file))


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            if key != "config":  # the config is checked by Config itself (test_config.py)
                yield from _paths(value, prefix + (key,))


def test_hand_edited_export_metadata_is_a_clear_error(trained, tmp_path, capsys):
    from metaprompt.load import LoadError
    from metaprompt.load import load_export

    good = tmp_path / "export"
    assert main(["export", str(trained), "--out", str(good), "--format", "peft"]) == 0
    original = json.loads((good / "metaprompt.json").read_text())
    work = Path(shutil.copytree(good, tmp_path / "edited"))
    refused = 0
    for path in _paths(original):
        for bad in (None, "x", -1, 2**70, [], {}, 1.5, True):
            meta = json.loads(json.dumps(original))
            node = meta
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = bad
            (work / "metaprompt.json").write_text(json.dumps(meta))
            try:
                load_export(work).describe()
            except LoadError as err:
                assert str(work) in str(err), err
                refused += 1
    assert refused > 100
    for field, bad, message in (("base_model", {"name": "x"}, "field 'base_model.model_type' is missing"),
                                ("parameters", "x", "field 'parameters': expected an object of tensor shapes")):
        meta = {**original, field: bad}
        (work / "metaprompt.json").write_text(json.dumps(meta))
        _expect_error(capsys, ["load", str(work)], str(work / "metaprompt.json"), message)


# ---------------------------------------------------------------- data check: nothing to tokenize, leaks, huge labels


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_data_check_reports_invisible_texts_cross_split_texts_and_huge_labels(tmp_path, tiny_data, capsys):
    lines = Path(tiny_data[0]).read_text().splitlines()
    shared_train_test = json.loads(lines[0])["text"]
    bad = lines[:3] + [json.dumps({"text": "\u200b\u200b", "label": 1}),
                       json.dumps({"text": "\ufeff \u200c\u2060", "label": 2}),
                       json.dumps({"text": "a text", "label": 2**70}),
                       '{"text": "b text", "label": 1180591620717411303424}',
                       json.dumps({"text": shared_train_test, "label": 10 if json.loads(lines[0])["label"] < 9 else 0}),
                       json.dumps({"text": "  goal match ", "label": 1}), json.dumps({"text": "goal match", "label": 7})]
    path = _write(tmp_path / "bad.jsonl", bad + lines[3:])
    capsys.readouterr()
    assert main(["data", "check", str(path), "--set", f"data.splits={tiny_data[1]}"]) == 1
    out = capsys.readouterr().out
    for expected in (":4: field 'text': no visible character (only U+200B ZERO WIDTH SPACE): the text tokenizes to",
                     ":5: field 'text': no visible character (only U+FEFF ZERO WIDTH NO-BREAK SPACE, U+200C",
                     ":6: field 'label': class id 1180591620717411303424 is too large (at most 2**63 - 1)",
                     ":7: field 'label': class id 1180591620717411303424 is too large",
                     ":8: warning: field 'text': the same text is under class",
                     ":10: warning: field 'text': the same text is under class 7 (crime, val split) here and under "
                     "class 1 (music, train split) on line 9: a leak between train and val classes", "4 error(s)"):
        assert expected in out, (expected, out)
    assert "test split" in out.split(":8: warning:")[1].splitlines()[0]


NO_TOKENS = [
    ("zero-width text", json.dumps({"text": "\u200b", "label": 1}), "no visible character (only U+200B"),
    ("label of 2**70", '{"text": "goal", "label": 1180591620717411303424}', "class id 1180591620717411303424 is too large"),
    ("accents only", json.dumps({"text": "\u0301\u0301", "label": 1}), "tokenizes to nothing with the tokenizer of"),
    ("replacement character only", json.dumps({"text": "\ufffd", "label": 1}), "tokenizes to nothing"),
]


@pytest.mark.parametrize("case, line, message", NO_TOKENS, ids=[c[0] for c in NO_TOKENS])
def test_training_refuses_texts_without_tokens_and_huge_labels(tmp_path, tiny_data, tiny_models, capsys, case, line,
                                                               message):
    lines = Path(tiny_data[0]).read_text().splitlines()
    data = _write(tmp_path / "bad.jsonl", lines[:4] + [line] + lines[4:])
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"data.path": str(data)}))
    _expect_error(capsys, ["train", "--out", str(tmp_path / "run"), *sets], f"{data}:5: field", message)
    assert not (tmp_path / "run").exists()


def test_huge_ids_in_split_and_episode_files_are_refused(run_copy, tmp_path, tiny_data, tiny_models, capsys):
    splits = json.loads(Path(tiny_data[1]).read_text())
    splits["test"].append(2**70)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(splits))
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"data.splits": str(path)}))
    _expect_error(capsys, ["train", "--out", str(tmp_path / "new"), *sets], "class id 1180591620717411303424 is too large")
    episodes = _episodes(tmp_path, tiny_data, "test")
    lines = episodes.read_text().splitlines()
    episode = json.loads(lines[1])
    episode["query"][0] = 2**70
    episodes.write_text("\n".join([lines[0], json.dumps(episode)] + lines[2:]) + "\n")
    _expect_error(capsys, ["eval", str(run_copy), "--set", f"data.test_episodes_file={episodes}"],
                  f"{episodes}:2:", "non-negative integers below 2**63")


def test_texts_under_two_splits_are_a_warning_when_training(tmp_path, tiny_data, tiny_models, caplog):
    lines = Path(tiny_data[0]).read_text().splitlines()
    first = json.loads(lines[0])
    other = 10 if first["label"] < 9 else 0
    data = _write(tmp_path / "leak.jsonl", lines + [json.dumps({"text": first["text"], "label": other})])
    from metaprompt.config import Config
    from metaprompt.run.setup import load_data

    with caplog.at_level("WARNING"):
        load_data(Config.load(None, tiny_overrides(tiny_data, tiny_models("bert"), **{"data.path": str(data)})))
    assert "1 text(s) under classes of two different splits" in caplog.text and "a leak between" in caplog.text


def test_every_malformed_field_of_an_episode_file_is_a_clear_error(tmp_path, tiny_data):
    from episodes import DataError, read_episode_file

    good = _episodes(tmp_path, tiny_data, "test").read_text().splitlines()
    target = tmp_path / "edited.jsonl"
    refused = 0
    for line in range(3):
        obj = json.loads(good[line])
        for key in obj:
            for bad in (None, "x", -1, 2**70, [], {}, 1.5, True, [2**70], ["x"], [-1]):
                edited = {**obj, key: bad}
                target.write_text("\n".join(good[:line] + [json.dumps(edited)] + good[line + 1:]) + "\n")
                try:
                    read_episode_file(target)
                except DataError as err:
                    assert str(target) in str(err), err
                    refused += 1
    assert refused > 100


def test_the_finite_check_is_exact(tmp_path):
    from metaprompt.run.tensorfile import check_finite

    big = {"half": torch.full((10,), 60000.0, dtype=torch.float16), "float": torch.full((4,), 3e38)}
    check_finite(big, tmp_path / "x", reading=True)  # the sums overflow, the values are finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            value = torch.zeros(5, dtype=dtype)
            value[3] = bad
            with pytest.raises(CheckpointError, match="tensor 'w' holds non-finite values \\(1 of 5"):
                check_finite({"w": value}, tmp_path / "x", reading=True)
