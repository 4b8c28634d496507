"""``metaprompt train``: a :class:`~metaprompt.run.trainer.MetaTrainer` built from a :class:`Config`,
in a run directory of its own (config.yaml, run.json, lock, summary.json; the outer loop,
validation, early stopping, checkpoints and resume are the trainer's).

The run directory's layout and its lock: :mod:`metaprompt.run.rundir`. On resume, config.yaml
is the truth: a config that differs from it in anything but :data:`~metaprompt.config.RUNTIME_KEYS`
is refused, since the checkpoint (optimiser state, learning-rate schedule, episode cursor) was made
with the stored values.

Training episodes are a pure function of (seed, episode index), so the cursor in the
checkpoint is all a resumed run needs to see exactly the episodes it would have seen.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from metaprompt.config import Config, ConfigError
from metaprompt.meta.algorithms import LR_PREFIX
from metaprompt.meta.learners import LEARNERS, Learner, NothingToLearn
from metaprompt.model.classifier import Task
from metaprompt.run.callbacks import Checkpoints, MetricsFile, WandbLogger
from metaprompt.run.distributed import Group, init_group
from metaprompt.run.integrity import check_data_unchanged, check_test_source, data_record, pinned_config
from metaprompt.run.jsonio import dumps_strict
from metaprompt.run.provenance import peak_rss_mb, provenance
from metaprompt.run.rundir import (BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, RUN_FILE,  # noqa: F401
                                   SUMMARY_FILE, RunDirError, check_run_dir, owned, used_entries)
from metaprompt.run.resume import record_resume, resume_changes
from metaprompt.run.setup import Setup, build_setup, fixed_episodes, resolve_device
from metaprompt.run.trainer import MetaTrainer

log = logging.getLogger(__name__)


def make_optimizer(cfg: Config, params: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
    t = cfg.train
    groups: dict[str, dict[str, Any]] = {}

    def add(key: str, tensor: torch.Tensor, lr: float, decay: float) -> None:
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": decay, "name": key})["params"].append(tensor)

    for name, tensor in params.items():
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
        if name.startswith(LR_PREFIX):
            add("inner_lr", tensor, t.inner_lr_lr, 0.0)
        elif name.startswith("backbone."):
            add("backbone_no_decay" if no_decay else "backbone", tensor, t.backbone_lr,
                0.0 if no_decay else t.weight_decay)
        else:
            add("prompt_verbalizer", tensor, t.lr, t.weight_decay)
    param_groups = list(groups.values())
    if t.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=t.lr)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=t.lr)
    # Adam with decoupled=False: weight decay (usually 0) is L2 as in plain Adam.
    return torch.optim.Adam(param_groups, lr=t.lr)


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, total_steps: int):
    t = cfg.train

    def factor(step: int) -> float:
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.schedule == "constant":
            return 1.0
        progress = (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if t.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress  # linear

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _wandb_run(cfg: Config, run_dir: Path):
    if not cfg.log.wandb:
        return None
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    return wandb.init(project=cfg.log.wandb_project, name=run_dir.name, dir=str(run_dir),
                      config=cfg.to_dict(), resume="allow", id=run_dir.name.replace("/", "_"))


def _speed_notes(cfg: Config) -> None:
    """Warnings about speed settings that do less than their name suggests."""
    second_order = cfg.meta.algorithm == "maml" or (cfg.meta.algorithm == "maml++" and cfg.meta.first_order_fraction < 1)
    if cfg.model.dtype == "bfloat16" and second_order:
        log.warning("model.dtype=bfloat16 with second-order meta-gradients: the Hessian-vector products are "
                    "computed in bfloat16 too (about 3 significant digits); the trainer checks the meta-gradient "
                    "for NaN/inf at every outer step (train.on_nonfinite). model.dtype=float32 with model.tf32=true "
                    "is the accurate fast setting for second order (docs/scale.md).")


def train(cfg: Config, run_dir: str | Path, resume: bool = False, setup: Setup | None = None) -> dict[str, Any]:
    """Meta-train the init described by ``cfg`` into ``run_dir`` (or continue it).

    The run directory is owned by this process from before its first write to the end
    (:func:`metaprompt.run.rundir.owned`). Under ``torchrun``/``accelerate launch`` the tasks of
    each meta-batch are split over the processes (:mod:`metaprompt.run.distributed`); rank 0
    writes the run directory and holds its lock."""
    group = init_group(resolve_device(cfg.model.device))
    try:
        with contextlib.ExitStack() as owner:
            return _train(cfg, Path(run_dir), resume, setup, group, owner)
    finally:
        group.close()


def _train(cfg: Config, run_dir: Path, resume: bool, setup: Setup | None, group: Group,
           owner: contextlib.ExitStack) -> dict[str, Any]:
    group.agree(lambda: check_run_dir(run_dir, resume))
    changes: dict[str, tuple[Any, Any]] = {}
    if resume:  # own the run before reading its checkpoint: a second writer is refused at once
        group.agree(lambda: owner.enter_context(owned(run_dir, "train --resume")))
        changes = resume_changes(cfg, run_dir)
    if setup is None:  # data, model, template: all checked before the run dir exists
        with group.main_first():  # rank 0 fills the tokenization cache, the others then read it
            setup = build_setup(cfg)
    _speed_notes(cfg)
    learner = _learner(cfg, setup)
    params = learner.params
    optimizer = make_optimizer(cfg, params)
    total_steps = math.ceil(cfg.train.episodes / cfg.meta.meta_batch)
    scheduler = make_scheduler(cfg, optimizer, total_steps)
    tasks = SetupTasks(setup, group)
    check_test_source(setup)  # an unusable test episode file, too few test examples: fail now, not after training
    if resume:  # a resumed run trains on the data it started with
        check_data_unchanged(setup, run_dir, allow=False,
                             remedy="start a new run on the new data (metaprompt train --out NEW_RUN)")
    counts = setup.classifier.count({k: v for k, v in params.items() if not k.startswith(LR_PREFIX)})

    if not resume:  # own the new directory from its creation; another process may have filled it meanwhile
        def claim() -> None:
            owner.enter_context(owned(run_dir, "train"))
            if used_entries(run_dir):
                raise RunDirError(f"run directory {run_dir} was written by another process meanwhile "
                                  f"({', '.join(used_entries(run_dir)[:3])}); choose another --out")
        group.agree(claim)

    t = cfg.train
    trainer = MetaTrainer(learner, tasks, run_dir, episodes=t.episodes, meta_batch=cfg.meta.meta_batch,
                          val_every=t.val_every, checkpoint_every=t.checkpoint_every, patience=t.patience,
                          optimizer=optimizer, scheduler=scheduler, grad_clip=t.grad_clip,
                          on_nonfinite=t.on_nonfinite, adaptation=cfg.eval, callbacks=[], group=group,
                          progress=cfg.log.progress)
    metrics: MetricsFile | None = None
    if resume:
        state = trainer.restore(run_dir / CHECKPOINT_FILE)
        if state.step > total_steps:
            raise ConfigError(f"config key 'train.episodes': {run_dir} has trained {state.step} outer steps already, "
                              f"more than the {total_steps} that train.episodes={cfg.train.episodes} allows")
        if group.is_main:
            record_resume(run_dir, state.step, changes)
            for stale in run_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)  # left by a kill during an atomic write
            # A checkpoint taken before the first validation (empty history) keeps no metrics line.
            metrics = MetricsFile(run_dir / METRICS_FILE, keep_until_step=state.step if state.history else -1)
            print(f"resuming {run_dir} at outer step {state.step}/{total_steps}")
    elif group.is_main:
        pinned = pinned_config(cfg, setup)  # absolute paths: eval from another folder reads the same files
        (run_dir / CONFIG_FILE).write_text(pinned.to_yaml(), encoding="utf-8")
        info = {**provenance(), "trainable_params": counts, "dataset_sha256": setup.dataset.sha256,
                "data_files": data_record(setup), "model": cfg.model.name, "distributed": group.describe(),
                "config": pinned.to_dict()}  # what trained the run: a later hand edit of config.yaml is refused
        (run_dir / RUN_FILE).write_text(dumps_strict(info, indent=2), encoding="utf-8")
        metrics = MetricsFile(run_dir / METRICS_FILE)
    if group.is_main:
        print(f"trainable parameters (meta-learned): {counts['total']:,} "
              f"(prompt {counts['prompt']:,}, verbalizer {counts['verbalizer']:,}, backbone {counts['backbone']:,})"
              + (f"; {group.world_size} processes" if group.enabled else ""))
        trainer.callbacks = [metrics, Checkpoints(run_dir / CHECKPOINT_FILE, run_dir / BEST_FILE,
                                                  {"base_model": setup.backbone.facts()})]
        wandb_run = _wandb_run(cfg, run_dir)
        if wandb_run:
            trainer.callbacks.append(WandbLogger(wandb_run))
    trainer.fit(resume=resume)
    return _summary(cfg, trainer, setup, group, counts, run_dir)


class SetupTasks:
    """The trainer's tasks from a CLI :class:`Setup`: training episodes of the config's seed,
    ``train.val_episodes`` fixed validation episodes (this process's share is built)."""

    def __init__(self, setup: Setup, group: Group):
        cfg = setup.cfg
        self.setup = setup
        self.sampler = setup.sampler("train", cfg.seed)
        _, episodes = fixed_episodes(setup, "val", cfg.train.val_episodes, cfg.train.val_seed)
        self.val_count = len(episodes)
        self._val = {i: setup.task(episodes[i], i) for i in group.slots(len(episodes))}

    def train_task(self, index: int) -> Task:
        return self.setup.task(self.sampler.episode(index), index)

    def val_task(self, index: int) -> Task:
        return self._val[index]


def _learner(cfg: Config, setup: Setup) -> Learner:
    m = cfg.meta
    try:
        return LEARNERS[m.algorithm](setup.classifier, inner_lr=m.inner_lr, inner_steps=m.inner_steps,
                                     engine=m.engine, inner_lr_backbone=m.inner_lr_backbone,
                                     multi_step_loss=m.multi_step_loss,
                                     multi_step_loss_episodes=m.multi_step_loss_episodes,
                                     learn_inner_lr=m.learn_inner_lr, first_order_fraction=m.first_order_fraction)
    except NothingToLearn:  # e.g. meta.learn=[prompt] with prompt.length=0
        raise ConfigError(f"config key 'meta.learn': nothing to meta-learn: {cfg.meta.learn} hold no parameters with "
                          f"prompt.length={cfg.prompt.length}, verbalizer.kind={cfg.verbalizer.kind} and a frozen "
                          "backbone") from None


def _summary(cfg: Config, trainer: MetaTrainer, setup: Setup, group: Group, counts: dict[str, int],
             run_dir: Path) -> dict[str, Any]:
    state = trainer.state
    episodes_done = state.step * cfg.meta.meta_batch
    eps = episodes_done / state.train_seconds if state.train_seconds > 0 else 0.0
    summary = {
        "outer_steps": state.step, "episodes": episodes_done, "stopped_early": state.stopped_early,
        "best_val_accuracy": state.best_val, "best_step": state.best_step,
        "best_episodes": state.best_step * cfg.meta.meta_batch,
        "train_seconds": state.train_seconds,
        "seconds_per_episode": state.train_seconds / max(1, episodes_done),
        "episodes_per_second": eps, "processes": group.world_size,
        "skipped_steps": state.skipped_steps, "peak_rss_mb": group.maximum(peak_rss_mb()),
        "trainable_params": counts, "validation": state.history,
    }
    if setup.device.type == "cuda":  # the largest of the processes
        summary["peak_gpu_memory_mb"] = group.maximum(torch.cuda.max_memory_allocated(setup.device) / 2**20)
    if group.is_main:
        (run_dir / SUMMARY_FILE).write_text(dumps_strict(summary, indent=2), encoding="utf-8")
        gpu = f", peak GPU memory {summary['peak_gpu_memory_mb']:.0f} MB" if "peak_gpu_memory_mb" in summary else ""
        print(f"meta-training speed: {eps:.2f} episodes/s over {group.world_size} process(es){gpu}")
    group.barrier()
    return summary
