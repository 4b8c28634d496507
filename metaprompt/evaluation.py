"""Meta-test for Python users: adapt an init on each task's support set, score its query set.

>>> result = evaluate(clf, init, data.episodes("test", n_way=5, k_shot=1, n_query=15, count=300))  # doctest: +SKIP
>>> result.mean, result.ci95                                                                          # doctest: +SKIP

Nothing is printed or written; the CLI's ``metaprompt eval`` scores through the same
:func:`~metaprompt.run.adaptation.adapt_and_score`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from metaprompt.meta.algorithms import FOMAML
from metaprompt.meta.engines import build_engine
from metaprompt.meta.learners import InnerLoopSettings
from metaprompt.model.classifier import PromptClassifier, Task
from metaprompt.run.adaptation import AdaptationSettings, adapt_and_score
from metaprompt.run.stats import mean_ci95


@dataclass
class EvaluationResult:
    """Query accuracy per episode after adaptation; ``mean`` and ``ci95`` (normal-approximation
    half-width of the 95% interval; None for one episode) over the episodes."""

    accuracies: list[float]
    seconds: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return mean_ci95(self.accuracies)[0]

    @property
    def ci95(self) -> float | None:
        return mean_ci95(self.accuracies)[1]

    def __len__(self) -> int:
        return len(self.accuracies)

    def __repr__(self) -> str:
        ci = "n/a" if self.ci95 is None else f"{100 * self.ci95:.1f}"
        return f"EvaluationResult({100 * self.mean:.1f}% ± {ci} over {len(self)} episodes)"


def evaluate(classifier: PromptClassifier, init: Mapping[str, torch.Tensor], tasks: Iterable, adapt: str = "sgd",
             steps: int = 5, lr: float = 0.1, engine: str = "torch_func", inner_lr_backbone: float | None = None,
             **settings) -> EvaluationResult:
    """Adapt ``init`` (e.g. ``learner.init()`` or ``classifier.init_params()``) on the support
    set of each task (:class:`episodes.TextTask` s or model :class:`Task` s) and score its queries.

    ``steps`` / ``lr``: the SGD inner loop; other keywords: :class:`AdaptationSettings`."""
    how = AdaptationSettings(adapt=adapt, steps=steps, lr=None, **settings)
    algorithm = FOMAML(InnerLoopSettings(inner_steps=steps, inner_lr=lr, inner_lr_backbone=inner_lr_backbone),
                       build_engine(engine), classifier)
    params = {k: v.detach().to(classifier.device) for k, v in init.items()}
    result = EvaluationResult([], [])
    for item in tasks:
        task = item if isinstance(item, Task) else classifier.task(item)
        started = time.perf_counter()
        result.accuracies.append(adapt_and_score(algorithm, params, task, how))
        result.seconds.append(time.perf_counter() - started)
    if not result.accuracies:
        raise ValueError("no tasks to evaluate on")
    return result
