"""The Python API on a tiny random model: data, classifier from specs, learners, evaluate, save/load, trainer."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

import metaprompt as mp
from episodes import DataError, EpisodeError
from tests.tiny import FILLER, TOPICS

NAMES = [name for name, _ in TOPICS.values()]
SPLITS = {"train": NAMES[:6], "val": NAMES[6:9], "test": NAMES[9:]}
EPISODE = dict(n_way=3, k_shot=2, n_query=2)


def _texts(per_class: int = 8, seed: int = 0):
    rng = random.Random(seed)
    texts, labels = [], []
    for name, words in TOPICS.values():
        for _ in range(per_class):
            texts.append(" ".join(rng.sample(words, 2) + rng.sample(FILLER, 3)))
            labels.append(name)
    return texts, labels


@pytest.fixture(scope="module")
def data():
    texts, labels = _texts()
    return mp.EpisodeData.from_texts(texts, labels, splits=SPLITS)


@pytest.fixture(scope="module")
def backbone(tiny_models):
    return mp.Backbone.from_pretrained(tiny_models("bert"))


def _classifier(backbone, verbalizer=None, **kw):
    return mp.PromptClassifier(backbone, mp.Template("{text} . [P] topic is [MASK] .", max_length=48, max_text_tokens=16),
                               mp.prompts.SoftPrompt(length=2, init_text="the topic"),
                               verbalizer or mp.verbalizers.Soft(), **kw)


def test_importing_metaprompt_loads_no_torch():
    code = "import sys, metaprompt; assert 'torch' not in sys.modules; metaprompt.EpisodeData; print(sorted(metaprompt.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "FOMAML" in out and "MetaTrainer" in out


# -- data ----------------------------------------------------------------------------------------------
def test_string_labels_become_ids_names_and_label_words(data):
    assert data.label_names[data.splits["train"][0]] == "sports"
    assert data.label_words[data.splits["test"][2]] == ["tech"]  # the class name, when no words are given
    tasks = list(data.episodes("train", seed=3, count=2, **EPISODE))
    again = list(data.episodes("train", seed=3, count=2, **EPISODE))
    assert [t.support.texts for t in tasks] == [t.support.texts for t in again]  # a function of (seed, index)
    task = tasks[1]
    assert task.index == 1 and set(task.classes) <= set(data.splits["train"])
    assert task.support.labels == (0, 0, 1, 1, 2, 2) and len(task.query) == 6
    for text, label in zip(task.query.texts, task.query.labels):  # local label = position in classes
        assert data.texts.index(text) in [i for i, c in enumerate(data.labels) if c == task.classes[label]]


def test_integer_labels_with_names_and_datasets(tiny_models):
    import datasets

    table = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"] * 3, "label": [0, 1, 2, 3] * 3},
                                       features=datasets.Features({"text": datasets.Value("string"),
                                                                   "label": datasets.ClassLabel(names=list("wxyz"))}))
    data = mp.EpisodeData.from_dataset(table, splits={"train": [0, 1], "test": [2, 3]})
    assert data.label_names == {0: "w", 1: "x", 2: "y", 3: "z"} and data.splits["val"] == ()
    assert next(data.episodes("test", n_way=2, k_shot=1, n_query=1, count=1)).class_names in (("y", "z"), ("z", "y"))


def test_bad_data_is_refused_when_asked_for(data):
    with pytest.raises(DataError, match="not a label"):
        mp.EpisodeData.from_texts(["a", "b"], ["x", "y"], splits={"train": ["x", "q"]})
    with pytest.raises(DataError, match="more than one split"):
        mp.EpisodeData.from_texts(["a", "b"], ["x", "y"], splits={"train": ["x"], "test": ["x"]})
    with pytest.raises(EpisodeError, match="n_way = 4"):  # at the call, not at the first task
        data.episodes("val", n_way=4, k_shot=1, n_query=1)


# -- backbone and classifier ----------------------------------------------------------------------------
def test_a_model_you_hold_is_a_backbone(tiny_models):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(tiny_models("bert"))
    backbone = mp.Backbone(model, AutoTokenizer.from_pretrained(tiny_models("bert")), name="mine")
    assert backbone.has_mlm_head and backbone.hidden_size == 32 and not any(p.requires_grad for p in model.parameters())
    assert backbone.facts()["name"] == "mine"


def test_text_tasks_are_tokenised_once_and_match_the_template(backbone, data):
    clf = _classifier(backbone)
    text_task = next(data.episodes("train", count=1, **EPISODE))
    task = clf.task(text_task)
    assert clf.task(text_task) is task  # cached per task
    expected = clf.template.batch(clf.template.tokenize_texts(list(text_task.query.texts)), list(text_task.query.labels))
    assert torch.equal(task.query.input_ids, expected.input_ids)
    assert task.classes == text_task.classes and len(clf._tokens) == len(set(text_task.support.texts + text_task.query.texts))
    logits = clf(clf.init_params(), task.query, task)
    assert logits.shape == (6, 3)


def test_new_classes_rebind_a_verbalizer_spec(backbone, data):
    clf = _classifier(backbone)
    init = clf.init_params()
    train = clf.task(next(data.episodes("train", count=1, **EPISODE)))
    test = clf.task(next(data.episodes("test", count=1, **EPISODE)))  # classes never seen before
    assert set(test.classes) <= set(clf.label_words) and set(train.classes) <= set(clf.label_words)
    assert clf(init, test.query, test).shape == (6, 3)


def test_a_tuner_by_name_adapts_its_backbone_tensors(tiny_models, data):
    backbone = mp.Backbone.from_pretrained(tiny_models("bert"))
    clf = _classifier(backbone, tuner="bitfit")
    names = [k for k in clf.init_params() if k.startswith("backbone.")]
    assert names and all(k.endswith("bias") for k in names)
    with pytest.raises(TypeError, match="settings object"):
        _classifier(mp.Backbone.from_pretrained(tiny_models("bert")), tuner=object())


# -- learners ------------------------------------------------------------------------------------------
def test_the_users_loop_gives_the_trainers_meta_gradient(backbone, data):
    """learner.loss(learner.adapt(support), query).backward() == algorithm.accumulate (FOMAML and MAML)."""
    text_task = next(data.episodes("train", count=1, **EPISODE))
    for cls in (mp.FOMAML, mp.MAML):
        clf = _classifier(backbone)
        a, b = cls(clf, inner_lr=0.1, inner_steps=2), cls(clf, inner_lr=0.1, inner_steps=2)
        a.loss(a.adapt(text_task.support), text_task.query).backward()
        b.accumulate(clf.task(text_task))
        for name, p in a.params.items():
            torch.testing.assert_close(p.grad, b.params[name].grad)
        assert any(p.grad.abs().max() > 0 for p in a.params.values())


def test_reptile_loss_pulls_the_init_toward_the_adapted_weights(backbone, data):
    """φ by hand (plain SGD on the support), then the gradient of Reptile's loss must be θ − φ."""
    clf = _classifier(backbone)
    learner = mp.Reptile(clf, inner_lr=0.1, inner_steps=3)
    text_task = next(data.episodes("train", count=1, **EPISODE))
    task = clf.task(text_task)
    fast = {k: v.detach().clone().requires_grad_(True)
            for k, v in clf.task_params({k: v.detach() for k, v in learner.params.items()}, task).items()}
    for _ in range(3):
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(clf(fast, task.support, task),
                                                                       task.support.labels), list(fast.values()))
        fast = {k: (v - 0.1 * g).detach().requires_grad_(True) for (k, v), g in zip(fast.items(), grads)}
    loss = learner.loss(learner.adapt(text_task.support), text_task.query)
    loss.backward()
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(clf.loss(fast, task.query, task)), rel=1e-5)
    moved = 0
    for name, p in learner.params.items():
        torch.testing.assert_close(p.grad, p.detach() - fast[name].detach(), rtol=1e-4, atol=1e-6)
        moved += float((p.detach() - fast[name]).abs().max() > 1e-6)
    assert moved


