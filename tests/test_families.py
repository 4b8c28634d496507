"""BERT, RoBERTa and DistilBERT (tiny random models): their special tokens, mask tokens and
word pieces differ, and templates, prompts and verbalizers must work for each."""
import re

import pytest
import torch

from metaprompt.config import Config
from metaprompt.model.backbone import ModelLoadError, load_backbone
from metaprompt.model.template import TemplateEncoder, builtin_templates
from metaprompt.run.evaluate import evaluate
from metaprompt.run.setup import build_setup
from metaprompt.run.train import train
from tests.conftest import tiny_overrides

FAMILIES = ("bert", "roberta", "distilbert")
TEXT = "goal match team"


def _squash(text: str) -> str:
    return "".join(text.lower().split())


def _segments(template: str, text: str) -> list[str]:
    """The literal text between the [P] and [MASK] markers, spaces removed."""
    return [_squash(part) for part in re.split(r"\[P\]|\[MASK\]", template.replace("{text}", text))]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("index", [0, 1, 2])
def test_template_puts_mask_and_prompt_slots_in_place(tiny_models, family, index):
    backbone = load_backbone(tiny_models(family))
    tok = backbone.tokenizer
    template_text = builtin_templates("huffpost")[index]
    template = TemplateEncoder(template_text, tok, prompt_length=3, max_length=48, max_text_tokens=16)
    (text_ids,) = template.tokenize_texts([TEXT])
    batch = template.batch([text_ids], [0])
    ids = batch.input_ids[0].tolist()
    mask_pos = int(batch.mask_positions[0])
    slots = batch.prompt_positions[0].tolist()
    # Special tokens around the sequence, as the tokenizer itself puts them.
    full = tok.encode("x", add_special_tokens=True)
    assert ids[0] == full[0] and ids[-1] == full[-1] and ids[0] != ids[1]
    assert ids[mask_pos] == tok.mask_token_id and ids.count(tok.mask_token_id) == 1
    assert len(slots) == 3 and slots == list(range(slots[0], slots[0] + 3))
    assert all(ids[p] == template.slot_id for p in slots)
    if index == 2:
        assert slots[0] == 1  # "[P] topic : [MASK] ...": the prompt opens the sequence
    # Between the markers lie exactly the template's words and the text.
    cuts = sorted([(slots[0], slots[-1] + 1), (mask_pos, mask_pos + 1)])
    body = (1, len(ids) - 1)
    pieces = [ids[body[0]:cuts[0][0]], ids[cuts[0][1]:cuts[1][0]], ids[cuts[1][1]:body[1]]]
    decoded = [_squash(tok.decode(p)) for p in pieces]
    assert decoded == _segments(template_text, TEXT), (family, [tok.convert_ids_to_tokens(p) for p in pieces])


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_vectors_land_in_the_slots(tiny_models, family):
    backbone = load_backbone(tiny_models(family))
    template = TemplateEncoder("{text} , [P] topic is [MASK] .", backbone.tokenizer, 2, 48, 16)
    batch = template.batch(template.tokenize_texts([TEXT, "rain storm"]), [0, 1])
    hidden = backbone.hidden_size
    prompt = torch.randn(2, hidden)
    captured = {}
    handle = backbone.encoder.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True)
    try:
        backbone.encoder(batch.input_ids, batch.attention_mask, batch.mask_positions, batch.prompt_positions, prompt)
    finally:
        handle.remove()
    embeds = captured["inputs_embeds"]
    plain = backbone.encoder.embed_tokens(batch.input_ids)
    for row in range(2):
        slots = batch.prompt_positions[row]
        torch.testing.assert_close(embeds[row, slots], prompt)
        others = torch.ones(embeds.shape[1], dtype=torch.bool)
        others[slots] = False
        torch.testing.assert_close(embeds[row, others], plain[row, others])


CASES = [(f, "embedding", "soft") for f in FAMILIES] + [(f, "embedding", "label_words") for f in FAMILIES]
CASES += [("bert", "prefix", "soft"), ("roberta", "prefix", "soft")]


@pytest.mark.parametrize("family,kind,verbalizer", CASES)
def test_train_and_eval(tmp_path, tiny_data, tiny_models, family, kind, verbalizer):
    overrides = tiny_overrides(tiny_data, tiny_models(family), **{
        "prompt.kind": kind, "verbalizer.kind": verbalizer, "train.episodes": 2, "train.val_episodes": 1,
        "eval.episodes": 2, "eval.reference": False})
    cfg = Config.load(None, overrides)
    setup = build_setup(cfg)
    # Every text of the data set fits, with its [MASK] and prompt slots.
    task = setup.task(setup.sampler("train", cfg.seed).episode(0), 0)
    for batch in (task.support, task.query):
        rows = torch.arange(len(batch))
        assert (batch.input_ids[rows, batch.mask_positions] == setup.backbone.tokenizer.mask_token_id).all()
        assert batch.prompt_positions.shape[1] == (0 if kind == "prefix" else cfg.prompt.length)
    summary = train(cfg, tmp_path / "run", setup=setup)
    assert summary["episodes"] == 2 and summary["skipped_steps"] == 0
    results = evaluate(tmp_path / "run")
    assert [r["init"] for r in results["results"]] == ["pretrained", "meta"]


def test_distilbert_cannot_take_prefixes(tiny_config):
    with pytest.raises(ModelLoadError, match="prompt.kind=prefix .*'distilbert'"):
        build_setup(tiny_config(family="distilbert", **{"prompt.kind": "prefix"}))
