"""The prompt and verbalizer zoo: every design is differentiable twice, meta-learnable with every
algorithm and engine, and runs train → eval → export (tiny random models, seconds each)."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from metaprompt.config import Config, ConfigError
from metaprompt.meta.algorithms import build_algorithm
from metaprompt.meta.engines import build_engine
from metaprompt.model.classifier import Task
from metaprompt.model.template import builtin_templates
from metaprompt.run.evaluate import evaluate
from metaprompt.run.export import export_run
from metaprompt.run.train import train
from tests.conftest import tiny_overrides
from tests.tiny import directional_derivatives, meta_grad, setup_and_task

PROMPTS = ("embedding", "ptuning", "prefix", "pool")
VERBALIZERS = ("label_words", "soft", "proto", "repverb", "hybrid")
SMALL = {"prompt.hidden_size": 16, "prompt.pool_size": 3}  # small LSTM/MLP and pool: fast tests
REPO = Path(__file__).resolve().parents[1]


def _setup(tiny_config, dtype=torch.float32, **overrides):
    cfg = tiny_config(**{**SMALL, **overrides})
    return (cfg, *setup_and_task(cfg, dtype))


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _meta_grad(cfg, setup, task, engine, algorithm="maml"):
    return meta_grad(cfg, setup, task, algorithm, engine)


# -- initial prompt vectors ----------------------------------------------------------------------
def _rows_in(rows, table):
    """Index of each row of ``rows`` in ``table`` (-1 when absent)."""
    out = []
    for row in rows:
        hits = (table == row).all(-1).nonzero()
        out.append(int(hits[0]) if len(hits) else -1)
    return out


@pytest.mark.parametrize("init", ["random", "vocab", "label_words", "text"])
def test_each_init_gives_the_vectors_it_names(tiny_config, init):
    cfg, setup, _ = _setup(tiny_config, **{"prompt.kind": "pool", "prompt.init": init, "prompt.pool_size": 8})
    table = setup.backbone.word_embeddings.detach()
    tok = setup.backbone.tokenizer
    prompts = setup.classifier.init_params()["prompt.prompts"].detach().reshape(-1, table.shape[1])
    assert prompts.shape[0] == 16
    ids = _rows_in(prompts, table)
    if init == "random":
        assert ids == [-1] * 16
        assert prompts.std().item() == pytest.approx(table.std().item(), rel=0.3)
        return
    assert -1 not in ids
    assert not set(ids) & set(tok.all_special_ids)
    if init == "text":
        text_ids = tok.encode(cfg.prompt.init_text, add_special_tokens=False)
        assert ids[:len(text_ids)] == text_ids
    elif init == "label_words":
        # Only words of the meta-training classes, never of validation or test classes.
        words = setup.dataset.label_words
        train_ids = {i for c in setup.dataset.splits.train for w in words[c] for i in tok.encode(" " + w, add_special_tokens=False)}
        other = {i for c in setup.dataset.splits.all_classes if c not in setup.dataset.splits.train
                 for w in words[c] for i in tok.encode(" " + w, add_special_tokens=False)}
        assert set(ids) == train_ids  # 16 slots, 6 words: every word used, repeated
        assert not set(ids) & other


def test_vocab_init_works_with_a_small_vocabulary(tiny_config):
    _, setup, _ = _setup(tiny_config, family="roberta", **{"prompt.init": "vocab", "prompt.length": 6})
    embeds = setup.classifier.init_params()["prompt.embeds"]
    assert -1 not in _rows_in(embeds.detach(), setup.backbone.word_embeddings.detach())


def test_init_is_deterministic_for_the_seed(tiny_config):
    a = _setup(tiny_config, **{"prompt.kind": "ptuning"})[1].classifier.init_params()
    b = _setup(tiny_config, **{"prompt.kind": "ptuning"})[1].classifier.init_params()
    c = _setup(tiny_config, seed=7, **{"prompt.kind": "ptuning"})[1].classifier.init_params()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["prompt.lstm.weight_ih_l0"], c["prompt.lstm.weight_ih_l0"])


# -- prompt encoders -----------------------------------------------------------------------------
def test_ptuning_weights_are_passed_and_all_get_gradients(tiny_config):
    _, setup, task = _setup(tiny_config, **{"prompt.kind": "ptuning"})
    clf = setup.classifier
    params = clf.init_params()
    names = {k for k in params if k.startswith("prompt.")}
    assert {"prompt.embeds", "prompt.lstm.weight_ih_l0", "prompt.lstm.weight_hh_l1_reverse", "prompt.mlp.0.weight",
            "prompt.mlp.2.bias"} <= names
    assert len([n for n in names if n.startswith("prompt.lstm.")]) == 16  # 2 layers × 2 directions × 4
    # The encoder holds structure only; the output is a function of the passed weights.
    assert all(p.is_meta for p in clf.prompt.head.parameters())
    out = clf.prompt({k[7:]: v for k, v in params.items() if k in names}, task.support).embeds
    assert out.shape == (2, setup.backbone.hidden_size)
    changed = {**params, "prompt.lstm.weight_hh_l0": params["prompt.lstm.weight_hh_l0"] + 1.0}
    with torch.no_grad():
        assert not torch.equal(clf(params, task.query, task), clf(changed, task.query, task))
    grads = torch.func.grad(lambda p: clf.loss(p, task.support, task))(
        {k: v.detach() for k, v in params.items()})
    for name in names:
        assert grads[name].abs().sum() > 0, name


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_masked_prefix_changes_nothing(tiny_config, family):
    """Positions and masks follow the prefix: hidden by the mask, a prefix is a no-op."""
    _, setup, task = _setup(tiny_config, family=family, **{"prompt.kind": "prefix"})
    enc = setup.backbone.encoder
    batch = task.query
    embeds = enc.embed_tokens(batch.input_ids)
    prefix = torch.randn(setup.backbone.config.num_hidden_layers, 2, 3, setup.backbone.hidden_size)
    with torch.no_grad():
        plain = enc.transformer(inputs_embeds=embeds, attention_mask=batch.attention_mask)[0]
        hidden = enc.transformer(inputs_embeds=embeds, **enc.prefix_inputs(prefix, batch.attention_mask, 0))[0]
        shown = enc.transformer(inputs_embeds=embeds, **enc.prefix_inputs(prefix, batch.attention_mask))[0]
    rows = batch.attention_mask.bool()
    torch.testing.assert_close(hidden[rows], plain[rows], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shown[rows], plain[rows], atol=1e-4)


def test_prefix_takes_no_input_slots_and_projection_adds_an_mlp(tiny_config):
    cfg, setup, task = _setup(tiny_config, **{"prompt.kind": "prefix", "prompt.length": 3,
                                              "prompt.template": "{text} topic is [MASK] ."})
    assert task.support.prompt_positions.shape[1] == 0
    params = setup.classifier.init_params()
    layers, hidden = setup.backbone.config.num_hidden_layers, setup.backbone.hidden_size
    assert params["prompt.prefix"].shape == (layers, 2, 3, hidden)
    # The pretrained init is the frozen model's keys/values of the init words, not noise.
    assert params["prompt.prefix"].abs().sum() > 0
    _, setup, task = _setup(tiny_config, **{"prompt.kind": "prefix", "prompt.prefix_projection": True})
    params = setup.classifier.init_params()
    assert {k for k in params if k.startswith("prompt.")} == {
        "prompt.embeds", "prompt.mlp.0.weight", "prompt.mlp.0.bias", "prompt.mlp.2.weight", "prompt.mlp.2.bias"}
    assert params["prompt.mlp.2.weight"].shape == (layers * 2 * hidden, 16)
    # [P] slots of a template stay empty with deep prompts.
    assert task.support.prompt_positions.shape[1] == 0
    grads = torch.func.grad(lambda p: setup.classifier.loss(p, task.support, task))(
        {k: v.detach() for k, v in params.items()})
    assert all(grads[k].abs().sum() > 0 for k in params if k.startswith("prompt."))


def test_pool_prompt_is_instance_dependent_attention(tiny_config):
    cfg, setup, task = _setup(tiny_config, **{"prompt.kind": "pool", "prompt.pool_size": 4})
    clf = setup.classifier
    params = clf.init_params()
    hidden = setup.backbone.hidden_size
    assert params["prompt.prompts"].shape == (4, 2, hidden) and params["prompt.keys"].shape == (4, hidden)
    calls = []

    def frozen(batch):
        calls.append(batch)
        return clf.frozen_mask_states(batch)

    group = {"prompts": params["prompt.prompts"], "keys": params["prompt.keys"]}
    out = clf.prompt(group, task.query, frozen).embeds
    assert out.shape == (len(task.query), 2, hidden)
    q = clf.frozen_mask_states(task.query)
    weights = torch.softmax(q @ group["keys"].T / math.sqrt(hidden), -1)
    torch.testing.assert_close(out, torch.einsum("bk,klh->blh", weights, group["prompts"]))
    assert not torch.allclose(out[0], out[1])  # one prompt per example
    # A dominant key selects its prompt.
    keys = torch.zeros_like(group["keys"])
    keys[2] = 1e4 * q.mean(0) / q.mean(0).norm()
    picked = clf.prompt({"prompts": group["prompts"], "keys": keys}, task.support, frozen).embeds
    torch.testing.assert_close(picked, group["prompts"][2].expand_as(picked))
    # The frozen states of a batch are computed once, however often the inner loop asks.
    clf.prompt(group, task.query, frozen)
    assert sum(b is task.query for b in calls) == 1


# -- verbalizers --------------------------------------------------------------------------------
def _count_encodes(clf, monkeypatch):
    count = []
    original = clf.encode

    def counting(*args, **kwargs):
        count.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(clf, "encode", counting)
    return count


@pytest.mark.parametrize("verbalizer", ["proto", "repverb", "hybrid"])
def test_prototype_verbalizers_encode_the_support_once_per_call(tiny_config, monkeypatch, verbalizer):
    _, setup, task = _setup(tiny_config, **{"verbalizer.kind": verbalizer})
    clf = setup.classifier
    params = clf.init_params()
    count = _count_encodes(clf, monkeypatch)
    clf(params, task.support, task)
    assert len(count) == 1  # the support batch itself: its states are the prototypes' too
    clf(params, task.query, task)
    assert len(count) == 3
    # The prototypes follow the fast weights: the gradient reaches the prompt through them.
    support_only = torch.autograd.grad(clf.loss(params, task.query, task), params["prompt.embeds"])[0]
    monkeypatch.undo()
    with torch.no_grad():
        fixed_support = clf.encode(params, task.support)[0]
    original = clf.encode
    monkeypatch.setattr(clf, "encode", lambda p, b, want_vocab=False: (
        (fixed_support, None) if b is task.support else original(p, b, want_vocab)))
    query_only = torch.autograd.grad(clf.loss(params, task.query, task), params["prompt.embeds"])[0]
    assert not torch.allclose(support_only, query_only)


def _fake_task(n_classes=3, shots=2):
    labels = torch.arange(n_classes).repeat_interleave(shots)

    class Support:
        pass

    support = Support()
    support.labels = labels
    return Task(tuple(range(n_classes)), support, None)


def test_proto_scores_cosine_and_euclidean(tiny_config):
    task = _fake_task()
    support = torch.randn(6, 5)
    query = torch.randn(4, 5)
    protos = torch.stack([support[2 * c:2 * c + 2].mean(0) for c in range(3)])
    for distance in ("cosine", "euclidean"):
        _, setup, _ = _setup(tiny_config, **{"verbalizer.kind": "proto", "verbalizer.distance": distance,
                                             "verbalizer.scale": 3.0})
        verb = setup.classifier.verbalizer
        params = {"log_scale": torch.tensor(math.log(3.0))}
        got = verb.logits(params, query, None, task, support=support)
        if distance == "cosine":
            expected = 3.0 * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
        else:
            expected = -3.0 * torch.cdist(query, protos).pow(2) / 5
        torch.testing.assert_close(got, expected)
        # A learned map of the states starts at the identity.
        eye = {**params, "transform": torch.eye(5), "bias": torch.zeros(5)}
        torch.testing.assert_close(verb.logits(eye, query, None, task, support=support), expected)
    _, setup, _ = _setup(tiny_config, **{"verbalizer.kind": "proto", "verbalizer.learn_transform": True})
    hidden = setup.backbone.hidden_size
    params = setup.classifier.init_params()
    assert torch.equal(params["verbalizer.transform"], torch.eye(hidden))


def test_repverb_centres_and_normalises(tiny_config):
    _, setup, _ = _setup(tiny_config, **{"verbalizer.kind": "repverb"})
    verb = setup.classifier.verbalizer
    task = _fake_task()
    params = {"log_scale": torch.tensor(math.log(10.0))}
    support, query = torch.randn(6, 5), torch.randn(4, 5)
    logits = verb.logits(params, query, None, task, support=support)
    shift = torch.randn(5) * 100  # a common offset of all states does not matter (centring)
    torch.testing.assert_close(verb.logits(params, query + shift, None, task, support=support + shift), logits,
                               rtol=1e-4, atol=1e-4)
    scaled = support.clone()
    scaled[0] = scaled.mean(0) + 50 * (scaled[0] - support.mean(0))  # long vectors weigh no more (normalised)
    mu = scaled.mean(0)
    z = F.normalize(scaled - mu, dim=-1)
    protos = torch.stack([z[2 * c:2 * c + 2].mean(0) for c in range(3)])
    expected = 10 * F.normalize(query - mu, dim=-1) @ F.normalize(protos, dim=-1).T
    torch.testing.assert_close(verb.logits(params, query, None, task, support=scaled), expected)


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 1.0])
def test_hybrid_is_the_log_of_the_mixture(tiny_config, weight):
    _, setup, task = _setup(tiny_config, **{"verbalizer.kind": "hybrid", "verbalizer.hybrid_weight": weight})
    clf = setup.classifier
    params = clf.init_params()
    with torch.no_grad():
        logits = clf(params, task.query, task)
        h, vocab = clf.encode(params, task.query, want_vocab=True)
        support = clf.encode(params, task.support)[0]
        verb = clf.verbalizer
        vparams = {"log_scale": params["verbalizer.log_scale"]}
        rep = torch.softmax(verb.rep.logits(vparams, h, None, task, support), -1)
        words = torch.softmax(verb.words.logits({}, h, vocab, task), -1)
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(len(task.query)))
    torch.testing.assert_close(logits.exp(), weight * rep + (1 - weight) * words)


@pytest.mark.parametrize("verbalizer", ["label_words", "hybrid"])
def test_label_word_verbalizers_need_an_mlm_head(tiny_config, verbalizer):
    with pytest.raises(ValueError, match=f"config key 'verbalizer.kind': '{verbalizer}' .*masked-LM head"):
        _setup(tiny_config, mlm_head=False, **{"verbalizer.kind": verbalizer})


# -- second order, both engines -------------------------------------------------------------------
@pytest.mark.parametrize("kind", PROMPTS)
def test_second_order_meta_gradient_is_exact_in_both_engines(tiny_config, kind):
    """MAML's meta-gradient through each prompt encoder and RepVerb's prototypes: torch.func and
    higher agree, and both match central finite differences of the adapted query loss (float64)."""
    cfg, setup, task = _setup(tiny_config, dtype=torch.float64, **{
        "prompt.kind": kind, "verbalizer.kind": "repverb", "meta.inner_steps": 2, "meta.inner_lr": 0.5})
    clf = setup.classifier
    grads = _meta_grad(cfg, setup, task, "torch_func")
    by_higher = _meta_grad(cfg, setup, task, "higher")
    assert grads.keys() == by_higher.keys() == set(clf.init_params())
    for name in grads:
        assert _rel(by_higher[name], grads[name]) <= 1e-8, (name, _rel(by_higher[name], grads[name]))
    first = _meta_grad(cfg, setup, task, "torch_func", "fomaml")
    alg = build_algorithm(cfg.meta, build_engine("torch_func"), clf)
    params = clf.init_params()
    numeric, analytic, first_order = directional_derivatives(alg, clf, task, params, grads, first)
    assert abs(numeric) > 1e-3, numeric  # a real signal (prototype centring keeps the tiny model sensitive)
    assert abs(numeric - analytic) <= 1e-5 * abs(numeric), (numeric, analytic)
    assert abs(numeric - first_order) > 100 * abs(numeric - analytic), (numeric, analytic, first_order)  # Hessian


# -- templates -------------------------------------------------------------------------------------
def test_template_files_are_packaged_and_pickable():
    for dataset in ("huffpost", "amazon", "reuters", "20news"):
        shipped = REPO / "metaprompt" / "resources" / f"templates_{dataset}.yaml"
        assert (REPO / "configs" / "templates" / f"{dataset}.yaml").read_text() == shipped.read_text()
        templates = builtin_templates(dataset)
        assert len(templates) == 3
        word = "product category" if dataset == "amazon" else "topic"
        assert templates[0] == f"{{text}} , [P] {word} is [MASK] ."
        assert templates[2] == f"[P] {word} : [MASK] . Input : {{text}}"
        for index, template in enumerate(templates):
            cfg = Config.load(None, [f"data.dataset={dataset}", f"prompt.template_id={index}"])
            assert cfg.prompt.template == template
    assert builtin_templates("amazon")[1] == "{text} What is [P] product category ? [MASK] ."
    assert builtin_templates("reuters")[1] == "{text} . What is [P] topic ? [MASK] ."
    with pytest.raises(ConfigError, match="template_id.*0..2"):
        Config.load(None, ["data.dataset=huffpost", "prompt.template_id=3"])
    with pytest.raises(ConfigError, match="custom"):
        Config.load(None, ["data.dataset=custom", "data.path=x", "data.splits=y", "prompt.template_id=0"])


def test_template_id_survives_a_saved_config(tmp_path):
    cfg = Config.load(None, ["data.dataset=amazon", "prompt.template_id=2"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert Config.load(path).prompt.template == cfg.prompt.template


def test_config_checks_prompt_kinds():
    with pytest.raises(ConfigError, match="prompt.kind=pool needs at least one prompt token"):
        Config.load(None, ["prompt.kind=pool", "prompt.length=0"])
    with pytest.raises(ConfigError, match="no \\[P\\] slot"):
        Config.load(None, ["prompt.kind=ptuning", "prompt.template={text} is [MASK] ."])
    Config.load(None, ["prompt.kind=prefix", "prompt.template={text} is [MASK] ."])  # deep prompts need no slot
    with pytest.raises(ConfigError, match="Did you mean 'euclidean'"):
        Config.load(None, ["verbalizer.distance=euclidian"])


# -- every prompt × verbalizer: train → eval → export --------------------------------------------------
# Each prompt kind meets every algorithm and the higher engine somewhere in the grid.
ALGORITHM = {("embedding", "proto"): "maml", ("ptuning", "repverb"): "maml", ("prefix", "hybrid"): "maml",
             ("pool", "soft"): "maml", ("embedding", "hybrid"): "maml++", ("ptuning", "soft"): "maml++",
             ("prefix", "label_words"): "maml++", ("pool", "repverb"): "maml++",
             ("embedding", "label_words"): "reptile", ("ptuning", "hybrid"): "reptile",
             ("prefix", "soft"): "reptile", ("pool", "proto"): "reptile"}
HIGHER = {("embedding", "repverb"), ("ptuning", "proto"), ("prefix", "proto"), ("pool", "hybrid"),
          ("embedding", "proto"), ("ptuning", "label_words"), ("prefix", "repverb"), ("pool", "soft")}
GRID = [(p, v, True) for p in PROMPTS for v in VERBALIZERS]
GRID += [("embedding", "soft", False), ("ptuning", "proto", False), ("prefix", "repverb", False),
         ("pool", "hybrid", False)]


# The cells that take longest (marked slow; make test-fast runs the others).
SLOW_CELLS = {("ptuning", "soft", True), ("ptuning", "proto", True), ("ptuning", "repverb", True),
              ("ptuning", "hybrid", True), ("embedding", "hybrid", True), ("prefix", "hybrid", True),
              ("prefix", "label_words", True), ("pool", "hybrid", False), ("ptuning", "proto", False)}


@pytest.mark.parametrize("kind,verbalizer,frozen", [pytest.param(*cell, marks=pytest.mark.slow) if cell in SLOW_CELLS
                                                    else cell for cell in GRID])
def test_train_eval_export(tmp_path, tiny_data, tiny_models, kind, verbalizer, frozen):
    algorithm = ALGORITHM.get((kind, verbalizer), "fomaml")
    engine = "higher" if (kind, verbalizer) in HIGHER and frozen else "torch_func"
    overrides = tiny_overrides(tiny_data, tiny_models("bert"), **SMALL, **{
        "prompt.kind": kind, "verbalizer.kind": verbalizer, "model.freeze_backbone": frozen,
        "meta.algorithm": algorithm, "meta.engine": engine, "train.episodes": 2, "train.val_every": 2,
        "train.val_episodes": 1, "eval.episodes": 2, "eval.reference": False})
    cfg = Config.load(None, overrides)
    run = tmp_path / "run"
    summary = train(cfg, run)
    assert summary["episodes"] == 2 and summary["skipped_steps"] == 0
    results = evaluate(run)
    for row in results["results"]:
        assert len(row["accuracies_per_episode"]) == 2 and 0.0 <= row["accuracy_mean"] <= 1.0
    export_run(run, tmp_path / "export")

    # Every meta-parameter is counted and exported: LSTM/MLP weights, prefixes, pool keys, scales.
    best = load_file(str(run / "best.safetensors"))
    exported = load_file(str(tmp_path / "export" / "init.safetensors"))
    assert exported.keys() == best.keys()
    counts = json.loads((run / "run.json").read_text())["trainable_params"]
    prompt_numel = sum(v.numel() for k, v in best.items() if k.startswith("prompt."))
    assert counts["prompt"] == prompt_numel > 0
    assert counts["total"] == sum(v.numel() for k, v in best.items() if not k.startswith("inner_lr."))
    assert results["trainable_params"] == counts["total"]
    assert (counts["backbone"] > 0) == (not frozen)
    expected = {"embedding": {"prompt.embeds"}, "ptuning": {"prompt.embeds", "prompt.lstm.weight_ih_l0",
                                                             "prompt.mlp.2.weight"},
                "prefix": {"prompt.prefix"}, "pool": {"prompt.prompts", "prompt.keys"}}[kind]
    assert expected <= exported.keys()
    meta = json.loads((tmp_path / "export" / "metaprompt.json").read_text())
    assert meta["prompt"]["kind"] == kind and meta["verbalizer"]["kind"] == verbalizer
