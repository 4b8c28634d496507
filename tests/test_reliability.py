"""Bad input, through the CLI: one clear `error:` line (exit 2, no traceback), no run directory
or checkpoint written, and an earlier run left byte-for-byte as it was.

docs/reliability.md lists every case with the message the user sees.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from episodes import EpisodeError, EpisodeSampler
from metaprompt.cli import main
from tests.conftest import tiny_overrides


def _sets(overrides: list[str]) -> list[str]:
    out: list[str] = []
    for item in overrides:
        out += ["--set", item]
    return out


def _snapshot(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory, tiny_data, tiny_models):
    """A finished and evaluated run; every bad input below must leave it untouched."""
    run = tmp_path_factory.mktemp("earlier") / "run"
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), **{"threads": 1, "train.episodes": 2}))
    assert main(["train", "--out", str(run), *sets]) == 0
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    return run, _snapshot(run)


def _expect_error(capsys, argv, *messages) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: "), err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    for message in messages:
        assert message in err, err
    return err


def _lines(tiny_data) -> list[str]:
    return tiny_data[0].read_text().splitlines()


def _label(line: str) -> int:
    return json.loads(line)["label"]


# Each case: (id, function(tmp_path, tiny_data, model_dir) -> extra --set overrides, expected part of the message).
def _data_with(name, rows):
    def make(tmp_path, tiny_data, model_dir):
        path = tmp_path / name
        content = rows(_lines(tiny_data))
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text("\n".join(content) + "\n", encoding="utf-8")
        return {"data.path": str(path)}
    return make


def _splits_with(change):
    def make(tmp_path, tiny_data, model_dir):
        obj = json.loads(tiny_data[1].read_text())
        change(obj)
        path = tmp_path / "splits.json"
        path.write_text(json.dumps(obj))
        return {"data.splits": str(path)}
    return make


def _plain(**extra):
    return lambda tmp_path, tiny_data, model_dir: extra


def _only(rows, label, keep):
    return [r for r in rows if _label(r) != label] + [r for r in rows if _label(r) == label][:keep]


def _not_a_model(tmp_path, tiny_data, model_dir):
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "weights.txt").write_text("hello")
    return {"model.name": str(tmp_path / "not_a_model")}


def _bin_only_model(tmp_path, tiny_data, model_dir):
    """A model whose weights are a pickled pytorch_model.bin: refused, never unpickled."""
    from safetensors.torch import load_file

    folder = tmp_path / "bin_model"
    shutil.copytree(model_dir, folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")  # a test fixture: the package itself never pickles
    return {"model.name": str(folder)}


def _headless(tmp_path) -> str:
    from tests.tiny import save_tiny_model

    return str(save_tiny_model("bert", tmp_path / "no_head", mlm_head=False))


BAD_TRAIN_INPUTS = [
    ("malformed JSON line", _data_with("bad.jsonl", lambda r: r[:100] + ['{"text": "x", "label": 1'] + r[100:]),
     "bad.jsonl:101: malformed JSON"),
    ("missing field", _data_with("bad.jsonl", lambda r: r[:5] + ['{"text": "no label"}'] + r[5:]),
     "bad.jsonl:6: field 'label': missing"),
    ("mistyped field", _data_with("bad.jsonl", lambda r: r[:5] + ['{"text": "x", "label": "sports"}'] + r[5:]),
     "bad.jsonl:6: field 'label': expected an integer, got \"sports\""),
    ("text not a string", _data_with("bad.jsonl", lambda r: r[:2] + ['{"text": ["a", "b"], "label": 1}'] + r[2:]),
     "bad.jsonl:3: field 'text': expected a string"),
    ("label missing from the split file", _data_with("bad.jsonl", lambda r: r + ['{"text": "x", "label": 40}']),
     "bad.jsonl:289: field 'label': class 40 is not in any split"),
    ("label in two splits", _splits_with(lambda o: o["val"].append(0)),
     "class 0 is listed in both 'train' and 'val'"),
    ("class without a name", _splits_with(lambda o: o["label_names"].pop("3")),
     "no name for class 3"),
    ("empty text", _data_with("bad.jsonl", lambda r: r[:3] + ['{"text": "", "label": 1}'] + r[3:]),
     "bad.jsonl:4: field 'text': empty or whitespace-only text"),
    ("whitespace-only text", _data_with("bad.jsonl", lambda r: r[:3] + ['{"text": " \\t ", "label": 1}'] + r[3:]),
     "bad.jsonl:4: field 'text': empty or whitespace-only text"),
    ("invalid UTF-8", _data_with("bad.jsonl", lambda r: "\n".join(r[:7]).encode()
                                 + b'\n{"text": "caf\xe9", "label": 0}\n' + "\n".join(r[7:]).encode()),
     "bad.jsonl:8: invalid UTF-8"),
    ("data file missing", _plain(**{"data.path": "/nonexistent/data.jsonl"}), "the data file does not exist"),
    ("split file missing", _plain(**{"data.splits": "/nonexistent/splits.json"}),
     "The class-split file /nonexistent/splits.json does not exist"),
    ("val class smaller than K + Q", _data_with("small.jsonl", lambda r: _only(r, 7, 3)),
     "every class needs k_shot + n_query = 6 examples, but class 7 (crime) has 3"),
    ("test class smaller than K + Q (caught before training)", _data_with("small.jsonl", lambda r: _only(r, 10, 5)),
     "(test classes): too few examples"),
    ("train class smaller than K + Q", _data_with("small.jsonl", lambda r: _only(r, 1, 1)),
     "class 1 (music) has 1"),
    ("N larger than the number of classes", _plain(**{"data.n_way": 4}),
     "n_way = 4 is larger than the number of classes (3)"),
    ("unknown data set", _plain(**{"data.dataset": "reuter"}), "Did you mean 'reuters'?"),
    ("unknown algorithm", _plain(**{"meta.algorithm": "mamal"}), "Did you mean 'maml'?"),
    ("unknown engine", _plain(**{"meta.engine": "jax"}), "config key 'meta.engine'"),
    ("negative learning rate", _plain(**{"train.lr": -1}), "config key 'train.lr': must be a finite number > 0"),
    ("zero inner learning rate", _plain(**{"meta.inner_lr": 0}), "config key 'meta.inner_lr': must be a finite"),
    ("infinite learning rate", _plain(**{"train.lr": "inf"}), "config key 'train.lr'"),
    ("negative inner steps", _plain(**{"meta.inner_steps": -3}), "config key 'meta.inner_steps': must be ≥ 1"),
    ("zero training episodes", _plain(**{"train.episodes": 0}), "config key 'train.episodes': must be ≥ 1"),
    ("fractional step count", _plain(**{"meta.inner_steps": 2.5}), "expected int"),
    ("unknown --set key", _plain(**{"train.learning_rate": 0.1}), "Did you mean 'train.lr'?"),
    ("misspelt --set key", _plain(**{"train.episods": 3}), "Did you mean 'train.episodes'?"),
    ("model path that is not a model", _not_a_model, "is a path but not a model directory: no config.json"),
    ("model directory that does not exist", _plain(**{"model.name": "/nonexistent/model"}),
     "model directory '/nonexistent/model' does not exist"),
    ("model with only pickled weights", _bin_only_model, "no model.safetensors weights"),
    ("hub id without internet", _plain(**{"model.name": "nobody/no-such-model"}),
     "cannot load model 'nobody/no-such-model'"),
    # issue 23, part 3: data the tokenizer or the label columns cannot hold
    ("zero-width-only text", _data_with("bad.jsonl", lambda r: r[:3] + ['{"text": "\\u200b\\u200d", "label": 1}'] + r[3:]),
     "bad.jsonl:4: field 'text': no visible character (only U+200B ZERO WIDTH SPACE, U+200D ZERO WIDTH JOINER)"),
    ("format characters and spaces only", _data_with("bad.jsonl", lambda r: r[:3] + ['{"text": "\\ufeff \\u2060", "label": 1}']
                                                     + r[3:]), "bad.jsonl:4: field 'text': no visible character"),
    ("label beyond 64 bits", _data_with("bad.jsonl", lambda r: r[:3] + ['{"text": "x", "label": %d}' % 2**70] + r[3:]),
     f"bad.jsonl:4: field 'label': class id {2**70} is too large (at most 2**63 - 1)"),
    ("class id beyond 64 bits in the split file", _splits_with(lambda o: o["test"].append(2**70)),
     f"class id {2**70} is too large"),
    # every key validated where the config is built, the message naming the full key
    ("device typo", _plain(**{"model.device": "banana"}), "config key 'model.device': unknown device 'banana'"),
    ("device index typo", _plain(**{"model.device": "cuda:x"}), "Did you mean 'cuda'?"),
    ("CUDA device that this machine lacks", _plain(**{"model.device": "cuda:99" if torch.cuda.is_available() else "cuda"}),
     "config key 'model.device': 'cuda"),
    ("seed beyond 64 bits", _plain(seed=2**70), "config key 'seed': must be an integer from 0 to 2**64 - 1, got 1180"),
    ("negative seed", _plain(seed=-1), "config key 'seed': must be an integer from 0 to 2**64 - 1, got -1"),
    ("test seed beyond 64 bits", _plain(**{"eval.seed": 2**64}), "config key 'eval.seed'"),
    ("negative validation seed", _plain(**{"train.val_seed": -5}), "config key 'train.val_seed'"),
    ("empty meta.learn", _plain(**{"meta.learn": "[]"}), "config key 'meta.learn': is empty and the backbone is frozen"),
    ("meta.learn group twice", _plain(**{"meta.learn": "[prompt,prompt]"}), "config key 'meta.learn': lists a group twice"),
    ("meta.learn of groups without parameters", _plain(**{"meta.learn": "[prompt]", "prompt.length": 0}),
     "config key 'meta.learn': nothing to meta-learn"),
    ("negative AdamW weight decay at meta-test", _plain(**{"eval.adamw_weight_decay": -1}),
     "config key 'eval.adamw_weight_decay': must be a finite number ≥ 0, got -1.0"),
    ("negative weight decay", _plain(**{"train.weight_decay": -0.5}), "config key 'train.weight_decay'"),
    ("hybrid weight out of range", _plain(**{"verbalizer.hybrid_weight": 2}), "config key 'verbalizer.hybrid_weight'"),
    ("empty wandb project", _plain(**{"log.wandb_project": ""}), "config key 'log.wandb_project': must not be empty"),
    ("empty data path", _plain(**{"data.test_episodes_file": " "}), "config key 'data.test_episodes_file': must not"),
    ("too many threads", _plain(threads=100000), "config key 'threads': must be from 0 (torch's default) to 256"),
    ("infinite LoRA alpha", _plain(**{"peft.method": "lora", "peft.lora_alpha": "inf"}),
     "config key 'peft.lora_alpha': must be a finite number > 0, got inf"),
    ("label-word section with a custom data set (was silently ignored)", _plain(**{"verbalizer.label_words": "metaprompter"}),
     "config key 'verbalizer.label_words': picks a section of a built-in data set's verbalizers.json"),
    ("missing test episode file (caught before training)",
     _plain(**{"data.test_episodes_file": "/nonexistent/test.jsonl"}),
     "config key 'data.test_episodes_file': /nonexistent/test.jsonl does not exist"),
    ("label-word verbalizer on a model without an MLM head", lambda tmp_path, tiny_data, model_dir: {
        "model.name": _headless(tmp_path), "verbalizer.kind": "label_words"},
     "config key 'verbalizer.kind': 'label_words' needs a masked-LM head"),
    ("hybrid verbalizer on a model without an MLM head", lambda tmp_path, tiny_data, model_dir: {
        "model.name": _headless(tmp_path), "verbalizer.kind": "hybrid"},
     "config key 'verbalizer.kind': 'hybrid' mixes RepVerb"),
]


@pytest.mark.parametrize("case, make, message", BAD_TRAIN_INPUTS, ids=[c[0] for c in BAD_TRAIN_INPUTS])
def test_bad_train_input_is_one_clear_error(tmp_path, tiny_data, tiny_models, earlier_run, capsys, case, make, message):
    extra = make(tmp_path, tiny_data, tiny_models("bert"))
    out = tmp_path / "runs" / "new"
    argv = ["train", "--out", str(out), *_sets(tiny_overrides(tiny_data, tiny_models("bert"), **{"threads": 1, **extra}))]
    _expect_error(capsys, argv, message)
    assert not (tmp_path / "runs").exists(), "a run directory was created"
    run, snapshot = earlier_run
    assert _snapshot(run) == snapshot


def test_huge_text_is_truncated_not_fatal(tmp_path, tiny_data, tiny_models, capsys):
    lines = _lines(tiny_data)
    data = tmp_path / "huge.jsonl"
    huge = {"text": "goal match team " * 70_000, "label": 0}  # a 1.1 MB line
    data.write_text("\n".join([json.dumps(huge)] + lines) + "\n")
    assert data.stat().st_size > 2**20
    out = tmp_path / "run"
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"data.path": str(data),
                                                                               "train.episodes": 2}))
    assert main(["train", "--out", str(out), *sets]) == 0
    from metaprompt.config import Config
    from metaprompt.run.setup import build_setup

    setup = build_setup(Config.load(out / "config.yaml"))
    assert len(setup.tokens[0]) == setup.template.text_budget <= 16


def test_run_directory_under_a_file(tmp_path, tiny_data, tiny_models, capsys):
    (tmp_path / "a_file").write_text("x")
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))
    _expect_error(capsys, ["train", "--out", str(tmp_path / "a_file" / "run"), *sets], "is a file, not a directory")


def test_unwritable_output_directory(tmp_path, tiny_data, tiny_models, capsys, monkeypatch):
    # Tests run as root, which ignores permission bits: simulate what a read-only mount answers.
    import metaprompt.run.rundir as train_module  # check_run_dir lives there

    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))
    monkeypatch.setattr(train_module.os, "access", lambda path, mode: False)
    _expect_error(capsys, ["train", "--out", str(tmp_path / "run"), *sets], "(permission denied)")
    monkeypatch.undo()

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(train_module.tempfile, "TemporaryFile", refuse)
    _expect_error(capsys, ["train", "--out", str(tmp_path / "run"), *sets], "Read-only file system")
    assert not (tmp_path / "run").exists()


def test_full_disk_is_refused_before_training(tmp_path, tiny_data, tiny_models, capsys, monkeypatch):
    import metaprompt.run.rundir as train_module  # check_run_dir lives there

    monkeypatch.setattr(train_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 2**20))
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))
    _expect_error(capsys, ["train", "--out", str(tmp_path / "run"), *sets], "only 1 MB free")
    assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten(earlier_run, tiny_data, tiny_models, capsys):
    run, snapshot = earlier_run
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))
    _expect_error(capsys, ["train", "--out", str(run), *sets], "already exists and is not empty")
    assert _snapshot(run) == snapshot


BAD_RUN_COMMANDS = [
    ("resume with a bad --set", lambda run: ["train", "--resume", str(run), "--set", "train.lr=-1"],
     "config key 'train.lr'"),
    ("resume with --out", lambda run: ["train", "--resume", str(run), "--out", str(run)], "drop --config/--out"),
    ("eval with --episodes 0", lambda run: ["eval", str(run), "--episodes", "0"], "--episodes must be ≥ 1, got 0"),
    ("eval with a bad --set", lambda run: ["eval", str(run), "--set", "eval.adapt=adam"], "Did you mean 'adamw'?"),
    ("eval with an unknown --set key", lambda run: ["eval", str(run), "--set", "eval.episode=3"],
     "Did you mean 'eval.episodes'?"),
    ("eval of a folder that is not a run", lambda run: ["eval", str(run.parent)], "is not a run directory"),
    ("export of a folder that is not a run", lambda run: ["export", str(run.parent), "--out", str(run.parent / "x")],
     "is not a trained run"),
]


@pytest.mark.parametrize("case, argv, message", BAD_RUN_COMMANDS, ids=[c[0] for c in BAD_RUN_COMMANDS])
def test_bad_command_on_an_earlier_run_leaves_it_untouched(earlier_run, capsys, case, argv, message):
    run, snapshot = earlier_run
    _expect_error(capsys, argv(run), message)
    assert _snapshot(run) == snapshot
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


def test_eval_refuses_an_init_from_another_base_model(earlier_run, tiny_models, capsys):
    # The tiny DistilBERT has the same hidden size (32) and vocabulary as the tiny BERT, so every
    # tensor of best.safetensors has the right shape: only the recorded base model tells them apart.
    run, snapshot = earlier_run
    other = tiny_models("distilbert")
    err = _expect_error(capsys, ["eval", str(run), "--set", f"model.name={other}"],
                        "was meta-trained on base model")
    assert "model_type bert" in err and "model_type distilbert" in err
    assert _snapshot(run) == snapshot


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path, earlier_run, capsys):
    run, _ = earlier_run
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(run / "config.yaml", broken / "config.yaml")
    _expect_error(capsys, ["train", "--resume", str(broken)], "stopped before its first checkpoint")
    assert sorted(p.name for p in broken.iterdir()) == ["config.yaml"]


def test_episodes_command_errors_write_no_file(tmp_path, tiny_data, capsys):
    out = tmp_path / "episodes.jsonl"
    data = _sets([f"data.path={tiny_data[0]}", f"data.splits={tiny_data[1]}"])
    _expect_error(capsys, ["episodes", "--dataset", "custom", "--n-way", "5", "--out", str(out), *data],
                  "n_way = 5 is larger than the number of classes (3)")
    three_way = ["episodes", "--dataset", "custom", "--n-way", "3", "--out", str(out), *data]
    _expect_error(capsys, [*three_way, "--k-shot", "0"], "--k-shot must be ≥ 1, got 0")
    _expect_error(capsys, [*three_way, "--k-shot", "20"], "k_shot + n_query = 35")
    _expect_error(capsys, ["episodes", "--dataset", "hufpost", "--out", str(out)], "Did you mean 'huffpost'?")
    assert list(tmp_path.iterdir()) == []


def test_bad_yaml_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train: [1, 2\n")
    _expect_error(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")], "not valid YAML")
    config.write_text("!!python/object/apply:os.system ['echo unsafe']\n")  # safe_load refuses to build objects
    _expect_error(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")], "not valid YAML")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_data_check_reports_every_problem(tmp_path, tiny_data, capsys):
    lines = _lines(tiny_data)
    bad = lines[:3] + ['{"text": "", "label": 1}', "not json", '{"text": "a", "label": -1}', "[1, 2]",
                       '{"label": 2}'] + lines[3:]
    path = tmp_path / "many.jsonl"
    path.write_bytes(("\n".join(bad) + "\n").encode() + b'{"text": "\xff", "label": 0}\n')
    capsys.readouterr()
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    for expected in (":4: field 'text': empty", ":5: malformed JSON", ":6: field 'label': expected a non-negative",
                     ":7: expected a JSON object", ":8: field 'text': missing", ":294: invalid UTF-8",
                     "6 error(s)"):
        assert expected in out, out
    assert main(["data", "check", str(tiny_data[0])]) == 0
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 1


# ---------------------------------------------------------------- sampler: invalid arguments


BAD_INT = st.one_of(st.integers(-5, 0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none())


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["n_way", "k_shot", "n_query"]), BAD_INT)
def test_invalid_counts_always_get_the_documented_error(name, value):
    args = dict(labels=np.repeat(np.arange(4), 10), classes=[0, 1, 2, 3], n_way=2, k_shot=1, n_query=1, seed=0)
    args[name] = value
    minimum = 2 if name == "n_way" else 1
    with pytest.raises(EpisodeError) as err:
        EpisodeSampler(**args)
    text = str(err.value)
    assert text.startswith(f"{name} must be ")
    assert f"must be ≥ {minimum}, got {value}" in text or "must be an integer" in text


def test_baseline_checks_the_test_classes_before_writing(tmp_path, tiny_data, tiny_models, capsys):
    data = tmp_path / "small.jsonl"
    data.write_text("\n".join(_only(_lines(tiny_data), 10, 3)) + "\n")
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"data.path": str(data)}))
    argv = ["baseline", "--method", "bitfit", "--init", "pretrained", "--out", str(tmp_path / "run"), *sets]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: custom (test classes): too few examples") and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- output paths, checked before any work


def test_output_paths_are_checked_before_the_work(earlier_run, tmp_path, tiny_data, tiny_models, capsys, monkeypatch):
    import metaprompt.run.evaluate as evaluation

    def never(*args, **kwargs):
        raise AssertionError("scored an episode before the output path was checked")

    monkeypatch.setattr(evaluation, "adapt_and_score", never)
    run, snapshot = earlier_run
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    _expect_error(capsys, ["eval", str(run), "--json", str(tmp_path / "a_dir")], "--json", "is a directory")
    _expect_error(capsys, ["eval", str(run), "--json", str(tmp_path / "a_file" / "r.json")], "a_file is a file")
    _expect_error(capsys, ["eval", str(run), "--json", str(tmp_path / "a_file")], "the file already exists",
                  "--force")
    assert _snapshot(run) == snapshot
    data = _sets([f"data.path={tiny_data[0]}", f"data.splits={tiny_data[1]}"])
    episodes = ["episodes", "--dataset", "custom", "--n-way", "3", *data, "--out"]
    _expect_error(capsys, [*episodes, str(tmp_path / "a_dir")], "--out", "is a directory")
    _expect_error(capsys, [*episodes, str(tmp_path / "a_file" / "e.jsonl")], "is a file, not a directory")
    _expect_error(capsys, [*episodes, str(tmp_path / "a_file")], "the file already exists")
    sets = _sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))
    _expect_error(capsys, ["baseline", "--method", "bitfit", "--init", "pretrained", "--out", str(tmp_path / "b"),
                           "--json", str(tmp_path / "a_dir"), *sets], "is a directory")
    _expect_error(capsys, ["baseline", "--method", "bitfit", "--init", "pretrained", "--out", str(tmp_path / "b"),
                           "--json", str(tmp_path / "a_file"), *sets], "the file already exists", "--force")
    assert not (tmp_path / "b").exists()
    _expect_error(capsys, ["export", str(run), "--out", str(tmp_path / "a_file" / "x")],
                  "a_file is a file, not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"] and not any((tmp_path / "a_dir").iterdir())


@pytest.mark.parametrize("flag, value, message", [
    ("--seed", str(2**70), "--seed must be at most 2**64 - 1"), ("--seed", "-1", "--seed must be ≥ 0, got -1"),
    ("--count", "0", "--count must be ≥ 1, got 0"), ("--n-way", "1", "--n-way must be ≥ 2, got 1")])
def test_episodes_flags_are_named(tmp_path, tiny_data, capsys, flag, value, message):
    data = _sets([f"data.path={tiny_data[0]}", f"data.splits={tiny_data[1]}"])
    _expect_error(capsys, ["episodes", "--dataset", "custom", flag, value, "--out", str(tmp_path / "e.jsonl"), *data],
                  message)
    assert list(tmp_path.iterdir()) == []


def test_hints_name_a_command_that_works(earlier_run, tmp_path, capsys):
    """A run without best.safetensors is told to `train --resume` (which the CLI accepts), not
    `train --out RUN` (which refuses an existing run)."""
    run, _ = earlier_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "best.safetensors").unlink()
    for argv in (["eval", str(copy)], ["export", str(copy), "--out", str(tmp_path / "x")]):
        err = _expect_error(capsys, argv, f"`metaprompt train --resume {copy}`")
        assert "--out" not in err.split("metaprompt train")[1].split("`")[0], err
    assert main(["train", "--resume", str(copy)]) == 0  # the hinted command is accepted
    bare = tmp_path / "bare"  # stopped before its first checkpoint: --resume would be refused, so it is not hinted
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    err = _expect_error(capsys, ["eval", str(bare)], "stopped before its first checkpoint",
                        f"`metaprompt train --config {bare / 'config.yaml'} --out NEW_RUN`")
    assert "--resume" not in err and "--init pretrained" in err
    assert main(["eval", str(bare), "--init", "pretrained", "--episodes", "1"]) == 0  # the other hint works too
    new = tmp_path / "new"
    assert main(["train", "--config", str(bare / "config.yaml"), "--out", str(new), "--set", "train.episodes=1",
                 "--set", "log.progress=false"]) == 0 and (new / "best.safetensors").is_file()  # and so does the first


def test_data_check_reports_invisible_texts_huge_labels_and_leaks(tmp_path, tiny_data, capsys):
    rows = _lines(tiny_data)
    test_row = next(r for r in rows if _label(r) == 10)
    text = json.loads(test_row)["text"]
    bad = rows[:2] + ['{"text": "\\u200b", "label": 1}', '{"text": "x", "label": %d}' % 2**70,
                      json.dumps({"text": "  " + text.upper() + " ", "label": 0}),  # a test text under a train class
                      json.dumps({"text": text, "label": 7})] + rows[2:]  # and under a val class
    path = tmp_path / "leaky.jsonl"
    path.write_text("\n".join(bad) + "\n")
    capsys.readouterr()
    assert main(["data", "check", str(path), "--splits", str(tiny_data[1])]) == 1
    out = capsys.readouterr().out
    assert ":3: field 'text': no visible character" in out and f":4: field 'label': class id {2**70} is too large" in out
    leaks = [line for line in out.splitlines() if "a leak between" in line]
    assert len(leaks) == 2 and all("warning:" in line and "test split" in line for line in leaks), out
    assert ":5: warning" in leaks[0] and "under class 0 (" in leaks[0] and "train split" in leaks[0]
    assert ":6: warning" in leaks[1] and "under class 7 (" in leaks[1] and "val split" in leaks[1]
    assert "2 error(s)" in out
    assert main(["data", "check", str(tiny_data[0]), "--splits", str(tiny_data[1])]) == 0  # a clean file
    assert "leak" not in capsys.readouterr().out


# ---------------------------------------------------------------- files read back: file and field named


def _flip(path, find: bytes, offset: int = 0, checksum: bool = True) -> None:
    """Flip one bit of the first byte of ``find`` (plus ``offset``) in the file's safetensors header;
    ``checksum=False`` also blanks the header's checksum entry, as in a file written before
    checksums were recorded, so that the field checks behind it are reached."""
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    at = data.index(find, 8, 8 + size) + offset
    data[at] ^= 0x01
    if not checksum:
        entry = re.search(rb'"header_sha256":"[0-9a-f]{64}",', bytes(data[8:8 + size]))
        data[8 + entry.start():8 + entry.end()] = b" " * (entry.end() - entry.start())
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("find, offset, message", [
    (b'"state":"{', 9, "metadata field 'state': not valid JSON"),  # '{' -> 'z'
    (b'"param_names":"[', 15, "metadata field 'param_names': not valid JSON"),
    (b'"rng/torch"', 1, "names tensor 'rng/torch', which the file does not hold"),  # the name: 'rng' -> 'sng'
    (b'"state":"{\\"step', 12, "metadata field 'state': 'step' must be a count ≥ 0"),  # 'step' -> 'rtep'
])
def test_a_flipped_byte_in_a_checkpoint_header_is_one_error(earlier_run, tmp_path, capsys, find, offset, message):
    run, _ = earlier_run
    for checksum, expected in ((True, "the header does not match its checksum"), (False, message)):
        copy = tmp_path / f"run-{checksum}"
        shutil.copytree(run, copy)
        _flip(copy / "checkpoint.safetensors", find, offset, checksum)
        before = _snapshot(copy)
        _expect_error(capsys, ["train", "--resume", str(copy)], str(copy / "checkpoint.safetensors"), expected)
        assert _snapshot(copy) == before


def _edit(key_path: str, value):
    def edit(meta):
        node = meta
        *parents, leaf = key_path.split(".")
        for part in parents:
            node = node[part]
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_edit("parameters", "x"), "field 'parameters': expected an object of tensor shapes"),
    (_edit("base_model.hidden_size", "32"), "field 'base_model.hidden_size': expected an integer ≥ 1, got \"32\""),
    (_edit("prompt.length", KeyError), "field 'prompt.length' is missing"),
    (_edit("base_model", []), "field 'base_model': expected an object, got []"),
    (_edit("metrics", {"meta": {"accuracy_mean": "high"}}), "field 'metrics.meta.accuracy_mean': expected a finite number"),
    (_edit("meta_train_classes", "0,1"), "field 'meta_train_classes': expected a list of integers"),
])
def test_a_hand_edited_metaprompt_json_is_one_error(earlier_run, tmp_path, capsys, edit, message):
    from metaprompt.load import LoadError, load_export

    run, _ = earlier_run
    export = tmp_path / "export"
    assert main(["export", str(run), "--out", str(export)]) == 0
    meta = json.loads((export / "metaprompt.json").read_text())
    edit(meta)
    (export / "metaprompt.json").write_text(json.dumps(meta))
    _expect_error(capsys, ["load", str(export)], str(export / "metaprompt.json"), message)
    with pytest.raises(LoadError, match="hand-edited"):
        load_export(export)


def test_a_hand_edited_results_json_does_not_break_export(earlier_run, tmp_path, capsys):
    run, _ = earlier_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    results = json.loads((copy / "results.json").read_text())
    results["results"][1]["accuracy_mean"] = "93%"
    (copy / "results.json").write_text(json.dumps(results))
    _expect_error(capsys, ["export", str(copy), "--out", str(tmp_path / "x")],
                  "field 'results[1].accuracy_mean': expected a finite number")
    results["results"] = {"meta": 1}
    (copy / "results.json").write_text(json.dumps(results))
    _expect_error(capsys, ["export", str(copy), "--out", str(tmp_path / "x")], "field 'results': expected a list")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_export_of_a_non_finite_init_names_the_runs_file(earlier_run, tmp_path, capsys, value):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run, _ = earlier_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    best = copy / "best.safetensors"
    with safe_open(str(best), "pt") as handle:
        metadata = handle.metadata()
    metadata.pop("header_sha256")  # written by another tool: no checksum, so the tensors are what is checked
    tensors = load_file(str(best))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(best), metadata=metadata)  # what a damaged disk could hold
    err = _expect_error(capsys, ["export", str(copy), "--out", str(tmp_path / "x")], str(best), f"'{name}'",
                        "non-finite")
    assert ".tmp" not in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("text, value", [(str(2**64 - 1), 2**64 - 1), (str(2**53 + 1), 2**53 + 1), ("1e3", 1000),
                                         ("1_000", 1000)])
def test_set_keeps_big_integers_exact(text, value):
    """--set seed=… used to go through float(): 2**53 + 1 silently became 2**53 (another seed)."""
    from metaprompt.config import Config

    assert Config.load(None, [f"seed={text}"]).seed == value
    assert Config.load(None, [f"eval.seed={text}"]).eval.seed == value


def test_full_disk_during_eval_or_export_is_one_error(earlier_run, tmp_path, capsys, monkeypatch):
    import errno

    import metaprompt.run.evaluate as evaluation
    import metaprompt.run.export as exporting

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    run, _ = earlier_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    monkeypatch.setattr(evaluation, "write_text_atomic", full)  # the results file
    _expect_error(capsys, ["eval", str(copy), "--init", "pretrained", "--episodes", "1"], "No space left on device",
                  "run the same command again")
    assert list(copy.glob("*.partial.jsonl"))  # the scored episode is kept
    monkeypatch.setattr(exporting, "write_init_file", full)
    _expect_error(capsys, ["export", str(copy), "--out", str(tmp_path / "x")], "No space left on device",
                  "nothing was written")
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".x")]
