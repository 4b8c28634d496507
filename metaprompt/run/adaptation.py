"""Meta-test adaptation: adapt an init on a task's support set, score its query set.

Two protocols (``eval.adapt``): ``sgd`` runs the inner loop of training (MAML-consistent,
learned inner learning rates included); ``adamw`` is the MetaPrompting paper's protocol,
several epochs of AdamW on the support set with warm-up and clipping (see
``docs/protocol.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metaprompt.meta.algorithms import MetaAlgorithm, model_params
from metaprompt.model.classifier import Task

Params = dict[str, torch.Tensor]


@dataclass
class AdaptationSettings:
    """How an init adapts at meta-test (the CLI's ``eval`` section has the same attributes and
    is passed as it is).

    ``sgd``: the inner loop of training (``steps`` steps of SGD at ``lr``; learned per-step
    rates in the init win); ``adamw``: the MetaPrompting paper's epochs of AdamW."""

    adapt: str = "sgd"
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 128
    adamw_epochs: int = 15
    adamw_lr: float = 5e-5
    adamw_backbone_lr: float = 1e-5
    adamw_weight_decay: float = 0.1
    adamw_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.adapt not in ("sgd", "adamw"):
            raise ValueError(f"adapt must be 'sgd' or 'adamw', got {self.adapt!r}")


def adapt_sgd(algorithm: MetaAlgorithm, params: Params, task: Task, cfg: AdaptationSettings) -> Params:
    trajectory = algorithm.adapt(params, task, "detached", steps=cfg.steps, lr=cfg.lr)
    return trajectory[-1]


def adapt_adamw(algorithm: MetaAlgorithm, params: Params, task: Task, cfg: AdaptationSettings) -> Params:
    classifier = algorithm.classifier
    with torch.no_grad():
        fast = {k: v.detach().clone() for k, v in classifier.task_params(model_params(params), task).items()}
    for value in fast.values():
        value.requires_grad_(True)
    backbone = [v for k, v in fast.items() if k.startswith("backbone.")]
    others = [v for k, v in fast.items() if not k.startswith("backbone.")]
    groups = [{"params": others, "lr": cfg.adamw_lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.adamw_backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.adamw_weight_decay)
    n = len(task.support)
    per_epoch = math.ceil(n / cfg.adamw_batch_size)
    total = cfg.adamw_epochs * per_epoch
    warmup = max(1, total // 30)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    generator = torch.Generator().manual_seed(task.index)
    for _ in range(cfg.adamw_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.adamw_batch_size):
            batch = task.support.select(order[start:start + cfg.adamw_batch_size])
            loss = classifier.loss(fast, batch, task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(fast.values()), 1.0)
            optimizer.step()
            scheduler.step()
    return {k: v.detach() for k, v in fast.items()}


def adapt_and_score(algorithm: MetaAlgorithm, params: Params, task: Task, cfg: AdaptationSettings) -> float:
    """Query accuracy after adapting ``params`` on the support set of ``task``."""
    fast = adapt_sgd(algorithm, params, task, cfg) if cfg.adapt == "sgd" else adapt_adamw(algorithm, params, task, cfg)
    preds = algorithm.classifier.predict(fast, task.query, task, cfg.batch_size)
    return float((preds == task.query.labels).float().mean())
