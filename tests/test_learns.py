"""Meta-training learns: 30 FOMAML episodes beat the pretrained init on fixed test episodes.

The task family: 3-way 1-shot topic classification of synthetic texts, each one topic word of
its class among 9 shared filler words (tests/tiny.py's TOPICS), label words = the class's
topic words, the offline MiniLM with a soft verbalizer. The pretrained init is near chance
(the [MASK] state does not point at the topic word's embedding); what meta-training learns
(the prompt and the temperature) carries over to the test classes, whose words it never saw.
The same loop with the meta-gradient's sign flipped ends at chance, so the comparison can fail.
"""
from __future__ import annotations

import random

import pytest
import torch

import metaprompt as mp
from tests.tiny import FILLER, TOPICS

pytestmark = pytest.mark.slow
EPISODE = dict(n_way=3, k_shot=1, n_query=4)


def _minilm():
    from metaprompt.model.backbone import ModelLoadError

    try:
        return mp.Backbone.from_pretrained("minilm-offline")
    except ModelLoadError as err:
        pytest.skip(f"the offline MiniLM is not installed ({err})")


def _data() -> mp.EpisodeData:
    rng = random.Random(0)
    texts, labels = [], []
    for name, words in TOPICS.values():
        for _ in range(24):
            tokens = rng.sample(words, 1) + rng.sample(FILLER, 9)
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            labels.append(name)
    names = [name for name, _ in TOPICS.values()]
    return mp.EpisodeData.from_texts(texts, labels, splits={"train": names[:6], "val": names[6:9], "test": names[9:]},
                                     label_words={name: words for name, words in TOPICS.values()})


def _meta_train(maximize: bool = False):
    torch.manual_seed(0)
    data = _data()
    clf = mp.PromptClassifier(_minilm(), mp.Template("{text} . [P] topic is [MASK] .", max_length=48, max_text_tokens=16),
                              mp.prompts.SoftPrompt(length=2, init_text="the topic"), mp.verbalizers.Soft())
    test = list(data.episodes("test", seed=7, count=20, **EPISODE))
    before = mp.evaluate(clf, clf.init_params(), test, steps=2, lr=0.1)
    learner = mp.FOMAML(clf, inner_lr=0.1, inner_steps=2)
    opt = torch.optim.Adam(learner.parameters(), lr=0.01, maximize=maximize)
    for task in data.episodes("train", seed=0, count=30, **EPISODE):
        opt.zero_grad()
        learner.loss(learner.adapt(task.support), task.query).backward()
        opt.step()
    return before, mp.evaluate(clf, learner.init(), test, steps=2, lr=0.1)


def test_thirty_fomaml_episodes_beat_the_pretrained_init():
    before, after = _meta_train()
    assert before.mean < 0.5  # near chance (1/3): there is something to learn
    # Seen at 45% -> 65% (±5, ±3); a clear margin, beyond both intervals.
    assert after.mean - before.mean > max(0.1, before.ci95 + after.ci95)


def test_the_comparison_fails_when_meta_training_goes_the_wrong_way():
    before, after = _meta_train(maximize=True)  # gradient ascent on the query loss
    assert not after.mean - before.mean > 0.1
