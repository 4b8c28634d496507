"""The fast-GPU path: length buckets, gradient checkpointing, attention masks without a host
round trip, bf16 and TF32. Each feature must leave the meta-gradient unchanged (up to float
rounding); that part runs on the CPU. The tests marked ``cuda`` need a GPU and are skipped
without one (CI has none): bf16 finiteness, no host-device synchronisation in the inner loop,
and TF32."""
import pytest
import torch

from metaprompt.config import Config, ConfigError
from metaprompt.meta.algorithms import build_algorithm
from metaprompt.meta.engines import build_engine
from metaprompt.model.classifier import Task
from metaprompt.run.setup import build_setup
from tests.conftest import tiny_overrides
from tests.tiny import meta_grad

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def tiny_config(tiny_config):
    """Full float32 matmuls (no TF32) on a GPU: the equivalence checks compare at float32 rounding."""
    return lambda **extra: tiny_config(**{"model.tf32": False, **extra})


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _ragged_task(setup, buckets, seed=0):
    """An episode whose texts are cut to very different lengths (so buckets have work to do)."""
    episode = setup.sampler("train", seed).episode(0)
    generator = torch.Generator().manual_seed(seed)

    def batch(ids, labels):
        tokens = [setup.tokens[i][: 1 + int(torch.randint(0, 14, (1,), generator=generator))] for i in ids]
        return setup.template.batch(tokens, labels, buckets)

    support, query = batch(episode.support, episode.support_labels()), batch(episode.query, episode.query_labels())
    return Task(tuple(int(c) for c in episode.classes), support, query, 0).to(setup.device)


def _meta_grad(setup, cfg, task, algorithm, engine="torch_func"):
    return meta_grad(cfg, setup, task, algorithm, engine, total_steps=10)


def _assert_close(a, b, tol=1e-5):
    assert a.keys() == b.keys() and a
    for group in {name.split(".")[0] for name in a}:
        names = [n for n in a if n.split(".")[0] == group]
        flat_a = torch.cat([a[n].flatten() for n in names])
        flat_b = torch.cat([b[n].flatten() for n in names])
        assert _rel(flat_a, flat_b) <= tol, (group, _rel(flat_a, flat_b))


# -- length buckets ----------------------------------------------------------------------------------
def test_template_buckets_sort_by_length_and_restore_the_order(tiny_config):
    setup = build_setup(tiny_config())
    tokens = [setup.tokens[i][:n] for i, n in zip(range(7), (5, 1, 9, 3, 9, 2, 7))]
    plain = setup.template.batch(tokens, list(range(7)))
    bucketed = setup.template.batch(tokens, list(range(7)), buckets=3)
    assert plain.chunks is None and not plain.full
    assert len(bucketed.chunks) == 3 and sum(len(c) for c in bucketed.chunks) == 7
    widths = [c.input_ids.shape[1] for c in bucketed.chunks]
    assert widths == sorted(widths) and widths[-1] == plain.input_ids.shape[1] and widths[0] < widths[-1]
    rows = torch.cat(bucketed.chunk_rows)
    labels = torch.cat([c.labels for c in bucketed.chunks])
    assert torch.equal(labels, rows) and torch.equal(labels[bucketed.order], torch.arange(7))
    for chunk, chunk_rows in zip(bucketed.chunks, bucketed.chunk_rows):  # each chunk: the same rows, trimmed
        width = chunk.input_ids.shape[1]
        assert torch.equal(chunk.input_ids, plain.input_ids[chunk_rows, :width])
        assert int(plain.attention_mask[chunk_rows, width:].sum()) == 0
    same = setup.template.batch([tokens[0]] * 3, buckets=3)
    assert same.chunks is None and same.full  # nothing to gain: one batch, known to have no padding


@pytest.mark.parametrize("overrides", [
    {"meta.algorithm": "fomaml"},
    {"meta.algorithm": "maml"},
    {"meta.algorithm": "reptile"},
    {"verbalizer.kind": "proto"},  # the support states are bucketed too
    {"prompt.kind": "pool"},  # a prompt per example, gathered per chunk
    {"verbalizer.kind": "label_words"},  # vocabulary logits come back in row order
    {"model.freeze_backbone": False},  # functional_call with backbone fast weights
])
def test_length_buckets_leave_the_meta_gradient_unchanged(tiny_config, overrides):
    cfg = tiny_config(**overrides)
    setup = build_setup(cfg)
    algorithm = cfg.meta.algorithm
    plain = _meta_grad(setup, cfg, _ragged_task(setup, 1), algorithm)
    bucketed = _meta_grad(setup, cfg, _ragged_task(setup, 3), algorithm)
    _assert_close(bucketed, plain)


def test_length_buckets_through_the_config(tiny_config):
    setup = build_setup(tiny_config(**{"model.length_buckets": 4}))
    task = setup.task(setup.sampler("train", 0).episode(0), 0)
    assert task.query.chunks is None or len(task.query.chunks) <= 4
    with pytest.raises(ConfigError, match="length_buckets"):
        tiny_config(**{"model.length_buckets": 0})


# -- attention masks ---------------------------------------------------------------------------------
def test_prepared_masks_give_the_encoders_own_results(tiny_config):
    setup = build_setup(tiny_config())
    encoder = setup.backbone.encoder
    assert encoder.mask_format == "bool"  # SDPA: a 4-D boolean mask, so transformers never reads the mask
    task = _ragged_task(setup, 1)
    batch = task.query
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  mask_positions=batch.mask_positions)
    with torch.no_grad():
        ours = encoder(**kwargs)[0]
        encoder.mask_format = None  # the 2-D mask, handed to transformers
        theirs = encoder(**kwargs)[0]
    assert _rel(ours, theirs) < 1e-5


