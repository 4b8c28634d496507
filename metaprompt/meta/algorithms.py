"""Outer steps: MAML, first-order MAML, MAML++, ProtoNet and Reptile over one inner-loop engine.

:meth:`MetaAlgorithm.accumulate` adds one task's meta-gradient (scaled by ``weight``) to the
``.grad`` of the meta-parameters; the trainer averages a meta-batch of tasks and steps the
outer optimiser. Each algorithm is written once, for every engine and parameter set.

Algorithms are registered by name in :data:`ALGORITHMS` (``meta.algorithm``): a new one is a
:class:`MetaAlgorithm` subclass decorated with ``@ALGORITHMS.register("name")``. They read
their settings from ``settings``, any object with the attributes of the config's ``meta``
section (``inner_steps``, ``inner_lr``, ...); nothing here imports the config layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metaprompt.meta.engines import InnerLoop
from metaprompt.model.classifier import PromptClassifier, Task
from metaprompt.model.template import Batch
from metaprompt.registry import Registry

Params = dict[str, torch.Tensor]
LR_PREFIX = "inner_lr."  # learned per-step, per-group inner learning rates (MAML++ LSLR)


@dataclass
class TaskResult:
    """Training signals of one task (for logging): the meta-objective's loss and accuracy
    (query set after adaptation; Reptile: its last inner mini-batch), as 0-dim tensors on the
    model's device: reading them is left to the trainer, once per outer step (a read per task
    would make the host wait for the device)."""

    loss: torch.Tensor
    accuracy: torch.Tensor


def group_of(name: str) -> str:
    return name.split(".", 1)[0]


class MetaAlgorithm:
    """Shared machinery: inner learning rates, the inner loop on the support set, scoring."""

    name = ""

    def __init__(self, cfg: Any, engine: InnerLoop, classifier: PromptClassifier):
        """``cfg``: the meta-learning settings (the config's ``meta`` section, or any object with its attributes)."""
        self.cfg = cfg
        self.engine = engine
        self.classifier = classifier

    # -- configuration hooks ----------------------------------------------------------------------
    def extra_params(self, params: Params) -> Params:
        """Meta-parameters the algorithm adds (e.g. learned inner learning rates)."""
        return {}

    def mode(self, step: int, total: int) -> str:
        return "first_order"

    def step_weights(self, step: int, total: int) -> list[float]:
        """Weights of the query loss after each inner step (only the last by default)."""
        return [0.0] * (self.cfg.inner_steps - 1) + [1.0]

    # -- shared pieces ----------------------------------------------------------------------------
    def inner_lrs(self, params: Params, fast_names, steps: int | None = None, lr: float | None = None,
                  detach: bool = False) -> list[dict[str, float | torch.Tensor]]:
        """Per step, per fast weight. Learned rates (``inner_lr.<group>`` [steps]) win over ``lr``;
        steps beyond the learned ones reuse the last learned rate."""
        steps = self.cfg.inner_steps if steps is None else steps
        base = self.cfg.inner_lr if lr is None else lr
        backbone = self.cfg.inner_lr_backbone if self.cfg.inner_lr_backbone is not None and lr is None else base
        out = []
        for t in range(steps):
            rates: dict[str, float | torch.Tensor] = {}
            for name in fast_names:
                learned = params.get(LR_PREFIX + group_of(name))
                if learned is None:
                    rates[name] = backbone if group_of(name) == "backbone" else base
                else:
                    value = learned[min(t, learned.shape[0] - 1)]
                    rates[name] = value.detach() if detach else value
            out.append(rates)
        return out

    def adapt(self, params: Params, task: Task, mode: str, steps: int | None = None,
              lr: float | None = None, keep_all: bool = False) -> list[Params]:
        """Inner loop on the support set; returns the fast weights [φ_0, ..., φ_K] when
        ``keep_all``, else [φ_0, φ_K]."""
        fast = self.classifier.task_params(model_params(params), task)
        lrs = self.inner_lrs(params, list(fast), steps, lr, detach=(mode == "detached"))
        return self.engine.adapt(lambda p, t: self.classifier.loss(p, task.support, task), fast, lrs, mode,
                                 keep_all=keep_all)

    # -- the meta-gradient of one task ---------------------------------------------------------
    def accumulate(self, params: Params, task: Task, step: int, total: int, weight: float = 1.0) -> TaskResult:
        """Add ``weight`` × this task's meta-gradient to ``p.grad`` for every meta-parameter.

        ``step`` / ``total``: the outer step and the number of outer steps of the run (for the
        schedules of MAML++)."""
        mode = self.mode(step, total)
        weights = self.step_weights(step, total)
        keep_all = any(w != 0.0 for w in weights[:-1])  # multi-step loss: the query loss after every step
        trajectory = self.adapt(params, task, mode, keep_all=keep_all)
        objective = 0.0
        last_logits = None
        for t, w in enumerate(weights, start=1):
            if w == 0.0:
                continue
            logits = self.classifier(trajectory[t] if keep_all else trajectory[-1], task.query, task)
            objective = objective + w * torch.nn.functional.cross_entropy(logits, task.query.labels)
            if t == len(weights):
                last_logits = logits
        leaves = [p for p in params.values() if p.requires_grad]
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        for p, g in zip(leaves, grads):
            if g is not None:
                _add_grad(p, weight * g)
        return _result(last_logits.detach(), task.query.labels)


def model_params(params: Params) -> Params:
    """The parameters the classifier consumes (algorithm-owned entries removed)."""
    return {k: v for k, v in params.items() if not k.startswith(LR_PREFIX)}


def _add_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    g = g.detach()
    if p.grad is None:
        p.grad = g.clone()
    else:
        p.grad.add_(g)


def _result(logits: torch.Tensor, labels: torch.Tensor) -> TaskResult:
    loss = torch.nn.functional.cross_entropy(logits, labels)
    return TaskResult(loss, (logits.argmax(-1) == labels).float().mean())


#: Meta-learning algorithms by name (``meta.algorithm``); ``name`` is set on each class.
ALGORITHMS: Registry[type[MetaAlgorithm]] = Registry("meta-learning algorithm", attribute="name")


@ALGORITHMS.register("maml")
class MAML(MetaAlgorithm):
    """Second-order MAML (Finn et al. 2017)."""


    def mode(self, step, total):
        return "second_order"


@ALGORITHMS.register("fomaml")
class FOMAML(MetaAlgorithm):
    """First-order MAML: the query gradient at the adapted weights is applied to the init."""



@ALGORITHMS.register("maml++")
class MAMLPlusPlus(MetaAlgorithm):
    """MAML++ (Antoniou et al. 2019): the tricks that apply to transformers, each switchable.

    - multi-step loss: the query loss after every inner step, weighted; the weights anneal
      from uniform toward the last step over ``multi_step_loss_episodes`` outer steps, after
      which only the last step counts;
    - LSLR: a learned inner learning rate per step and per parameter group;
    - derivative-order annealing: first order for ``first_order_fraction`` of training;
    - cosine annealing of the outer learning rate is ``train.schedule=cosine``.
    """


    def extra_params(self, params):
        if not self.cfg.learn_inner_lr:
            return {}
        groups = sorted({group_of(n) for n in params})
        device = next(iter(params.values())).device
        start = {"backbone": self.cfg.inner_lr_backbone or self.cfg.inner_lr}
        return {LR_PREFIX + g: torch.full((self.cfg.inner_steps,), start.get(g, self.cfg.inner_lr), device=device,
                                          requires_grad=True) for g in groups}

    def mode(self, step, total):
        return "first_order" if step < self.cfg.first_order_fraction * total else "second_order"

    def step_weights(self, step, total):
        steps = self.cfg.inner_steps
        if not self.cfg.multi_step_loss or steps == 1:
            return super().step_weights(step, total)
        # Antoniou et al.: non-final weights decay linearly to a floor of 0.03/K, the last takes the
        # rest; after the annealing period only the last step's loss is used.
        if step >= self.cfg.multi_step_loss_episodes:
            return super().step_weights(step, total)
        early = max(0.03 / steps, (1.0 - step / self.cfg.multi_step_loss_episodes) / steps)
        return [early] * (steps - 1) + [1.0 - early * (steps - 1)]


@ALGORITHMS.register("protonet")
class ProtoNet(MetaAlgorithm):
    """Prototypical training (Snell et al. 2017): no inner loop; the meta-gradient is the query
    loss's gradient at the meta-parameters themselves. For classifiers whose verbalizer builds
    the classes from the support set (``verbalizer.kind=proto``): the task is "adapted" by its
    prototypes. ``meta.inner_steps`` is not used in training; an explicit ``steps`` (``eval.steps``)
    still fine-tunes on the support set at test time."""

    def step_weights(self, step, total):
        return [1.0]

    def adapt(self, params, task, mode, steps=None, lr=None, keep_all=False):
        return super().adapt(params, task, mode, steps=0 if steps is None else steps, lr=lr, keep_all=keep_all)


@ALGORITHMS.register("reptile")
class Reptile(MetaAlgorithm):
    """Reptile (Nichol et al. 2018): SGD on the task, then move the init toward the result.

    The pseudo-gradient θ − φ goes to the outer optimiser (with plain SGD at lr ε this is
    θ ← θ + ε(φ − θ)). Inner steps use mini-batches of ``reptile_batch`` examples drawn
    from the whole episode (support + query), seeded by the episode index.
    """

    batch_size = 16

    def accumulate(self, params, task, step, total, weight=1.0):
        examples = _concat(task.support, task.query)
        generator = torch.Generator().manual_seed(task.index)
        order = torch.randperm(len(examples), generator=generator)
        size = min(self.batch_size, len(examples))
        batches = [examples.select(order[(t * size) % len(examples):][:size]) for t in range(self.cfg.inner_steps)]
        fast = self.classifier.task_params(model_params(params), task)
        lrs = self.inner_lrs(params, list(fast), detach=True)
        last = {}

        def loss_fn(p, t):
            logits = self.classifier(p, batches[t], task)
            last["logits"], last["labels"] = logits, batches[t].labels
            return torch.nn.functional.cross_entropy(logits, batches[t].labels)

        final = self.engine.adapt(loss_fn, fast, lrs, "detached", keep_all=False)[-1]
        for name, p in params.items():
            if name in final and p.requires_grad:
                _add_grad(p, weight * (p.detach() - final[name].detach()))
        # No extra forward pass just for logging: report the last inner mini-batch.
        return _result(last["logits"].detach(), last["labels"])


def _concat(a: Batch, b: Batch) -> Batch:
    width = max(a.input_ids.shape[1], b.input_ids.shape[1])

    def pad(x: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    pad_id = 0
    return Batch(
        input_ids=torch.cat([pad(a.input_ids, pad_id), pad(b.input_ids, pad_id)]),
        attention_mask=torch.cat([pad(a.attention_mask, 0), pad(b.attention_mask, 0)]),
        mask_positions=torch.cat([a.mask_positions, b.mask_positions]),
        prompt_positions=torch.cat([a.prompt_positions, b.prompt_positions]),
        labels=torch.cat([a.labels, b.labels]),
    )


def build_algorithm(cfg: Any, engine: InnerLoop, classifier: PromptClassifier) -> MetaAlgorithm:
    """The algorithm ``cfg.algorithm`` (``cfg``: the ``meta`` settings) over ``engine``."""
    return ALGORITHMS.get(cfg.algorithm)(cfg, engine, classifier)
