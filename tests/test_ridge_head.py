"""The ``ridge`` verbalizer: a ridge-regression head fitted in closed form to the support states."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import metaprompt as mp
from metaprompt.errors import ConfigError


@pytest.fixture(scope="module")
def backbone(tiny_models):
    return mp.Backbone.from_pretrained(tiny_models("bert", mlm_head=False))


def _clf(backbone, verbalizer):
    return mp.PromptClassifier(backbone, template=mp.Template("[P] {text}", max_length=32, max_text_tokens=12),
                               prompt=mp.prompts.SoftPrompt(length=2, init="random"), verbalizer=verbalizer,
                               label_words={0: ["alpha"], 1: ["beta", "gamma"]})


def _task(k=2):
    data = mp.EpisodeData.from_texts(
        ["alpha one", "alpha two", "alpha three", "beta one", "beta two", "beta three"] * 2,
        [0, 0, 0, 1, 1, 1] * 2, splits={"train": [0, 1], "val": [], "test": []},
        label_names={0: "alpha", 1: "beta gamma"})
    return next(iter(data.episodes("train", n_way=2, k_shot=k, n_query=2, seed=0, count=1)))


def _primal_ridge(rows, targets, weights, lam):
    """The weighted ridge solution in the primal (H × H) form, in float64: (XᵀDX + λI)⁻¹ XᵀDY."""
    x, y, d = rows.double(), targets.double(), torch.diag(weights.double())
    return torch.linalg.solve(x.T @ d @ x + lam * torch.eye(x.shape[1], dtype=torch.float64), x.T @ d @ y)


@pytest.mark.parametrize("share", [0.0, 1 / 3, 0.6])
def test_ridge_logits_are_the_weighted_ridge_solution(backbone, share):
    clf = _clf(backbone, mp.verbalizers.Ridge(ridge_lambda=0.5, scale=4.0, label_word_share=share))
    params = clf.init_params()
    task = clf.task(_task(k=2))
    logits = clf(params, task.query, task)
    support = F.normalize(clf.encode(params, task.support)[0], dim=-1)
    query = F.normalize(clf.encode(params, task.query)[0], dim=-1)
    targets = F.one_hot(task.support.labels, 2).float()
    weights = torch.ones(len(support))
    if share:
        words = F.normalize(clf.encode(params, clf.label_batch(task))[0], dim=-1)
        support, targets = torch.cat([support, words]), torch.cat([targets, torch.eye(2)])
        # a label-word row holds `share` of its class's weight: k·a/(1−a) against k rows of weight 1
        weights = torch.cat([weights, torch.full((2,), 2 * share / (1 - share))])
    head = _primal_ridge(support, targets, weights, 0.5)
    torch.testing.assert_close(logits.double(), 4.0 * query.double() @ head, atol=1e-4, rtol=1e-4)


def test_one_more_support_example_is_share_one_over_k_plus_one(backbone):
    clf = _clf(backbone, mp.verbalizers.Ridge(label_word_share=1 / 3))
    params = clf.init_params()
    task = clf.task(_task(k=2))
    words = clf.encode(params, clf.label_batch(task))[0]
    # the label-word rows weigh exactly 1: as if each class had one more support example
    verbalizer = clf.verbalizer
    support = clf.encode(params, task.support)[0]
    both = torch.cat([support, words])
    extended = dataclasses.replace(task.support, labels=torch.cat([task.support.labels, torch.arange(2)]))
    plain = mp.verbalizers.Ridge().bind(backbone, verbalizer.label_word_ids)
    query = clf.encode(params, task.query)[0]
    as_support = plain.logits({"log_scale": params["verbalizer.log_scale"],
                               "log_lambda": params["verbalizer.log_lambda"]}, query, None,
                              mp.Task(task.classes, extended, task.query), support=both)
    torch.testing.assert_close(clf(params, task.query, task), as_support, atol=1e-5, rtol=1e-4)


def test_ridge_head_fits_its_support_and_learns_lambda_share_and_prompt(backbone):
    clf = _clf(backbone, mp.verbalizers.Ridge(ridge_lambda=1e-4, label_word_share=0.25))
    params = clf.init_params()
    assert math.isclose(params["verbalizer.log_lambda"].exp().item(), 1e-4, rel_tol=1e-5)
    task = clf.task(_task(k=3))
    # with almost no regularisation the head interpolates its own support examples
    assert torch.equal(clf(params, task.support, task).argmax(-1), task.support.labels)
    loss = F.cross_entropy(clf(params, task.query, task), task.query.labels)
    loss.backward()
    for name in ("verbalizer.log_lambda", "verbalizer.label_word_logit", "verbalizer.log_scale", "prompt.embeds"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


def test_ridge_settings_are_checked_and_named_in_the_card():
    with pytest.raises(ConfigError, match="ridge_lambda"):
        mp.verbalizers.Ridge(ridge_lambda=0.0)
    with pytest.raises(ConfigError, match="label_word_share"):
        mp.verbalizers.Ridge(label_word_share=1.0)
    text = mp.verbalizers.Ridge.card({"readout": "mean_pooled", "temperature": 8.0, "ridge_lambda": 0.05,
                                      "learned_label_word_share": 0.2})
    assert "ridge-regression head (learned λ 0.05) fitted in closed form" in text and "share 0.2 " in text
    assert "mean-pooled text states" in text
