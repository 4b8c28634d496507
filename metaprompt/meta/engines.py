"""Inner-loop engines: differentiable SGD on explicitly passed parameters.

An engine takes a loss function of a parameter dict, the initial fast weights, per-step
learning rates and a gradient mode, and returns the trajectory of fast weights. It knows
nothing about models, prompts or algorithms: every meta-learning algorithm is written once
against :meth:`InnerLoop.adapt`.

Gradient modes
--------------
``second_order``  inner gradients keep their graph; the meta-gradient includes Hessian terms.
``first_order``   inner gradients are constants (no graph is built for them), but the update
                  chain ``φ_{t+1} = φ_t − α_t g_t`` stays differentiable, so the query gradient
                  reaches the init through the identity (FOMAML) and learned learning rates
                  get ``−⟨∂L/∂φ_K, g_t⟩``.
``detached``      no graph at all (meta-test adaptation, Reptile): cheapest.

Engines
-------
``torch_func``  the model runs through :func:`torch.func.functional_call` (in the
                classifier); inner gradients by ``torch.autograd.grad`` (or, selectable,
                :func:`torch.func.grad`).
``higher``      gradients and updates by ``higher``'s differentiable SGD (the spec asks for
                it; unmaintained since 2020, kept as a cross-check and for users who rely on it).
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable, Mapping, Sequence

import torch

from metaprompt.registry import Registry

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, int], torch.Tensor]  # (fast weights, inner step) -> loss
LearningRates = Sequence[Mapping[str, "float | torch.Tensor"]]  # per step: parameter name -> lr
MODES = ("second_order", "first_order", "detached")


@contextlib.contextmanager
def attention_for(mode: str):
    """Double backward through attention needs the SDPA *math* kernel (the fused CPU/GPU kernels
    have no second derivative). The engines run each second-order inner step in this context,
    so a user never has to choose an attention implementation; the query pass keeps the fast
    kernel, since it is differentiated only once."""
    if mode != "second_order":
        yield
        return
    from metaprompt.compat import math_attention

    with math_attention():
        yield


class InnerLoop(ABC):
    """An inner-loop engine; engines are registered by name in :data:`ENGINES` (``meta.engine``)
    with ``@ENGINES.register("name")``, which also sets ``name``."""

    name = ""

    @abstractmethod
    def adapt(self, loss_fn: LossFn, params: Params, lrs: LearningRates, mode: str,
              keep_all: bool = True) -> list[Params]:
        """Run ``len(lrs)`` SGD steps from ``params``; return [φ_0, φ_1, ..., φ_K], or only
        [φ_0, φ_K] when not ``keep_all`` (intermediate weights are then freed as soon as the
        autograd graph allows: a copy of a whole backbone per step otherwise)."""


def _record(trajectory: list[Params], params: Params, keep_all: bool) -> None:
    """Append the new fast weights, or (not ``keep_all``) let them replace the previous step's."""
    if keep_all or len(trajectory) == 1:
        trajectory.append(params)
    else:
        trajectory[-1] = params


#: Inner-loop engines by name (``meta.engine``).
ENGINES: Registry[type[InnerLoop]] = Registry("inner-loop engine", attribute="name")


@ENGINES.register("torch_func")
class TorchFuncLoop(InnerLoop):
    """Stateless forward through ``torch.func.functional_call`` (in the classifier), inner
    gradients by ``torch.autograd.grad`` (with ``create_graph`` for second order).

    ``torch.func.grad`` gives the same gradients (``grad_transform=True`` keeps it selectable,
    and the tests compare the two), but its per-operation dispatch made host-bound GPU
    meta-training 1.3–1.5× slower than ``higher`` on an H100, and it fails on second order
    under bf16 autocast; plain autograd has neither problem.
    """


    def __init__(self, grad_transform: bool = False):
        self.grad_transform = grad_transform

    def _grads(self, loss_fn, params: Params, step: int, mode: str) -> Params:
        if self.grad_transform:
            inputs = params if mode == "second_order" else {k: v.detach() for k, v in params.items()}
            return torch.func.grad(lambda p: loss_fn(p, step))(inputs)
        if mode == "second_order":
            # Task constants (e.g. class embeddings) are fast weights too: let them carry a gradient.
            inputs = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in params.items()}
        else:
            # Gradients at detached copies: nothing of the inner backward enters the outer graph.
            inputs = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        loss = loss_fn(inputs, step)
        grads = torch.autograd.grad(loss, list(inputs.values()), create_graph=(mode == "second_order"),
                                    allow_unused=True)
        return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(inputs.items(), grads)}

    def adapt(self, loss_fn, params, lrs, mode, keep_all=True):
        assert mode in MODES, mode
        trajectory = [params]
        for step, lr in enumerate(lrs):
            with attention_for(mode):
                grads = self._grads(loss_fn, params, step, mode)
            with torch.no_grad() if mode == "detached" else contextlib.nullcontext():
                params = {k: _sgd(v, grads[k], lr[k]) for k, v in params.items()}
            del grads
            _record(trajectory, params, keep_all)
        return trajectory


