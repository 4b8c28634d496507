"""The practitioner baselines: the methods, the label-word example, the embedder, the registry."""
from __future__ import annotations

import pytest
import torch

from episodes import Episode
from metaprompt.model.backbone import load_backbone
from metaprompt.baselines import (BASELINES, Centroid, LinearProbe, MeanPooledEmbedder, episode_texts,
                                  label_word_text, score)
from metaprompt.registry import UnknownComponentError

DIRECTIONS = torch.eye(4)[:3] * 3.0  # three classes, well apart


class FakeEmbedder:
    """Texts named 'c<class>-<i>' lie near their class direction; a label-word text on it exactly."""

    def __init__(self, noise: float, misleading_support: bool = False):
        self.noise, self.misleading = noise, misleading_support

    def __call__(self, texts):
        out = []
        for text in texts:
            if text.startswith("words"):
                out.append(DIRECTIONS[int(text[-1])])
                continue
            c, i = (int(x) for x in text[1:].split("-"))
            g = torch.Generator().manual_seed(100 * c + i)
            base = DIRECTIONS[(c + 1) % 3] if self.misleading and i == 0 else DIRECTIONS[c]
            out.append(base + self.noise * torch.randn(4, generator=g))
        return torch.stack(out)


TEXTS = [f"c{c}-{i}" for c in range(3) for i in range(10)]
EPISODE = Episode(classes=(0, 1, 2), support=(0, 10, 20), query=tuple(i for i in range(30) if i % 10))
WORDS = {0: ["words", "0"], 1: ["words", "1"], 2: ["words", "2"]}
EMBEDDING_METHODS = ("centroid", "linear_probe", "ridge")


def episode_accuracy(method, embed, texts, episode, label_words=None, **settings):
    accs, _ = score(BASELINES.get(method)(**settings), embed, texts, [episode], label_words)
    return accs[0]


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
def test_clean_embeddings_are_classified_perfectly(method):
    assert episode_accuracy(method, FakeEmbedder(0.1), TEXTS, EPISODE) == 1.0


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
def test_label_words_count_as_one_more_support_example(method):
    # each class's one support example lies on the next class's direction: alone it misleads every
    # query; with the label words as a second example of the right class, the centroid is between
    misled = episode_accuracy(method, FakeEmbedder(0.05, misleading_support=True), TEXTS, EPISODE)
    helped = episode_accuracy(method, FakeEmbedder(0.05, misleading_support=True), TEXTS, EPISODE, WORDS)
    assert misled == 0.0
    assert helped > misled
    assert label_word_text(["a", "b"]) == "a b"


def test_unknown_method_is_refused_with_the_choices():
    with pytest.raises(UnknownComponentError, match="centroid, linear_probe, ridge, setfit"):
        BASELINES.get("svm")
    with pytest.raises(ValueError, match="C must be > 0"):
        LinearProbe(C=0.0)
    with pytest.raises(ValueError, match="ridge_lambda must be > 0"):
        BASELINES.get("ridge")(ridge_lambda=0.0)


def test_episode_texts_append_one_label_word_text_per_class():
    ep = episode_texts(TEXTS, EPISODE, WORDS)
    assert ep.support == ["c0-0", "c1-0", "c2-0", "words 0", "words 1", "words 2"]
    assert ep.labels == [0, 1, 2, 0, 1, 2] and ep.n_classes == 3
    assert len(ep.query) == len(ep.query_labels) == 27
    assert episode_texts(TEXTS, EPISODE).labels == [0, 1, 2]


def test_linear_probe_regularisation_is_passed_through():
    strong = episode_accuracy("linear_probe", FakeEmbedder(1.5), TEXTS, EPISODE, C=1e-6)
    weak = episode_accuracy("linear_probe", FakeEmbedder(1.5), TEXTS, EPISODE, C=1e6)
    assert 0.0 <= strong <= 1.0 and 0.0 <= weak <= 1.0
    accs, seconds = score(LinearProbe(C=1.0), FakeEmbedder(0.1), TEXTS, [EPISODE, EPISODE])
    assert accs == [1.0, 1.0] and seconds >= 0


def test_embedder_mean_pools_real_tokens_once_per_text(tiny_models):
    backbone = load_backbone(tiny_models("bert"))
    embed = MeanPooledEmbedder(backbone, max_length=8, batch_size=2)
    texts = ["sports game today", "a", "sports game today", "music and songs and more words than eight"]
    out = embed(texts)
    assert out.shape == (4, backbone.hidden_size)
    torch.testing.assert_close(out[0], out[2])
    assert len(embed._cache) == 3
    # the same text alone, unpadded, gives the same vector: padding does not enter the mean
    alone = MeanPooledEmbedder(backbone, max_length=8)(["a"])
    torch.testing.assert_close(out[1], alone[0], atol=1e-5, rtol=1e-4)
    # truncation: the long text equals its first 8 word pieces (with [CLS]/[SEP])
    tok = backbone.tokenizer
    ids = tok(texts[3], truncation=True, max_length=8)["input_ids"]
    short = tok.decode(ids[1:-1])
    torch.testing.assert_close(out[3], MeanPooledEmbedder(backbone, max_length=8)([short])[0], atol=1e-5, rtol=1e-4)


def test_centroid_is_a_training_free_spec():
    assert Centroid().settings() == {} and Centroid.method == "centroid"
    assert LinearProbe(C=10.0).settings() == {"C": 10.0, "max_iter": 1000}


