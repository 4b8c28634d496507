"""The two inner-loop engines agree, second order is real, first order builds no second-order graph."""
import pytest
import torch

from metaprompt.meta.algorithms import LR_PREFIX, build_algorithm
from metaprompt.meta.engines import TorchFuncLoop, attention_for, build_engine
from tests.tiny import directional_derivatives, setup_and_task


def _setup(tiny_config, dtype=torch.float32, **overrides):
    cfg = tiny_config(**overrides)
    return (cfg, *setup_and_task(cfg, dtype))


def _meta_grad(cfg, setup, task, algorithm, engine, step=0, total=10, params=None):
    cfg.meta.algorithm = algorithm
    engine = build_engine(engine) if isinstance(engine, str) else engine
    alg = build_algorithm(cfg.meta, engine, setup.classifier)
    if params is None:
        params = setup.classifier.init_params()
        params.update(alg.extra_params(params))
    alg.accumulate(params, task, step, total)
    return {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


CASES = [
    # algorithm, outer step (of 10; maml++ is first order for the first 3), frozen backbone
    ("maml", 0, True),
    ("fomaml", 0, True),
    ("maml++", 1, True),   # first-order phase, multi-step loss, learned inner lrs
    ("maml++", 8, True),   # second-order phase
    ("reptile", 0, True),
    ("maml", 0, False),
    ("fomaml", 0, False),
]


@pytest.mark.parametrize("algorithm,step,frozen", CASES)
def test_engines_give_the_same_meta_gradient(tiny_config, algorithm, step, frozen):
    cfg, setup, task = _setup(tiny_config, **{"model.freeze_backbone": frozen, "meta.inner_steps": 2})
    a = _meta_grad(cfg, setup, task, algorithm, "torch_func", step)
    b = _meta_grad(cfg, setup, task, algorithm, "higher", step)
    c = _meta_grad(cfg, setup, task, algorithm, TorchFuncLoop(grad_transform=True), step)
    assert a.keys() == b.keys() == c.keys() and a
    if not frozen:
        assert any(k.startswith("backbone.") for k in a)
    if algorithm == "maml++":
        assert any(k.startswith(LR_PREFIX) for k in a), "learned inner lrs get a meta-gradient"
    # Per parameter group (prompt, verbalizer, backbone, inner_lr): a tensor whose true gradient
    # is zero (e.g. attention key biases) holds only rounding noise, so tensors are not compared alone.
    for group in {name.split(".")[0] for name in a}:
        names = [n for n in a if n.split(".")[0] == group]
        flat_a = torch.cat([a[n].flatten() for n in names])
        flat_b = torch.cat([b[n].flatten() for n in names])
        assert _rel(flat_a, flat_b) <= 1e-5, (group, _rel(flat_a, flat_b))
        flat_c = torch.cat([c[n].flatten() for n in names])  # torch.func.grad for the inner gradients
        assert _rel(flat_a, flat_c) <= 1e-5, (group, _rel(flat_a, flat_c))


def test_second_order_gradient_matches_finite_differences(tiny_config):
    cfg, setup, task = _setup(tiny_config, dtype=torch.float64, **{"meta.inner_steps": 2, "meta.inner_lr": 0.5})
    clf = setup.classifier
    cfg.meta.algorithm = "maml"
    alg = build_algorithm(cfg.meta, build_engine("torch_func"), clf)
    params = clf.init_params()
    alg.accumulate(params, task, 0, 1)
    grads = {k: p.grad.clone() for k, p in params.items()}
    fo = _meta_grad(cfg, setup, task, "fomaml", "torch_func")
    numeric, analytic, first_order = directional_derivatives(alg, clf, task, params, grads, fo)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (numeric, analytic)
    # The Hessian term is really there: first order is measurably different.
    assert abs(numeric - first_order) > 100 * abs(numeric - analytic)


def _graph_ops(tensor):
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return names


@pytest.mark.parametrize("engine", ["torch_func", "higher"])
def test_first_order_builds_no_second_order_graph(tiny_config, engine):
    cfg, setup, task = _setup(tiny_config, **{"meta.inner_steps": 2})
    alg = build_algorithm(cfg.meta, build_engine(engine), setup.classifier)
    params = setup.classifier.init_params()
    model_ops = {"MmBackward0", "AddmmBackward0", "BmmBackward0", "SoftmaxBackward0", "NativeLayerNormBackward0",
                 "ScaledDotProductAttentionMathBackward0", "GeluBackward0"}
    fo = alg.adapt(params, task, "first_order")[-1]
    for name, value in fo.items():
        if value.grad_fn is not None:
            ops = _graph_ops(value)
            assert not ops & model_ops, (name, ops & model_ops)
            assert ops <= {"SubBackward0", "AddBackward0", "MulBackward0", "AccumulateGrad", "CloneBackward0",
                           "ToCopyBackward0", "UnsqueezeBackward0", "SelectBackward0"}, ops
    with attention_for("second_order"):
        so = alg.adapt(params, task, "second_order")[-1]
    assert _graph_ops(so["prompt.embeds"]) & model_ops, "second order keeps the inner backward in the graph"


def test_meta_batch_averages_task_gradients(tiny_config):
    cfg, setup, task0 = _setup(tiny_config)
    task1 = setup.task(setup.sampler("train", cfg.seed).episode(1), 1)
    alg = build_algorithm(cfg.meta, build_engine("torch_func"), setup.classifier)
    separate = []
    for task in (task0, task1):
        params = setup.classifier.init_params()
        alg.accumulate(params, task, 0, 1)
        separate.append({k: p.grad.clone() for k, p in params.items()})
    params = setup.classifier.init_params()
    for task in (task0, task1):
        alg.accumulate(params, task, 0, 1, weight=0.5)
    for name, p in params.items():
        torch.testing.assert_close(p.grad, 0.5 * (separate[0][name] + separate[1][name]))


def _reptile_phi_by_hand(cfg, classifier, params, task):
    """φ computed without the algorithm's code: plain SGD with torch.autograd.grad on the
    mini-batches Reptile documents (``reptile_batch`` examples of support + query, in the order
    of a permutation seeded by the episode index)."""
    from metaprompt.meta.algorithms import Reptile, _concat

    examples = _concat(task.support, task.query)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(task.index))
    size = min(Reptile.batch_size, len(examples))
    fast = {k: v.detach().clone().requires_grad_(True)
            for k, v in classifier.task_params({k: v.detach() for k, v in params.items()}, task).items()}
    for t in range(cfg.meta.inner_steps):
        batch = examples.select(order[(t * size) % len(examples):][:size])
        loss = torch.nn.functional.cross_entropy(classifier(fast, batch, task), batch.labels)
        names = [k for k, v in fast.items() if v.requires_grad]
        grads = torch.autograd.grad(loss, [fast[k] for k in names])
        fast = {**fast, **{k: (fast[k] - cfg.meta.inner_lr * g).detach().requires_grad_(True)
                           for k, g in zip(names, grads)}}
    return {k: v.detach() for k, v in fast.items()}


