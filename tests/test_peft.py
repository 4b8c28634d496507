"""PEFT baselines and meta-learned PEFT on the tiny model: every method trains, adapts, exports,
reloads, and changes only its own tensors (every other backbone tensor stays bit-identical)."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from metaprompt.cli import main
from metaprompt.config import Config, ConfigError
from metaprompt.meta.algorithms import build_algorithm
from metaprompt.meta.engines import build_engine
from metaprompt.model.backbone import load_backbone
from metaprompt.prompts import PROMPTS
from metaprompt.tuners import TUNERS, baseline_overrides
from metaprompt.run.adaptation import adapt_sgd
from metaprompt.run.checkpoint import load_checkpoint, read_init_file
from metaprompt.run.evaluate import evaluate
from metaprompt.run.export import export_run
from metaprompt.run.setup import build_setup, fixed_episodes
from metaprompt.run.train import CHECKPOINT_FILE, train
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]

# Which backbone tensors each method may change (names relative to the MaskedEncoder).
OWNS = {
    "full": lambda n: True,
    "lora": lambda n: ".lora_A." in n or ".lora_B." in n,
    "ia3": lambda n: ".ia3_l." in n,
    "bitfit": lambda n: n.endswith(".bias"),
    "adapter": lambda n: ".adapter." in n,
}
# Spread the algorithms (and one higher engine) over the methods; maml = second order.
ALGORITHM = {"full": "fomaml", "lora": "maml", "ia3": "reptile", "bitfit": "maml", "adapter": "maml",
             "prompt_tuning": "fomaml", "ptuning": "reptile", "prefix": "maml", "ptuning_v2": "fomaml"}
ENGINE = {"adapter": "higher"}


def _skip_if_missing(method):
    kind = TUNERS.get(method).prompt.get("kind")
    if kind is not None and kind not in PROMPTS:
        pytest.skip(f"prompt.kind={kind} is not implemented yet (prompt zoo, issue #4)")


def _config(tiny_data, model_dir, method, **extra):
    sets = tiny_overrides(tiny_data, model_dir, **{"train.episodes": 2, "train.val_every": 2,
                                                   "train.val_episodes": 1, "eval.episodes": 2, **extra})
    return Config.load(None, [*sets, *baseline_overrides(method)])


def _module_state(setup):
    return {k: v.detach().clone() for k, v in setup.backbone.encoder.state_dict().items()}


def _assert_same(before, setup, when):
    after = setup.backbone.encoder.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"backbone module tensors changed {when}: {changed[:3]}"


def _changed(a, b, prefix):
    return [k for k in a if k.startswith(prefix) and not torch.equal(a[k].detach(), b[k].detach())]


@pytest.mark.parametrize("method", list(TUNERS.names()))
def test_method_trains_adapts_exports(method, tmp_path, tiny_data, tiny_models):
    _skip_if_missing(method)
    model_dir = tiny_models("bert")
    cfg = _config(tiny_data, model_dir, method, **{"meta.algorithm": ALGORITHM[method],
                                                   "meta.engine": ENGINE.get(method, "torch_func")})
    setup = build_setup(cfg)
    encoder = setup.backbone.encoder
    before = _module_state(setup)

    # Injection keeps every pretrained tensor (peft renames wrapped layers' weights to *.base_layer.*).
    pretrained = load_backbone(model_dir).encoder.state_dict()
    injected = {k.replace(".base_layer", ""): v for k, v in before.items()}
    assert all(torch.equal(pretrained[k], injected[k]) for k in pretrained)
    added = set(injected) - set(pretrained)
    side = TUNERS.get(method).side

    # Exactly the method's tensors are trainable (the pooler never reaches the [MASK] state).
    params = setup.classifier.init_params()
    backbone_keys = {k for k in params if k.startswith("backbone.")}
    if side == "backbone":
        expected = {f"backbone.{n}" for n, _ in encoder.named_parameters()
                    if OWNS[method](n) and "pooler" not in n and not n.startswith("model.cls.")}
        assert backbone_keys == expected and expected
        assert all(OWNS[method](k) for k in added)
        assert not any(p.requires_grad for p in encoder.parameters())
    else:
        assert not backbone_keys and not added
        assert setup.classifier.count(params)["prompt"] > 0

    # Adaptation on a support set moves the method's tensors, and nothing in the module.
    algorithm = build_algorithm(cfg.meta, build_engine(cfg.meta.engine), setup.classifier)
    _, episodes = fixed_episodes(setup, "test", 1, cfg.eval.seed)
    fast = adapt_sgd(algorithm, params, setup.task(episodes[0]), cfg.eval)
    assert _changed(params, fast, "backbone." if side == "backbone" else "prompt.")
    _assert_same(before, setup, "by adaptation")

    # Meta-training updates the init of the method's tensors, and nothing in the module.
    run = tmp_path / "run"
    train(cfg, run, setup=setup)
    latest = load_checkpoint(run / CHECKPOINT_FILE)["params"]
    assert set(latest) >= set(params)
    assert _changed(latest, params, "backbone." if side == "backbone" else "prompt.")
    _assert_same(before, setup, "by meta-training")

    results = evaluate(run, inits=("pretrained", "meta"), setup=setup)
    assert results["method"] == method
    assert results["trainable_params"] == setup.classifier.count(params)["total"]
    assert [r["init"] for r in results["results"]] == ["pretrained", "meta"]
    assert all(r["seconds_per_episode"] > 0 for r in results["results"])

    # Export, then reload into a fresh backbone built from the exported config: same predictions.
    out = export_run(run, tmp_path / "export")
    meta = json.loads((out / "metaprompt.json").read_text())
    assert meta["config"]["peft"]["method"] == method
    tensors, _ = read_init_file(out / "init.safetensors")
    fresh = build_setup(Config.from_dict(meta["config"]))
    expected = fresh.classifier.init_params()
    assert {k: v.shape for k, v in expected.items()} == {k: tensors[k].shape for k in expected}
    best, _ = read_init_file(run / "best.safetensors")
    task = setup.task(episodes[0])
    assert torch.equal(setup.classifier.predict(best, task.query, task),
                       fresh.classifier.predict(tensors, task.query, task))


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter"])
def test_injection_is_seeded_and_second_order(method, tiny_data, tiny_models):
    model_dir = tiny_models("bert")
    cfg = _config(tiny_data, model_dir, method, **{"meta.algorithm": "maml"})
    a, b = build_setup(cfg), build_setup(cfg)
    pa, pb = a.classifier.init_params(), b.classifier.init_params()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    other = build_setup(_config(tiny_data, model_dir, method, seed=7)).classifier.init_params()
    if method != "ia3":  # IA3 vectors start at one whatever the seed
        assert any(not torch.equal(pa[k], other[k]) for k in pa if k.startswith("backbone."))

    _, episodes = fixed_episodes(a, "train", 1, 0)
    task = a.task(episodes[0])
    # Identity at init: the pretrained model's [MASK] states, through functional_call and directly.
    plain = load_backbone(model_dir).encoder
    h, _ = a.classifier.encode(pa, task.query)
    h0, _ = plain(task.query.input_ids, task.query.attention_mask, task.query.mask_positions)
    h1, _ = a.backbone.encoder(task.query.input_ids, task.query.attention_mask, task.query.mask_positions)
    assert torch.allclose(h, h0, atol=1e-5) and torch.allclose(h1, h0, atol=1e-5)

    # The meta-gradient on the injected tensors has its Hessian term under second order.
    grads = {}
    for name in ("maml", "fomaml"):
        cfg.meta.algorithm = name
        algorithm = build_algorithm(cfg.meta, build_engine("torch_func"), a.classifier)
        params = a.classifier.init_params()
        algorithm.accumulate(params, task, step=0, total=1)
        grads[name] = {k: p.grad for k, p in params.items() if k.startswith("backbone.")}
    assert all(g is not None and torch.isfinite(g).all() for g in grads["maml"].values())
    assert any(g.abs().sum() > 0 for g in grads["maml"].values())
    assert any(not torch.allclose(grads["maml"][k], grads["fomaml"][k]) for k in grads["maml"])


def test_trainable_counts_on_the_tiny_model(tiny_data, tiny_models):
    # tiny BERT: hidden 32, intermediate 64, 2 layers; MLM head loaded but unused by the soft verbalizer
    model_dir = tiny_models("bert")
    counts = {}
    for method, extra in [("lora", {"peft.lora_r": 4}), ("adapter", {"peft.adapter_size": 8}), ("ia3", {}),
                          ("bitfit", {})]:
        setup = build_setup(_config(tiny_data, model_dir, method, **extra))
        counts[method] = setup.classifier.count(setup.classifier.init_params())["backbone"]
    assert counts["lora"] == 2 * 2 * 4 * (32 + 32)  # layers × (query, value) × r × (in + out)
    assert counts["adapter"] == 2 * 2 * (32 * 8 + 8 + 8 * 32 + 32)  # layers × 2 adapters × (down + up)
    assert counts["ia3"] == 2 * (32 + 32 + 32 + 64)  # key, value, attention output (input side), FFN output
    # biases of q, k, v, attention output, intermediate, output, two LayerNorms per layer + embedding LayerNorm
    assert counts["bitfit"] == 2 * (4 * 32 + 64 + 32 + 2 * 32) + 32


def test_config_errors():
    with pytest.raises(ConfigError, match="freeze_backbone"):
        Config.load(None, ["peft.method=lora", "prompt.length=0", "model.freeze_backbone=false"])
    with pytest.raises(ConfigError, match="peft.lora_r"):
        Config.load(None, ["peft.method=lora", "peft.lora_r=0"])
    with pytest.raises(ConfigError, match="peft.adapter_activation"):
        Config.load(None, ["peft.adapter_activation=sigmoid"])
    with pytest.raises(ConfigError, match="prompt.kind"):
        Config.load(None, ["peft.method=ptuning"])
    with pytest.raises(ConfigError, match="Did you mean 'lora'"):
        Config.load(None, ["peft.method=lorra"])
    with pytest.raises(ConfigError, match="ia3_feedforward"):
        Config.load(None, ["peft.ia3_targets=key,value", "peft.ia3_feedforward=output.dense"])


def test_baseline_configs_match_method_defaults():
    for method in TUNERS.names():
        path = ROOT / "configs" / "baselines" / f"{method}.yaml"
        data = yaml.safe_load(path.read_text())
        assert data["peft"]["method"] == method, path
        for key, value in TUNERS.get(method).defaults.items():
            section, name = key.split(".")
            assert data[section][name] == value, f"{path}: {key} is {data[section][name]!r}, the method says {value!r}"
        if TUNERS.get(method).prompt.get("kind", "embedding") in PROMPTS:
            Config.load(path)  # valid as it stands


def _config_file(path, overrides):
    data = {}
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        data.setdefault(section, {})[name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_baseline_cli_pretrained_then_meta(tmp_path, tiny_data, tiny_models, capsys):
    # Precedence: the --config file < the method's defaults < --set.
    config = _config_file(tmp_path / "tiny.yaml", tiny_overrides(
        tiny_data, tiny_models("bert", mlm_head=False), **{"eval.episodes": 2, "train.episodes": 2,
                                                           "train.val_episodes": 1}))
    sets = ["--config", config]
    pre = tmp_path / "pre"
    assert main(["baseline", "--method", "lora", "--init", "pretrained", "--out", str(pre), *sets]) == 0
    results = json.loads((pre / "results.json").read_text())
    assert results["method"] == "lora" and results["meta_init"] is None
    assert [r["init"] for r in results["results"]] == ["pretrained"]
    # LoRA r=8 on query, value + the verbalizer's scale; the file's 2 prompt tokens gave way to prompt.length=0
    assert results["trainable_params"] == 2 * 2 * 8 * 64 + 1
    assert results["config"]["meta"]["inner_lr"] == TUNERS.get("lora").defaults["meta.inner_lr"]
    assert not (pre / "best.safetensors").exists()

    meta = tmp_path / "meta"
    assert main(["baseline", "--method", "bitfit", "--init", "meta", "--out", str(meta), *sets,
                 "--set", "meta.inner_lr=0.05"]) == 0
    results = json.loads((meta / "results.json").read_text())
    assert [r["init"] for r in results["results"]] == ["meta"]
    assert results["config"]["meta"]["inner_lr"] == 0.05  # --set beats the method default
    # The run directory works with the ordinary commands.
    assert main(["eval", str(meta), "--episodes", "2"]) == 0
    assert main(["export", str(meta), "--out", str(tmp_path / "export")]) == 0
    assert main(["baseline", "--method", "lora", "--out", str(pre), *sets]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