def test_maml_plus_plus_learns_its_inner_rates_through_the_loop(backbone, data):
    clf = _classifier(backbone)
    learner = mp.MAMLpp(clf, inner_steps=2, total_steps=10)
    assert {"inner_lr.prompt", "inner_lr.verbalizer"} <= set(learner.params)
    text_task = next(data.episodes("train", count=1, **EPISODE))
    learner.loss(learner.adapt(text_task.support), text_task.query).backward()
    assert learner.params["inner_lr.prompt"].grad.abs().sum() > 0 and learner.step == 1


# -- evaluate, save and load -----------------------------------------------------------------------------
def test_evaluate_returns_a_result_and_prints_nothing(backbone, data, capsys):
    clf = _classifier(backbone)
    tasks = list(data.episodes("test", count=3, **EPISODE))
    result = mp.evaluate(clf, clf.init_params(), tasks, steps=2)
    assert capsys.readouterr().out == ""
    assert len(result) == 3 and result.mean == pytest.approx(sum(result.accuracies) / 3)
    assert result.ci95 is not None and len(result.seconds) == 3
    same = mp.evaluate(clf, clf.init_params(), [clf.task(t) for t in tasks], steps=2)
    assert same.accuracies == result.accuracies


def test_save_and_load_give_the_same_classifier_and_init(backbone, data, tmp_path):
    clf = _classifier(backbone, verbalizer=mp.verbalizers.Proto(learn_transform=True))
    learner = mp.FOMAML(clf, inner_steps=1)
    opt = torch.optim.SGD(learner.parameters(), lr=0.5)
    for task in data.episodes("train", count=2, **EPISODE):
        opt.zero_grad()
        learner.loss(learner.adapt(task.support), task.query).backward()
        opt.step()
    init = learner.init()
    mp.save_init(clf, init, tmp_path / "out")
    clf2, init2 = mp.load_init(tmp_path / "out", backbone=backbone)
    assert clf2._verbalizer_spec == mp.verbalizers.Proto(learn_transform=True)
    assert all(torch.equal(init[k], init2[k]) for k in init)
    task = next(data.episodes("test", count=1, **EPISODE))
    assert torch.equal(clf(init, clf.task(task).query, clf.task(task)), clf2(init2, clf2.task(task).query, clf2.task(task)))
    with pytest.raises(ValueError, match="lacks"):
        mp.save_init(clf, {}, tmp_path / "empty")


