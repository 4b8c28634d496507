"""Export: peft adapters that reproduce metaprompt's classifier, native exports that `load_init`
reads back, and clear errors for corrupted or mismatched exports (tiny random models).

The peft side of each round trip (``_peft_scores``) uses transformers, peft, safetensors and
the export's JSON only: no metaprompt code is on that path."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metaprompt.cli import main
from metaprompt.config import Config
from metaprompt.run.checkpoint import write_init_file
from metaprompt.run.export import ExportError, export_run
from metaprompt.run.setup import build_setup
from tests.conftest import tiny_overrides

TOL = 1e-5

# design → config overrides; every design exported to peft (the template puts [P] first: exact)
DESIGNS = {
    "embedding": {"prompt.kind": "embedding"},
    "ptuning": {"prompt.kind": "ptuning", "prompt.hidden_size": 8},
    "prefix": {"prompt.kind": "prefix"},
    "prefix_projection": {"prompt.kind": "prefix", "prompt.prefix_projection": True, "prompt.hidden_size": 8},
    "lora": {"peft.method": "lora", "prompt.length": 0, "peft.lora_r": 2},
    "ia3": {"peft.method": "ia3", "prompt.length": 0},
}
# Designs whose export check runs over ~10 s (marked slow; make test-fast leaves them out).
SLOW_DESIGNS = {"ptuning", "prefix", "prefix_projection", "ia3"}
FIRST = "[P] {text} . topic is [MASK] ."


def _fake_run(tmp_path, tiny_data, model_dir, name="run", seed=0, **extra):
    """A run directory whose 'learned' init is the pretrained one plus noise, so that every tensor
    matters (LoRA's B starts at zero, IA3 at one: an export that dropped them would still pass)."""
    cfg = Config.load(None, tiny_overrides(tiny_data, model_dir, **{"prompt.template": FIRST, **extra}))
    setup = build_setup(cfg)
    generator = torch.Generator().manual_seed(seed)
    params = {k: (v + 0.05 * torch.randn(v.shape, generator=generator)).detach()
              for k, v in setup.classifier.init_params().items()}
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(cfg.to_yaml())
    write_init_file(run / "best.safetensors", params, {"step": 1, "val_accuracy": 0.5})
    return run, setup, params


def _task(setup):
    return setup.task(setup.sampler("test", 3).episode(0))


def _metaprompt_scores(setup, params, task):
    with torch.no_grad():
        h, vocab = setup.classifier.encode(params, task.query, want_vocab=setup.backbone.has_mlm_head)
        scores = setup.classifier(params, task.query, task)
    return h, vocab, scores


def _peft_scores(export_dir: Path, texts, classes, trainable=False):
    """[MASK] states, MLM logits and soft-verbalizer scores from transformers + peft alone.
    ``trainable``: build the model the way one continues training a prompt adapter."""
    import transformers
    from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    meta = json.loads((export_dir / "metaprompt.json").read_text())
    p = meta["peft"]
    auto = getattr(transformers, p["auto_class"])
    model = auto.from_pretrained(str(export_dir / p["base_model_dir"]) if p.get("base_model_dir")
                                 else meta["base_model"]["path"])
    if p.get("backbone_adapter") not in (None, "."):
        model = PeftModel.from_pretrained(model, str(export_dir / p["backbone_adapter"])).merge_and_unload()
    table = model.get_input_embeddings().weight.detach()
    if trainable and p.get("prompt_peft_type"):
        config = PeftConfig.from_pretrained(str(export_dir))
        config.inference_mode = False
        model = get_peft_model(model, config)
        set_peft_model_state_dict(model, load_file(str(export_dir / "adapter_model.safetensors")))
    elif p["adapter"]:
        model = PeftModel.from_pretrained(model, str(export_dir), is_trainable=trainable)
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(meta["base_model"]["path"])
    spec = p["input_ids"]
    lead = " " if spec["text_leading_space"] else ""
    rows = [spec["before_text"] + tok(lead + t, add_special_tokens=False, truncation=True,
                                      max_length=spec["text_max_tokens"]).input_ids + spec["after_text"]
            for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    kwargs = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True}
    if p["position_ids"]:
        kwargs["position_ids"] = (p["position_ids"]["start"] + torch.arange(width)).expand(len(rows), width)
    with torch.no_grad():
        out = model(**kwargs)
    at = torch.tensor([r.index(p["mask_token_id"]) for r in rows]) + p["output_offset"]
    rows_ = torch.arange(len(rows))
    h = out.hidden_states[-1][rows_, at]
    vocab = out.logits[rows_, at] if hasattr(out, "logits") and out.logits is not None else None
    verbalizer = load_file(str(export_dir / p["verbalizer_file"]))
    if "log_scale" not in verbalizer:  # a verbalizer without a temperature (label words)
        return h, vocab, None, meta
    emb = torch.stack([torch.stack([table[torch.tensor(w)].mean(0) for w in meta["label_word_ids"][str(c)]]).mean(0)
                       for c in classes])
    scores = verbalizer["log_scale"].exp() * (F.normalize(h, dim=-1) @ F.normalize(emb, dim=-1).T)
    return h, vocab, scores, meta


@pytest.mark.parametrize("design", [pytest.param(d, marks=pytest.mark.slow) if d in SLOW_DESIGNS else d
                                    for d in DESIGNS])
def test_peft_export_gives_metaprompt_scores(design, tmp_path, tiny_data, tiny_models):
    run, setup, params = _fake_run(tmp_path, tiny_data, tiny_models("bert"), **DESIGNS[design])
    out = export_run(run, tmp_path / "peft", fmt="peft")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    task = _task(setup)
    texts = [setup.dataset.texts[i] for i in setup.sampler("test", 3).episode(0).query]
    h0, vocab0, scores0 = _metaprompt_scores(setup, params, task)
    h1, vocab1, scores1, meta = _peft_scores(out, texts, task.classes)
    p = meta["peft"]
    assert p["exact"] and p["verified_max_abs_diff"] < TOL
    assert (h1 - h0).abs().max() < TOL
    assert (vocab1 - vocab0).abs().max() < TOL
    assert (scores1 - scores0).abs().max() < TOL
    expected_type = {"lora": "LORA", "ia3": "IA3", "prefix": "PREFIX_TUNING", "prefix_projection": "PREFIX_TUNING"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == expected_type.get(design, "PROMPT_TUNING") == p["peft_type"]
    # A peft model built for further training starts from the same function.
    h2, _, _, _ = _peft_scores(out, texts, task.classes, trainable=True)
    assert (h2 - h0).abs().max() < TOL
    # The noise matters: the pretrained init scores differently, so the adapter was really loaded.
    _, _, pretrained = _metaprompt_scores(setup, setup.classifier.init_params(), task)
    assert (pretrained - scores0).abs().max() > 1e-3


@pytest.mark.slow
def test_prefix_positions_on_roberta(tmp_path, tiny_data, tiny_models):
    # RoBERTa-style position ids start after the padding index; the recipe must follow them.
    run, setup, params = _fake_run(tmp_path, tiny_data, tiny_models("roberta"), **DESIGNS["prefix"])
    out = export_run(run, tmp_path / "peft", fmt="peft")
    task = _task(setup)
    texts = [setup.dataset.texts[i] for i in setup.sampler("test", 3).episode(0).query]
    h0, _, scores0 = _metaprompt_scores(setup, params, task)
    h1, _, scores1, meta = _peft_scores(out, texts, task.classes)
    assert meta["peft"]["position_ids"]["start"] == setup.backbone.config.pad_token_id + 1 - 2
    assert (h1 - h0).abs().max() < TOL and (scores1 - scores0).abs().max() < TOL


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bitfit", "lora", "full"])
def test_backbone_and_prompt_together(method, tmp_path, tiny_data, tiny_models):
    """A prompt on top of learned backbone weights: bitfit, full → base_model/ + prompt adapter;
    LoRA → backbone_adapter/ (merged first) + prompt adapter. ``full`` is MetaPrompting's setting:
    P-tuning prompt, label words, every backbone weight tuned (the word embeddings too)."""
    extra = {"peft.method": method, "prompt.kind": "embedding", "verbalizer.kind": "label_words"}
    if method == "full":
        extra = {"model.freeze_backbone": False, "prompt.kind": "ptuning", "prompt.hidden_size": 8,
                 "verbalizer.kind": "label_words"}
    run, setup, params = _fake_run(tmp_path, tiny_data, tiny_models("bert"), **extra)
    out = export_run(run, tmp_path / "peft", fmt="peft")
    p = json.loads((out / "metaprompt.json").read_text())["peft"]
    assert (out / ("backbone_adapter" if method == "lora" else "base_model")).is_dir()
    assert p["prompt_peft_type"] == "PROMPT_TUNING" and p["exact"]
    task = _task(setup)
    texts = [setup.dataset.texts[i] for i in setup.sampler("test", 3).episode(0).query]
    h0, vocab0, scores0 = _metaprompt_scores(setup, params, task)
    h1, vocab1, _, _ = _peft_scores(out, texts, task.classes)
    assert (h1 - h0).abs().max() < TOL and (vocab1 - vocab0).abs().max() < TOL
    # label-word verbalizer: the mean MLM logit of each class's first word pieces
    meta = json.loads((out / "metaprompt.json").read_text())
    first = [[w[0] for w in meta["label_word_ids"][str(c)]] for c in task.classes]
    scores1 = torch.stack([vocab1[:, ids].mean(1) for ids in first], dim=1)
    assert (scores1 - scores0).abs().max() < TOL


def test_mid_template_prompt_is_flagged_and_equals_the_moved_prompt(tmp_path, tiny_data, tiny_models):
    mid = "{text} . [P] topic is [MASK] ."
    run, setup, params = _fake_run(tmp_path, tiny_data, tiny_models("bert"), **{"prompt.template": mid})
    out = export_run(run, tmp_path / "peft", fmt="peft")
    meta = json.loads((out / "metaprompt.json").read_text())
    p = meta["peft"]
    assert not p["exact"] and "prepends" in p["not_exact_because"] and p["verified_max_abs_diff"] is None
    assert "Not exact" in (out / "README.md").read_text()
    # What peft computes is metaprompt's classifier with the prompt moved to the front.
    moved = Config.load(None, tiny_overrides(tiny_data, tiny_models("bert"),
                                             **{"prompt.template": p["equivalent_template"]}))
    moved_setup = build_setup(moved)
    task = _task(moved_setup)
    texts = [moved_setup.dataset.texts[i] for i in moved_setup.sampler("test", 3).episode(0).query]
    h0, _, _ = _metaprompt_scores(moved_setup, params, task)
    h1, _, _, _ = _peft_scores(out, texts, task.classes)
    assert (h1 - h0).abs().max() < TOL


@pytest.mark.parametrize("design", ["pool", "adapter"])
def test_designs_without_peft_equivalent_export_natively(design, tmp_path, tiny_data, tiny_models, capsys):
    extra = {"prompt.kind": "pool", "prompt.pool_size": 2} if design == "pool" else \
        {"peft.method": "adapter", "prompt.length": 0, "peft.adapter_size": 4}
    run, _, _ = _fake_run(tmp_path, tiny_data, tiny_models("bert"), **extra)
    out = tmp_path / "peft"
    assert main(["export", str(run), "--out", str(out), "--format", "peft"]) == 0
    said = capsys.readouterr().out
    reason = {"pool": "instance-dependent", "adapter": "Houlsby"}[design]
    assert reason in said and reason in (out / "README.md").read_text()
    assert not (out / "adapter_config.json").exists() and (out / "init.safetensors").is_file()
    meta = json.loads((out / "metaprompt.json").read_text())
    assert meta["peft"]["available"] is False and reason in meta["peft"]["reason"]
    assert {"pool": "prompt pool", "adapter": "Houlsby adapter"}[design] in meta["title"]


def test_native_export_loads_back_with_identical_predictions(tmp_path, tiny_data, tiny_models, capsys):
    import metaprompt

    run, setup, params = _fake_run(tmp_path, tiny_data, tiny_models("bert"), **DESIGNS["ptuning"])
    out = tmp_path / "native"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "init.safetensors", "metaprompt.json"]
    from metaprompt.load import load_export

    init = load_export(out)
    assert init.format == "native" and init.config.prompt.kind == "ptuning"
    assert all(torch.equal(init.tensors[k], params[k]) for k in params)
    fresh = init.build_setup()
    loaded = init.params(fresh)
    assert all(v.requires_grad and v.is_leaf for v in loaded.values())
    task = _task(setup)
    assert torch.equal(setup.classifier.predict(params, task.query, task),
                       fresh.classifier.predict(loaded, task.query, task))
    with torch.no_grad():
        assert torch.equal(setup.classifier(params, task.query, task), fresh.classifier(loaded, task.query, task))
    # metaprompt.load_init builds the same classifier and init from the export.
    classifier, same = metaprompt.load_init(out)
    assert all(torch.equal(same[k].cpu(), params[k].detach().cpu()) for k in params)
    assert torch.equal(classifier.predict(same, task.query, task), setup.classifier.predict(params, task.query, task))
    # ... and takes tasks of new data with their own label words (the notebook path of docs/export.md).
    data = metaprompt.EpisodeData.from_texts([f"{w} text {i}" for w in ("alpha", "beta", "gamma") for i in range(3)],
                                             [w for w in ("alpha", "beta", "gamma") for _ in range(3)],
                                             splits={"test": ["alpha", "beta", "gamma"]})
    new = next(data.episodes("test", n_way=3, k_shot=1, n_query=2, seed=0, count=1))
    result = metaprompt.evaluate(classifier, same, [new], adapt="sgd", steps=1)
    assert len(result) == 1 and 0.0 <= result.mean <= 1.0
    # `metaprompt load` describes it; a second export into the same directory is refused.
    assert main(["load", str(out)]) == 0
    said = capsys.readouterr().out
    assert "prompt.lstm.weight_ih_l0" in said and "native export" in said
    with pytest.raises(ExportError, match="already exists"):
        export_run(run, out)


def _corrupt(tmp_path, source, name, change):
    import shutil

    target = tmp_path / name
    shutil.copytree(source, target)
    change(target)
    return target


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_corrupted_and_mismatched_exports_give_clear_errors(tmp_path, tiny_data, tiny_models, capsys):
    from metaprompt.load import LoadError, load_export

    run, _, _ = _fake_run(tmp_path, tiny_data, tiny_models("bert"), **DESIGNS["embedding"])
    good = export_run(run, tmp_path / "good", fmt="peft")
    assert load_export(good).format == "peft"
    assert main(["load", str(good)]) == 0
    assert "PROMPT_TUNING, exact" in capsys.readouterr().out
    cases = {
        "truncated init": (lambda d: _truncate(d / "init.safetensors"), "not a readable safetensors"),
        "truncated adapter": (lambda d: _truncate(d / "adapter_model.safetensors"), "adapter_model.safetensors"),
        "bad json": (lambda d: (d / "metaprompt.json").write_text('{"format": "metaprompt.export/v1", '),
                     "not valid JSON"),
        "bad adapter json": (lambda d: (d / "adapter_config.json").write_text("{"), "adapter_config.json"),
        "no metadata": (lambda d: (d / "metaprompt.json").unlink(), "not a metaprompt export"),
        "hidden size": (lambda d: _edit_json(d / "metaprompt.json",
                                             lambda m: m["base_model"].update(hidden_size=64)), "hidden size"),
    }
    for name, (change, message) in cases.items():
        broken = _corrupt(tmp_path, good, name.replace(" ", "_"), change)
        with pytest.raises(LoadError, match=message):
            load_export(broken)
        assert main(["load", str(broken)]) == 2, name
        assert message in capsys.readouterr().err, name
    # Another base model: a clear error before any forward pass.
    other = tiny_models("roberta")
    with pytest.raises(LoadError, match="does not fit"):
        load_export(good, model=other)
    assert main(["load", str(good), "--model", other]) == 2
    assert "vocab_size" in capsys.readouterr().err
    with pytest.raises(LoadError, match="does not fit"):
        load_export(good).build_setup(f"model.name={other}")
