"""The compatibility module: what it detects by behaviour, and that nothing else touches internals."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from metaprompt import compat
from metaprompt.model.backbone import ModelLoadError, load_backbone

PACKAGE = Path(compat.__file__).parent

# What only metaprompt/compat.py may name (the grep, plus the other internals it wraps).
INTERNALS = re.compile(r"past_key_values|_attn_implementation|torch\._C|_reparametrize_module|"
                       r"_cur_sdpa_kernel_backends|GradientCheckpointingLayer|DynamicCache|prompt_encoder\[")


def test_internals_are_named_only_in_the_compat_module():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if INTERNALS.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_cache_argument_is_found_by_behaviour_and_fills_every_layer(tiny_models, family):
    backbone = load_backbone(tiny_models(family))
    name = backbone.encoder.cache_argument
    assert name in compat.CACHE_ARGUMENTS
    cache = compat.new_cache()
    embeds = torch.randn(1, 5, backbone.hidden_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the name found is the current one: no deprecation
        backbone.encoder.transformer(inputs_embeds=embeds, attention_mask=torch.ones(1, 5, dtype=torch.long),
                                 **{name: cache})
    pairs = compat.cache_pairs(cache)
    assert len(pairs) == backbone.config.num_hidden_layers
    assert all(k.shape[-2] == 5 and v.shape[-2] == 5 for k, v in pairs)


def test_an_encoder_without_a_cache_has_no_cache_argument(tiny_models):
    backbone = load_backbone(tiny_models("distilbert"))
    assert backbone.encoder.cache_argument is None
    with pytest.raises(ModelLoadError, match="takes no such cache") as err:
        backbone.encoder.check_prefix_support()
    assert "do)" not in str(err.value)  # the old message contradicted itself


def test_a_name_the_encoder_swallows_is_not_taken_for_a_cache(tiny_models, monkeypatch):
    """An unknown keyword that the encoder's **kwargs swallows leaves the cache empty: rejected."""
    backbone = load_backbone(tiny_models("bert"))
    monkeypatch.setattr(compat, "CACHE_ARGUMENTS", ("no_such_cache_argument",))
    assert compat.find_cache_argument(backbone.encoder.transformer) is None


@pytest.mark.parametrize("family, start", [("bert", 0), ("distilbert", 0), ("roberta", None)])
def test_first_position_and_max_positions(tiny_models, family, start):
    backbone = load_backbone(tiny_models(family))
    cfg = backbone.config
    if start is None:  # RoBERTa: after the padding index
        start = cfg.pad_token_id + 1
    assert backbone.encoder.first_position == start
    assert backbone.max_positions == cfg.max_position_embeddings - start


def test_explicit_positions_from_first_position_reproduce_the_encoder(tiny_models):
    backbone = load_backbone(tiny_models("roberta"))
    enc = backbone.encoder
    embeds = torch.randn(2, 6, backbone.hidden_size)
    mask = torch.ones(2, 6, dtype=torch.long)
    own = enc.transformer(inputs_embeds=embeds, attention_mask=mask)[0]
    ids = torch.arange(enc.first_position, enc.first_position + 6).expand(2, 6)
    given = enc.transformer(inputs_embeds=embeds, attention_mask=mask, position_ids=ids)[0]
    torch.testing.assert_close(own, given)
    shifted = enc.transformer(inputs_embeds=embeds, attention_mask=mask, position_ids=ids + 1)[0]
    assert not torch.allclose(own, shifted, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_mlm_head_found_for_known_families_and_absent_without_one(tiny_models, family):
    with_head = load_backbone(tiny_models(family)).encoder.model
    head = compat.mlm_head(with_head)
    assert head is not None
    hidden = torch.randn(3, with_head.get_input_embeddings().weight.shape[1])
    assert head(hidden).shape == (3, with_head.config.vocab_size)
    bare = load_backbone(tiny_models(family, mlm_head=False)).encoder.model
    assert compat.mlm_head(bare) is None


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_transformer_blocks_are_the_layers(tiny_models, family):
    model = load_backbone(tiny_models(family)).encoder.model
    layers = getattr(model.config, "num_hidden_layers", None) or model.config.n_layers
    assert len(compat.transformer_blocks(model)) == layers


def test_attention_implementation_and_math_kernel(tiny_models):
    model = load_backbone(tiny_models("bert"), attn_implementation="eager").encoder.model
    assert compat.attention_implementation(model) == "eager"
    assert compat.attention_implementation(load_backbone(tiny_models("bert")).encoder.model) == "sdpa"
    from torch.nn.attention import SDPBackend

    with compat.math_attention():
        assert compat.current_sdpa_backends() == [SDPBackend.MATH]


def test_functorch_transform_is_detected():
    seen = []

    def f(x):
        seen.append(compat.in_functorch_transform())
        return (x ** 2).sum()

    torch.func.grad(f)(torch.ones(2))
    assert seen == [True] and not compat.in_functorch_transform()


def test_reparametrized_runs_a_module_with_other_weights():
    layer = torch.nn.Linear(2, 1, bias=False)
    other = {"weight": torch.full((1, 2), 3.0)}
    with compat.reparametrized(layer, other):
        assert layer(torch.ones(1, 2)).item() == 6.0
    assert layer.weight is not other["weight"]


def test_peft_names_match_what_peft_builds(tiny_models):
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    path = tiny_models("bert")
    injected = load_backbone(path).encoder.model
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, bias="none"), injected)
    ours = [n for n, _ in injected.named_parameters() if compat.peft_tensor_filter("lora")(n)]
    assert ours and not any(compat.peft_tensor_filter("ia3")(n) for n in ours)
    wrapped = get_peft_model(load_backbone(path).encoder.model, LoraConfig(r=2, lora_alpha=4, bias="none"))
    theirs = compat.peft_adapter_tensors(wrapped)
    assert sorted(theirs) == sorted(compat.peft_model_name(n) for n in ours)


def test_peft_prompt_table_and_saved_key(tiny_models, tmp_path):
    from peft import PromptTuningConfig, get_peft_model
    from safetensors import safe_open

    model = get_peft_model(load_backbone(tiny_models("bert")).encoder.model,
                           PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3))
    table = compat.peft_prompt_table(model)
    assert tuple(table.shape) == (3, model.config.hidden_size)
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        assert compat.PEFT_PROMPT_KEY in list(f.keys())
