"""Meta-learners for Python users: an algorithm wrapped around a classifier, learn2learn-style.

A learner holds the meta-parameters (the init being learned); the outer loop is yours::

    learner = FOMAML(clf, inner_lr=0.1, inner_steps=5)
    opt = torch.optim.Adam(learner.parameters(), lr=2e-3)
    for task in data.episodes("train", n_way=5, k_shot=1, n_query=15, count=300):
        opt.zero_grad()
        fast = learner.adapt(task.support)              # fast weights after the inner loop
        learner.loss(fast, task.query).backward()       # the meta-gradient lands on learner.parameters()
        opt.step()
    init = learner.init()                               # {name: tensor}

The model stays stateless (as in ``higher``): fast weights are plain dicts. Everything runs
through :class:`~metaprompt.meta.algorithms.MetaAlgorithm` and one inner-loop engine, the
same code the CLI trainer uses (:meth:`Learner.accumulate`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from metaprompt.meta import algorithms
from metaprompt.meta.engines import build_engine
from metaprompt.model.classifier import PromptClassifier, Task

Params = dict[str, torch.Tensor]


@dataclass
class InnerLoopSettings:
    """What the algorithms read (the CLI's ``meta.*`` keys of the same names)."""

    inner_steps: int = 5
    inner_lr: float = 0.1
    inner_lr_backbone: float | None = None
    multi_step_loss: bool = True
    multi_step_loss_episodes: int = 100
    learn_inner_lr: bool = True
    first_order_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.inner_steps < 0:  # 0: no inner loop (prototype verbalizers adapt by their prototypes)
            raise ValueError(f"inner_steps must be ≥ 0, got {self.inner_steps}")
        if not self.inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0, got {self.inner_lr}")


class NothingToLearn(ValueError):
    """The classifier's learned groups hold no parameters."""


class Adapted(dict):
    """Fast weights after the inner loop, with the task they were adapted on (and, for a
    multi-step loss, the weights after every inner step)."""

    task: Task
    trajectory: list[Params]


class Learner:
    """Base of :class:`MAML`, :class:`FOMAML`, :class:`MAMLpp` and :class:`Reptile`.

    ``engine``: ``torch_func`` or ``higher``. ``total_steps``: the outer steps planned (MAML++'s
    schedules need it; :meth:`loss` counts the steps)."""

    algorithm_class: type[algorithms.MetaAlgorithm] = algorithms.MetaAlgorithm

    def __init__(self, classifier: PromptClassifier, inner_lr: float = 0.1, inner_steps: int = 5,
                 engine: str = "torch_func", total_steps: int = 1000, **settings):
        unknown = set(settings) - {f.name for f in fields(InnerLoopSettings)}
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown setting(s) {sorted(unknown)}")
        self.settings = InnerLoopSettings(inner_steps=inner_steps, inner_lr=inner_lr, **settings)
        self.classifier = classifier
        self.algorithm = self.algorithm_class(self.settings, build_engine(engine), classifier)
        self.params: Params = classifier.init_params()
        self.params.update(self.algorithm.extra_params(self.params))
        if not any(p.numel() for p in self.params.values()):
            raise NothingToLearn("nothing to meta-learn: the classifier's learned groups hold no parameters")
        self.step = 0
        self.total_steps = total_steps

    def parameters(self) -> list[torch.Tensor]:
        """The meta-parameters, for an outer optimiser."""
        return list(self.params.values())

    def named_parameters(self) -> Params:
        return dict(self.params)

    def init(self) -> Params:
        """The learned init: detached copies of the meta-parameters."""
        return {k: v.detach().clone() for k, v in self.params.items()}

    def task(self, examples) -> Task:
        """The model task of a support or query set (:class:`episodes.Examples`), of a whole
        :class:`episodes.TextTask`, or a model :class:`Task` as it is."""
        if isinstance(examples, Task):
            return examples
        return self.classifier.task(getattr(examples, "task", examples))

    # -- the user's loop ------------------------------------------------------------------------------
    def adapt(self, support, steps: int | None = None, lr: float | None = None) -> Adapted:
        """Fast weights after the inner loop on ``support``, differentiable with respect to the
        meta-parameters as the algorithm's gradient mode says."""
        task = self.task(support)
        mode = self.algorithm.mode(self.step, self.total_steps)
        keep_all = any(w != 0.0 for w in self.algorithm.step_weights(self.step, self.total_steps)[:-1])
        trajectory = self.algorithm.adapt(self.params, task, mode, steps=steps, lr=lr, keep_all=keep_all)
        fast = Adapted(trajectory[-1])
        fast.task, fast.trajectory = task, trajectory
        return fast

    def loss(self, fast: Adapted, query) -> torch.Tensor:
        """The meta-objective on ``query``: the query loss at the adapted weights (MAML++: the
        weighted losses after each inner step). Calling it ends an outer step."""
        task = self.task(query)
        weights = self.algorithm.step_weights(self.step, self.total_steps)
        objective = torch.zeros((), device=self.classifier.device)
        for t, w in enumerate(weights, start=1):
            if w:
                params = fast.trajectory[t] if len(fast.trajectory) > 2 else fast.trajectory[-1]
                objective = objective + w * self.classifier.loss(params, task.query, task)
        self.step += 1
        return objective

    def accumulate(self, task: Task, weight: float = 1.0) -> algorithms.TaskResult:
        """One task's meta-gradient, times ``weight``, added to ``.grad`` of the meta-parameters
        (what :class:`~metaprompt.run.trainer.MetaTrainer` calls; the step counter is the trainer's)."""
        return self.algorithm.accumulate(self.params, task, self.step, self.total_steps, weight)

    @torch.no_grad()
    def accuracy(self, fast: Params, query) -> float:
        task = self.task(query)
        preds = self.classifier.predict(fast, task.query, task)
        return float((preds == task.query.labels).float().mean())


class MAML(Learner):
    """Second-order MAML (Finn et al. 2017)."""

    algorithm_class = algorithms.MAML


class FOMAML(Learner):
    """First-order MAML: the query gradient at the adapted weights is applied to the init."""

    algorithm_class = algorithms.FOMAML


class MAMLpp(Learner):
    """MAML++ (Antoniou et al. 2019): multi-step loss, learned per-step inner rates (LSLR) and
    first-order for the first ``first_order_fraction`` of ``total_steps``."""

    algorithm_class = algorithms.MAMLPlusPlus


class ProtoNet(Learner):
    """Prototypical training (Snell et al. 2017): no inner loop, the query loss at the
    meta-parameters themselves; for prototype verbalizers (``verbalizers.Proto``)."""

    algorithm_class = algorithms.ProtoNet


class Reptile(Learner):
    """Reptile (Nichol et al. 2018). :meth:`adapt` runs plain SGD (no graph); :meth:`loss`
    returns the query loss at the adapted weights whose gradient is the pseudo-gradient
    θ − φ, so the user's loop is the same as for MAML (an SGD outer step of lr ε moves the
    init by ε(φ − θ))."""

    algorithm_class = algorithms.Reptile

    def adapt(self, support, steps=None, lr=None):
        task = self.task(support)
        trajectory = self.algorithm.adapt(self.params, task, "detached", steps=steps, lr=lr)
        fast = Adapted(trajectory[-1])
        fast.task, fast.trajectory = task, trajectory
        return fast

    def loss(self, fast, query):
        task = self.task(query)
        with torch.no_grad():
            value = self.classifier.loss(fast, task.query, task)
        # d/dθ Σ ⟨θ, sg(θ − φ)⟩ = θ − φ; the value shown is the query loss.
        pull = sum((p * (p.detach() - fast[name].detach())).sum() for name, p in self.params.items()
                   if name in fast and p.requires_grad)
        self.step += 1
        return value + pull - pull.detach()


#: The learner of each algorithm name of the CLI (``meta.algorithm``).
LEARNERS: dict[str, type[Learner]] = {cls.algorithm_class.name: cls for cls in (MAML, FOMAML, MAMLpp, ProtoNet, Reptile)}