def test_reptile_moves_toward_adapted_weights(tiny_config):
    cfg, setup, task = _setup(tiny_config, **{"meta.algorithm": "reptile", "meta.inner_steps": 3})
    alg = build_algorithm(cfg.meta, build_engine("torch_func"), setup.classifier)
    params = setup.classifier.init_params()
    before = {k: v.detach().clone() for k, v in params.items()}
    phi = _reptile_phi_by_hand(cfg, setup.classifier, params, task)
    alg.accumulate(params, task, 0, 1)
    # The pseudo-gradient is θ − φ (so that a descent step moves θ toward φ), with φ found by hand.
    assert any((phi[k] - before[k]).abs().max() > 1e-6 for k in params)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, before[k] - phi[k], rtol=1e-4, atol=1e-6)
    optimizer = torch.optim.SGD(params.values(), lr=0.5)
    optimizer.step()
    # θ ← θ − ε(θ − φ): halfway to the adapted weights.
    for k in params:
        torch.testing.assert_close(params[k].detach(), before[k] + 0.5 * (phi[k] - before[k]), rtol=1e-4,
                                   atol=1e-6)


def test_maml_plus_plus_schedules(tiny_config):
    cfg, setup, _ = _setup(tiny_config, **{"meta.algorithm": "maml++", "meta.inner_steps": 4,
                                            "meta.multi_step_loss_episodes": 100, "meta.first_order_fraction": 0.5})
    alg = build_algorithm(cfg.meta, build_engine("torch_func"), setup.classifier)
    first, mid, late = alg.step_weights(0, 200), alg.step_weights(50, 200), alg.step_weights(100, 200)
    assert first == pytest.approx([0.25] * 4)
    assert mid == pytest.approx([0.125] * 3 + [0.625])
    assert alg.step_weights(99, 200)[0] == pytest.approx(0.03 / 4)
    assert late == [0.0, 0.0, 0.0, 1.0]
    assert alg.mode(49, 100) == "first_order" and alg.mode(50, 100) == "second_order"
    cfg.meta.multi_step_loss = False
    assert alg.step_weights(0, 100) == [0.0, 0.0, 0.0, 1.0]
    extra = alg.extra_params(setup.classifier.init_params())
    assert set(extra) == {"inner_lr.prompt", "inner_lr.verbalizer"}
    cfg.meta.learn_inner_lr = False
    assert alg.extra_params(setup.classifier.init_params()) == {}
