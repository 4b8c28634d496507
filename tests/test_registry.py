"""Registries of named components, and prompt/verbalizer specs built from plain arguments."""
from __future__ import annotations

import pytest

import metaprompt.prompts as prompts
import metaprompt.verbalizers as verbalizers
from metaprompt.config import Config
from metaprompt.errors import ConfigError, UserError
from metaprompt.registry import Registry, UnknownComponentError


def test_registry_register_get_names_and_suggestion():
    reg = Registry("widget", attribute="kind")

    @reg.register("round")
    class Round:
        pass

    @reg.register("square")
    class Square:
        pass

    assert reg.names() == ("round", "square") and "round" in reg and "oval" not in reg and len(reg) == 2
    assert reg.get("square") is Square and Square.kind == "square"
    with pytest.raises(UnknownComponentError, match=r"unknown widget 'sqare'; choose one of round, square\. "
                                                    r"Did you mean 'square'\?") as err:
        reg.get("sqare")
    assert isinstance(err.value, UserError)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("round")(Square)


def test_builtin_kinds_are_registered_in_documented_order():
    assert prompts.PROMPTS.names()[:4] == ("embedding", "ptuning", "prefix", "pool")  # + kinds tests add
    assert verbalizers.VERBALIZERS.names() == ("label_words", "soft", "proto", "repverb", "hybrid", "ridge")
    assert prompts.PROMPTS.get("embedding") is prompts.SoftPrompt and prompts.SoftPrompt.kind == "embedding"
    assert verbalizers.VERBALIZERS.get("repverb") is verbalizers.Rep


def test_specs_from_plain_arguments():
    spec = prompts.SoftPrompt(length=8, init="text", init_text="the news article")
    assert (spec.length, spec.shallow_length, spec.has_prompt) == (8, 8, True)
    assert prompts.Prefix(length=3).shallow_length == 0 and prompts.Prefix(length=3).has_prompt
    assert prompts.SoftPrompt(length=0).has_prompt is False
    assert verbalizers.Soft(scale=10.0).scale == 10.0
    assert verbalizers.Proto(distance="cosine").distance == "cosine"
    assert verbalizers.LabelWords.needs_vocab() and not verbalizers.Soft.needs_vocab()
    with pytest.raises(ConfigError, match="prompt.kind=pool needs at least one prompt token"):
        prompts.Pool(length=0)
    with pytest.raises(ConfigError, match="verbalizer.distance.*Did you mean 'euclidean'"):
        verbalizers.Proto(distance="euclidian")
    with pytest.raises(ConfigError, match="verbalizer.scale"):
        verbalizers.Rep(scale=-1.0)


def test_config_builds_specs_through_the_registries():
    cfg = Config.load(None, ["prompt.kind=ptuning", "prompt.hidden_size=16", "verbalizer.kind=proto",
                             "verbalizer.distance=euclidean"])
    assert cfg.prompt.spec() == prompts.PTuning(length=cfg.prompt.length, init=cfg.prompt.init,
                                                init_text=cfg.prompt.init_text, hidden_size=16)
    assert cfg.verbalizer.spec() == verbalizers.Proto(scale=10.0, learn_transform=False, distance="euclidean")
    with pytest.raises(ConfigError, match="choose one of embedding, ptuning, prefix, pool"):
        Config.load(None, ["prompt.kind=soft"])
