"""The pieces of the prototype recipe: mean-pooled readout, label-word prototypes, ProtoNet."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import metaprompt as mp
from metaprompt.errors import ConfigError
from metaprompt.model.template import TemplateError


@pytest.fixture(scope="module")
def backbone(tiny_models):
    return mp.Backbone.from_pretrained(tiny_models("bert", mlm_head=False))


def _clf(backbone, template, verbalizer, length=2):
    return mp.PromptClassifier(backbone, template=mp.Template(template, max_length=32, max_text_tokens=12),
                               prompt=mp.prompts.SoftPrompt(length=length, init="random"), verbalizer=verbalizer,
                               label_words={0: ["alpha"], 1: ["beta", "gamma"]})


def test_a_template_without_mask_reads_the_mean_of_the_text_states(backbone):
    clf = _clf(backbone, "[P] {text}", mp.verbalizers.Proto())
    params = clf.init_params()
    batch = clf.batch(["one two three", "four"])
    pooled, _ = clf.encode(params, batch)
    # by hand: the same forward, read at every real position but the prompt slots
    embeds = clf.encoder.embed_tokens(batch.input_ids)
    index = batch.prompt_positions.unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
    embeds = embeds.scatter(1, index, params["prompt.embeds"].unsqueeze(0).expand(2, -1, -1))
    hidden = clf.encoder.transformer(inputs_embeds=embeds, attention_mask=batch.attention_mask)[0]
    for row in range(2):
        keep = [t for t in range(batch.input_ids.shape[1])
                if batch.attention_mask[row, t] and t not in batch.prompt_positions[row].tolist()]
        torch.testing.assert_close(pooled[row], hidden[row, keep].mean(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(TemplateError, match="at most one"):
        mp.Template("{text} [MASK] [MASK]")


def test_label_word_prototypes_start_at_the_share_and_are_learned(backbone):
    verbalizer = mp.verbalizers.Proto(label_word_share=0.25)
    clf = _clf(backbone, "[P] {text}", verbalizer)
    params = clf.init_params()
    assert math.isclose(torch.sigmoid(params["verbalizer.label_word_logit"]).item(), 0.25, rel_tol=1e-6)
    text_task = _task()
    task = clf.task(text_task)
    logits = clf(params, task.query, task)
    # by hand: prototypes mix the normalised support mean with the normalised label-word state
    support, _ = clf.encode(params, task.support)
    words, _ = clf.encode(params, clf.label_batch(task))
    query, _ = clf.encode(params, task.query)
    means = torch.stack([F.normalize(F.normalize(support[task.support.labels == c], dim=-1).mean(0), dim=0)
                         for c in range(2)])
    protos = F.normalize(0.75 * means + 0.25 * F.normalize(words, dim=-1), dim=-1)
    expected = params["verbalizer.log_scale"].exp() * F.normalize(query, dim=-1) @ protos.T
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-4)
    # the label words of class 1 ("beta gamma") are one input of the template
    ids = clf.label_batch(task).input_ids[1].tolist()
    tok = backbone.tokenizer
    assert tok.convert_ids_to_tokens([i for i in ids if i not in (tok.pad_token_id, tok.cls_token_id,
                                                                 tok.sep_token_id, clf.template.slot_id)]) == \
        tok.tokenize("beta gamma")
    # the share gets a gradient: it is meta-learned
    loss = F.cross_entropy(logits, task.query.labels)
    loss.backward()
    assert params["verbalizer.label_word_logit"].grad is not None
    assert params["verbalizer.label_word_logit"].grad.abs() > 0


def test_label_word_share_is_checked():
    with pytest.raises(ConfigError, match="label_word_share"):
        mp.verbalizers.Proto(label_word_share=1.0)
    with pytest.raises(ConfigError, match="cosine"):
        mp.verbalizers.Proto(label_word_share=0.5, distance="euclidean")


def test_protonet_has_no_inner_loop_and_its_gradient_is_the_query_loss_gradient(backbone):
    clf = _clf(backbone, "[P] {text}", mp.verbalizers.Proto(label_word_share=0.5))
    learner = mp.ProtoNet(clf)
    text_task = _task()
    fast = learner.adapt(text_task.support)
    for name, value in learner.params.items():
        assert torch.equal(fast[name], value)  # nothing adapted
    learner.loss(fast, text_task.query).backward()
    got = {k: v.grad.clone() for k, v in learner.params.items()}
    params = {k: v.detach().clone().requires_grad_(True) for k, v in learner.params.items()}
    task = clf.task(text_task)
    F.cross_entropy(clf(params, task.query, task), task.query.labels).backward()
    for name in got:
        torch.testing.assert_close(got[name], params[name].grad)


def test_a_vocabulary_verbalizer_needs_the_mask(tiny_data, tiny_models):
    from tests.conftest import tiny_overrides
    from metaprompt.config import Config

    with pytest.raises(ConfigError, match=r"has no \[MASK\]"):
        Config.load(None, tiny_overrides(tiny_data, tiny_models("bert"), **{
            "prompt.template": "[P] {text}", "verbalizer.kind": "label_words", "prompt.length": 0}))


def _task():
    data = mp.EpisodeData.from_texts(
        ["alpha one", "alpha two", "alpha three", "beta one", "beta two", "beta three"] * 2,
        [0, 0, 0, 1, 1, 1] * 2, splits={"train": [0, 1], "val": [], "test": []},
        label_names={0: "alpha", 1: "beta gamma"})
    return next(iter(data.episodes("train", n_way=2, k_shot=2, n_query=2, seed=0, count=1)))


def test_the_model_card_says_which_state_a_proto_verbalizer_reads_and_its_learned_share():
    card = mp.verbalizers.Proto.card
    assert "[MASK] states" in card({"readout": "mask", "temperature": 10.0})
    text = card({"readout": "mean_pooled", "temperature": 12.5, "learned_label_word_share": 0.6182})
    assert "mean-pooled text states" in text and "[MASK]" not in text
    assert "learned share 0.6182" in text and "temperature 12.5" in text
