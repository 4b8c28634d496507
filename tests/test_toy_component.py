"""A component added in one file (tests/toy_prompt.py) works everywhere: config, training, export."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from metaprompt.cli import main
from metaprompt.config import Config
from metaprompt.errors import ConfigError
from metaprompt.run.checkpoint import write_init_file
from metaprompt.run.setup import build_setup
from tests.conftest import tiny_overrides
from tests.tiny import meta_grad


def test_a_prompt_kind_in_one_file_is_configured_trained_and_exported(tmp_path, tiny_data, tiny_models, capsys):
    sets = tiny_overrides(tiny_data, tiny_models("bert"), **{"prompt.kind": "toy_gated"})
    from metaprompt.prompts import PROMPTS

    if "toy_gated" not in PROMPTS:  # unknown until its file is imported
        with pytest.raises(ConfigError, match="prompt.kind.*unknown value 'toy_gated'"):
            Config.load(None, sets)
    from tests.toy_prompt import GatedPrompt

    cfg = Config.load(None, sets)
    assert cfg.prompt.spec() == GatedPrompt(length=2, init="text", init_text="the topic")

    # One meta-training step: the gate is a meta-parameter and gets a gradient.
    setup = build_setup(cfg)
    task = setup.task(setup.sampler("train", cfg.seed).episode(0), 0)
    grads = meta_grad(cfg, setup, task, "fomaml")
    assert set(grads) >= {"prompt.embeds", "prompt.gate"} and float(grads["prompt.gate"].abs()) > 0

    # Export: the title and the card name it; peft export says why there is none.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(cfg.to_yaml())
    params = {k: v.detach() + 0.01 for k, v in setup.classifier.init_params().items()}
    write_init_file(run / "best.safetensors", params, {"step": 1, "val_accuracy": 0.5})
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out), "--format", "peft"]) == 0
    meta = json.loads((out / "metaprompt.json").read_text())
    assert meta["title"] == "Meta-learned init: gated toy prompt, soft verbalizer"
    assert meta["peft"] == {"available": False, "reason": GatedPrompt.no_peft_reason}
    card = (out / "README.md").read_text()
    assert "# Meta-learned init: gated toy prompt" in card and "`toy_gated`, 2 tokens" in card
    assert GatedPrompt.no_peft_reason in card
    assert torch.equal(load_file(out / "init.safetensors")["prompt.gate"], params["prompt.gate"])