def _sgd(value: torch.Tensor, grad: torch.Tensor, lr) -> torch.Tensor:
    if isinstance(lr, torch.Tensor):  # learned (LSLR) rates stay in the graph
        return value - lr * grad
    return torch.add(value, grad, alpha=-lr)  # one fused op, one allocation


@ENGINES.register("higher")
class HigherLoop(InnerLoop):
    """``higher``'s ``DifferentiableSGD`` with one parameter group per tensor (per-tensor lrs)."""


    def adapt(self, loss_fn, params, lrs, mode, keep_all=True):
        import higher  # optional at import time: only this engine needs it

        assert mode in MODES, mode
        names = list(params)
        # higher maps its parameter groups onto reference tensors; placeholders stand in for
        # them, since the real fast weights may be non-leaf tensors (derived per task).
        placeholders = [torch.nn.Parameter(torch.empty(0)) for _ in names]
        optimizer = torch.optim.SGD([{"params": [p]} for p in placeholders], lr=1.0)
        cls = _FirstOrderSGD if mode == "first_order" else higher.optim.DifferentiableSGD
        diffopt = cls(optimizer, placeholders, track_higher_grads=(mode == "second_order"))
        current = [params[n] for n in names]
        # Every fast weight is adapted, constants of the task (e.g. class embeddings) included;
        # higher skips tensors that do not require grad, torch.func.grad does not.
        current = [p.detach().requires_grad_(True) if mode == "detached" or not p.requires_grad else p
                   for p in current]
        trajectory = [params]
        for step, lr in enumerate(lrs):
            with attention_for(mode):
                loss = loss_fn(dict(zip(names, current)), step)
                current = diffopt.step(loss, params=current, override={"lr": [lr[n] for n in names]})
            _record(trajectory, dict(zip(names, current)), keep_all)
        if mode == "detached":
            trajectory[1:] = [{k: v.detach() for k, v in p.items()} for p in trajectory[1:]]
        return trajectory


def _make_first_order_sgd():
    import higher

    class FirstOrderSGD(higher.optim.DifferentiableSGD):
        """higher's SGD with ``create_graph=False`` for the inner gradients, while the update
        ``p - lr * g`` stays in the graph (higher alone either builds second-order graphs or
        detaches the parameters; FOMAML with learned lrs needs neither)."""

        def step(self, loss, params=None, override=None, grad_callback=None, **kwargs):
            self._track_higher_grads = False  # -> autograd.grad(create_graph=False) inside step
            try:
                super().step(loss, params=params, override=override, grad_callback=grad_callback, **kwargs)
            finally:
                self._track_higher_grads = True
            connected = list(params)
            for group, mapping in zip(self.param_groups, self._group_to_param_list):
                for p, index in zip(group["params"], mapping):
                    connected[index] = p  # the un-detached result of this step's update
            return connected

    return FirstOrderSGD


class _LazyFirstOrderSGD:
    _cls = None

    def __call__(self, *args, **kwargs):
        if _LazyFirstOrderSGD._cls is None:
            _LazyFirstOrderSGD._cls = _make_first_order_sgd()
        return _LazyFirstOrderSGD._cls(*args, **kwargs)


_FirstOrderSGD = _LazyFirstOrderSGD()

def build_engine(name: str) -> InnerLoop:
    return ENGINES.get(name)()