# -- gradient checkpointing --------------------------------------------------------------------------
def _count_block_runs(setup):
    calls = []
    for block in setup.backbone.encoder.model.base_model.encoder.layer:
        block.attention.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("algorithm,engine,frozen", [
    ("fomaml", "torch_func", True),
    ("maml", "torch_func", True),
    ("maml", "higher", True),  # second order, every inner step checkpointed
    ("fomaml", "torch_func", False),  # backbone fast weights: the recomputation must use them
    ("maml", "higher", False),
])
def test_gradient_checkpointing_leaves_the_meta_gradient_unchanged(tiny_config, algorithm, engine, frozen):
    plain_cfg = tiny_config(**{"model.freeze_backbone": frozen})
    plain = build_setup(plain_cfg)
    task = plain.task(plain.sampler("train", 0).episode(0), 0)
    want = _meta_grad(plain, plain_cfg, task, algorithm, engine)
    cfg = tiny_config(**{"model.freeze_backbone": frozen, "model.gradient_checkpointing": True})
    setup = build_setup(cfg)
    assert setup.backbone.encoder.checkpointed_blocks == 2
    calls = _count_block_runs(setup)
    got = _meta_grad(setup, cfg, task, algorithm, engine)
    _assert_close(got, want)
    # Blocks ran again in backward: (inner steps + 1 query pass) forwards, plus recomputations.
    inner = cfg.meta.inner_steps
    assert len(calls) > 2 * (inner + 1), len(calls)


def test_gradient_checkpointing_recomputes_in_backward(tiny_config):
    setup = build_setup(tiny_config(**{"model.gradient_checkpointing": True}))
    task = setup.task(setup.sampler("train", 0).episode(0), 0)
    calls = _count_block_runs(setup)
    params = setup.classifier.init_params()
    loss = setup.classifier.loss(params, task.query, task)
    assert len(calls) == 2
    loss.backward()
    assert len(calls) == 4  # each of the 2 blocks once more
    with torch.no_grad():
        setup.classifier.loss(params, task.query, task)
    assert len(calls) == 6  # no_grad: nothing to checkpoint


def test_gradient_checkpointing_keeps_fewer_activations(tiny_config):
    """What a pass differentiated once (the query pass) saves for its backward: with
    checkpointing, only what enters and leaves the blocks (about 6x less on the test model)."""
    saved = {}
    for on in (False, True):
        setup = build_setup(tiny_config(**{"model.gradient_checkpointing": on}))
        task = setup.task(setup.sampler("train", 0).episode(0), 0)
        params = setup.classifier.init_params()
        seen = {}

        def pack(x):
            seen[(x.data_ptr(), tuple(x.shape))] = x.numel() * x.element_size()
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            loss = setup.classifier.loss(params, task.query, task)
        loss.backward()
        saved[on] = sum(seen.values())
    assert saved[True] * 3 < saved[False], saved


def test_gradient_checkpointing_refuses_prefix_prompts(tiny_data, tiny_models):
    sets = tiny_overrides(tiny_data, tiny_models("bert"), **{"prompt.kind": "prefix",
                                                             "model.gradient_checkpointing": True})
    with pytest.raises(ConfigError, match="prefix"):
        Config.load(None, sets)


# -- CUDA ----------------------------------------------------------------------------------------------
BF16_CASES = [("fomaml", "torch_func"), ("reptile", "torch_func"), ("maml", "torch_func"), ("maml", "higher")]


def _bf16_vs_fp32(tiny_config, algorithm, engine, device):
    grads = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_config(**{"model.device": device, "model.dtype": dtype, "meta.algorithm": algorithm,
                             "meta.engine": engine})
        setup = build_setup(cfg)
        task = setup.task(setup.sampler("train", 0).episode(0), 0)
        grads[dtype] = _meta_grad(setup, cfg, task, algorithm, engine)
    for name, g in grads["bfloat16"].items():
        assert torch.isfinite(g).all(), (algorithm, name)
    _assert_close(grads["bfloat16"], grads["float32"], tol=5e-2)


@pytest.mark.parametrize("algorithm,engine", BF16_CASES[1:])
def test_bf16_autocast_on_cpu(tiny_config, algorithm, engine):
    _bf16_vs_fp32(tiny_config, algorithm, engine, "cpu")


@cuda
@pytest.mark.parametrize("algorithm,engine", BF16_CASES)
def test_bf16_meta_gradients_are_finite_and_close(tiny_config, algorithm, engine):
    _bf16_vs_fp32(tiny_config, algorithm, engine, "cuda")


@cuda
@pytest.mark.parametrize("overrides", [{}, {"verbalizer.kind": "proto", "model.length_buckets": 2},
                                       {"verbalizer.kind": "label_words"}, {"model.freeze_backbone": False}])
def test_no_host_device_synchronisation_in_the_inner_loop(tiny_config, overrides):
    cfg = tiny_config(**{"model.device": "cuda", **overrides})
    setup = build_setup(cfg)
    task = setup.task(setup.sampler("train", 0).episode(0), 0)
    alg = build_algorithm(cfg.meta, build_engine("torch_func"), setup.classifier)
    params = setup.classifier.init_params()
    alg.accumulate(params, task, 0, 1)  # warm-up: device copies of constant tables happen once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for mode in ("first_order", "second_order"):
            alg.adapt(params, task, mode)
        for p in params.values():
            p.grad = None
        alg.accumulate(params, task, 0, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_tf32_is_configurable(tiny_config):
    build_setup(tiny_config(**{"model.device": "cuda", "model.tf32": True}))
    assert torch.get_float32_matmul_precision() == "high"
    build_setup(tiny_config(**{"model.device": "cuda", "model.tf32": False}))
    assert torch.get_float32_matmul_precision() == "highest"