def test_export_peft_writes_files_peft_reproduces(backbone, data, tmp_path):
    # a template that starts with [P]: peft's prepended virtual tokens are then exactly metaprompt's prompt
    clf = mp.PromptClassifier(backbone, mp.Template("[P] {text} . topic is [MASK] .", max_length=48, max_text_tokens=16),
                              mp.prompts.SoftPrompt(length=2, init_text="the topic"), mp.verbalizers.Soft())
    init = {k: v.detach() + 0.01 for k, v in clf.init_params().items()}  # not the pretrained init
    usage = mp.export_peft(clf, init, tmp_path / "peft")
    assert usage["available"] and usage["peft_type"] == "PROMPT_TUNING"
    assert usage["verified_max_abs_diff"] is not None and usage["verified_max_abs_diff"] < 1e-4
    assert json.loads((tmp_path / "peft" / "peft.json").read_text())["peft_type"] == "PROMPT_TUNING"
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    pooled = mp.PromptClassifier(backbone, template="[P] {text}", prompt=mp.prompts.SoftPrompt(length=2),
                                 verbalizer=mp.verbalizers.Proto())
    from metaprompt.errors import UserError

    with pytest.raises(UserError, match="no \\[MASK\\]"):
        mp.export_peft(pooled, pooled.init_params(), tmp_path / "pooled")


# -- the trainer --------------------------------------------------------------------------------------------
def test_the_trainer_resumes_to_the_uninterrupted_run(backbone, data, tmp_path):
    def trainer(run, episodes):
        learner = mp.FOMAML(_classifier(backbone), inner_steps=1)
        return mp.MetaTrainer(learner, data, run_dir=tmp_path / run, episodes=episodes, val_every=2,
                              val_episodes=2, **EPISODE)

    whole = trainer("whole", 4)
    whole.fit()
    first = trainer("cut", 2)
    first.fit()
    rest = trainer("cut", 4)
    state = rest.fit(resume=True)
    assert state.step == 4
    for name, p in whole.params.items():
        torch.testing.assert_close(rest.params[name], p)
    lines = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2, 2, 3, 4, 4]  # val at 0, 2, 4; nothing written twice
    assert {p.name for p in (tmp_path / "cut").iterdir()} == {"metrics.jsonl", "checkpoint.safetensors",
                                                              "best.safetensors"}