def test_baseline_command_scores_the_eval_episodes_and_chooses_C_on_validation(tmp_path, tiny_data, tiny_models):
    import json

    from tests.conftest import tiny_overrides
    from metaprompt.cli import main
    from metaprompt.results import read_results

    sets = [x for o in tiny_overrides(tiny_data, tiny_models("bert", mlm_head=False),
                                      **{"eval.episodes": 3, "baseline.val_episodes": 2}) for x in ("--set", o)]
    out = tmp_path / "lp"
    assert main(["baseline", "--method", "linear_probe", "--out", str(out), *sets]) == 0
    results = read_results(out / "results.json")
    row = results["references"][0]
    assert results["results"] == [] and results["method"] == "baseline:linear_probe"
    assert row["name"] == "linear_probe+label_words" and len(row["accuracies_per_episode"]) == 3
    chosen = results["adaptation"]["selected"]["validation_accuracy"]
    assert set(chosen) == {"0.1", "1.0", "10.0", "100.0"}
    assert results["adaptation"]["settings"]["C"] == float(max(chosen, key=chosen.get))
    # the same episodes as `metaprompt eval` of a run with this config
    words_off = tmp_path / "c"
    assert main(["baseline", "--method", "centroid", "--out", str(words_off), *sets,
                 "--set", "baseline.label_words=false"]) == 0
    other = json.loads((words_off / "results.json").read_text())
    assert other["episodes_sha256"] == results["episodes_sha256"]
    assert other["references"][0]["name"] == "centroid"
    assert main(["baseline", "--method", "centroid", "--out", str(words_off), *sets]) == 2  # no overwrite
    assert main(["baseline", "--method", "svm", "--out", str(tmp_path / "x"), *sets]) == 2
    # the ridge classifier's lambda: chosen the same way, or taken from baseline.ridge_lambda
    assert main(["baseline", "--method", "ridge", "--out", str(tmp_path / "r"), *sets]) == 0
    ridge = read_results(tmp_path / "r" / "results.json")
    tried = ridge["adaptation"]["selected"]["validation_accuracy"]
    assert set(tried) == {"0.01", "0.1", "1.0", "10.0"}
    assert ridge["adaptation"]["settings"]["ridge_lambda"] == float(max(tried, key=tried.get))
    assert main(["baseline", "--method", "ridge", "--out", str(tmp_path / "r2"), *sets,
                 "--set", "baseline.ridge_lambda=3.0"]) == 0
    fixed = read_results(tmp_path / "r2" / "results.json")
    assert fixed["adaptation"]["settings"]["ridge_lambda"] == 3.0 and fixed["adaptation"]["selected"] is None


def test_killed_baseline_goes_on_from_its_episode_log(tmp_path, tiny_data, tiny_models, monkeypatch):
    import json

    from tests.conftest import tiny_overrides
    from metaprompt.baselines.centroid import Centroid
    from metaprompt.cli import main
    from metaprompt.results import read_results

    sets = [x for o in tiny_overrides(tiny_data, tiny_models("bert", mlm_head=False), **{"eval.episodes": 4})
            for x in ("--set", o)]
    whole = tmp_path / "whole"
    assert main(["baseline", "--method", "centroid", "--out", str(whole), *sets]) == 0
    expected = read_results(whole / "results.json")["references"][0]["accuracies_per_episode"]
    assert not (whole / "results.partial.jsonl").exists()  # deleted once results.json is written

    predict, calls = Centroid.predict, []

    def dies_on_the_third(self, episode, embed):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kill leaves: two episodes on disk, no results.json
        return predict(self, episode, embed)

    killed = tmp_path / "killed"
    monkeypatch.setattr(Centroid, "predict", dies_on_the_third)
    assert main(["baseline", "--method", "centroid", "--out", str(killed), *sets]) == 130
    assert not (killed / "results.json").exists()
    logged = (killed / "results.partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in logged[1:]] == [0, 1]
    calls.clear()
    assert main(["baseline", "--method", "centroid", "--out", str(killed), *sets]) == 0
    assert len(calls) == 2  # episodes 2 and 3 only
    assert read_results(killed / "results.json")["references"][0]["accuracies_per_episode"] == expected
    # done is done: a finished directory is not written again
    assert main(["baseline", "--method", "centroid", "--out", str(killed), *sets]) == 2

    # a log written for other settings is set aside, never mixed in
    other = tmp_path / "other"
    calls.clear()
    assert main(["baseline", "--method", "centroid", "--out", str(other), *sets]) == 130
    monkeypatch.setattr(Centroid, "predict", predict)
    assert main(["baseline", "--method", "centroid", "--out", str(other), *sets,
                 "--set", "baseline.label_words=false"]) == 0
    assert (other / "results.partial.jsonl.stale").is_file()
    assert len(read_results(other / "results.json")["references"][0]["accuracies_per_episode"]) == 4
    # anything else in the directory is still refused
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["baseline", "--method", "centroid", "--out", str(tmp_path / "busy"), *sets]) == 2


@pytest.mark.slow
def test_setfit_fine_tunes_a_copy_per_episode(tiny_models):
    pytest.importorskip("setfit", reason="the setfit extra is not installed")
    from metaprompt.baselines import SetFit
    from metaprompt.baselines.setfit import _pretrained

    backbone = load_backbone(tiny_models("bert", mlm_head=False))
    embed = MeanPooledEmbedder(backbone, max_length=12)
    texts = [f"sports game {i}" for i in range(4)] + [f"music song {i}" for i in range(4)]
    episode = Episode(classes=(0, 1), support=(0, 1, 4, 5), query=(2, 3, 6, 7))
    before = {k: v.clone() for k, v in _pretrained(embed).model_body.state_dict().items()}
    accs, _ = score(SetFit(num_iterations=2, seed=0), embed, texts, [episode], {0: ["sports"], 1: ["music"]})
    assert 0.0 <= accs[0] <= 1.0
    # the shared pretrained body is untouched: each episode trains its own copy
    after = _pretrained(embed).model_body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _pretrained(embed).model_body.max_seq_length == 12
