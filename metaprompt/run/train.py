"""Meta-training: outer loop, validation on the val classes, early stopping, checkpoints, resume.

The run directory's layout and its lock: :mod:`metaprompt.run.rundir`. On resume, config.yaml
is the truth: a config that differs from it in anything but :data:`~metaprompt.config.RUNTIME_KEYS`
is refused, since the checkpoint (optimiser state, learning-rate schedule, episode cursor) was made
with the stored values.

Training episodes are a pure function of (seed, episode index), so the cursor in the
checkpoint is all a resumed run needs to see exactly the episodes it would have seen.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metaprompt.config import Config, ConfigError
from metaprompt.errors import UserError
from metaprompt.meta.algorithms import LR_PREFIX, MetaAlgorithm, build_algorithm
from metaprompt.meta.engines import build_engine
from metaprompt.run.adaptation import adapt_and_score
from metaprompt.run.checkpoint import load_checkpoint, save_checkpoint, save_init
from metaprompt.run.distributed import Group, init_group
from metaprompt.run.integrity import check_data_unchanged, check_test_source, data_record, pinned_config
from metaprompt.run.jsonio import dumps_strict
from metaprompt.run.provenance import peak_rss_mb, provenance
from metaprompt.run.rundir import (BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, RUN_FILE,  # noqa: F401
                                   SUMMARY_FILE, RunDirError, check_run_dir, owned, used_entries)
from metaprompt.run.resume import record_resume, resume_changes
from metaprompt.run.setup import Setup, build_setup, fixed_episodes, resolve_device
from metaprompt.run.stats import mean_ci95

log = logging.getLogger(__name__)


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (the message says why and what is left on disk)."""


@dataclass
class TrainState:
    step: int = 0  # outer steps completed (the episode cursor is step × meta_batch)
    best_val: float = -1.0
    best_step: int = -1
    bad_checks: int = 0
    train_seconds: float = 0.0
    skipped_steps: int = 0
    stopped_early: bool = False
    last_val: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # validation points

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


def validate(setup: Setup, algorithm: MetaAlgorithm, params, tasks, progress: bool = False) -> list[float]:
    accuracies = []
    for task in tqdm(tasks, desc="validating", leave=False, disable=not progress):
        accuracies.append(adapt_and_score(algorithm, params, task, setup.cfg.eval))
    return accuracies


class _Metrics:
    """Appends JSON lines; on resume, drops lines written after the checkpoint."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if record.get("step", 0) <= keep_until_step:
                    kept.append(line)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, path)  # a kill now leaves the old or the new file, never half of it
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(dumps_strict(record) + "\n")  # a skipped step's NaN loss: null, never NaN
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _wandb_run(cfg: Config, run_dir: Path):
    if not cfg.log.wandb:
        return None
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    return wandb.init(project=cfg.log.wandb_project, name=run_dir.name, dir=str(run_dir),
                      config=cfg.to_dict(), resume="allow", id=run_dir.name.replace("/", "_"))


class _NoMetrics:
    """The metrics file of processes other than rank 0 (they write nothing)."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


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
    meta_batch = cfg.meta.meta_batch
    classifier = setup.classifier
    algorithm = build_algorithm(cfg.meta, build_engine(cfg.meta.engine), classifier)
    params = classifier.init_params()
    params.update(algorithm.extra_params(params))
    if not any(p.numel() for p in params.values()):  # e.g. meta.learn=[prompt] with prompt.length=0
        raise ConfigError(f"config key 'meta.learn': nothing to meta-learn: {cfg.meta.learn} hold no parameters with "
                          f"prompt.length={cfg.prompt.length}, verbalizer.kind={cfg.verbalizer.kind} and a frozen backbone")
    optimizer = make_optimizer(cfg, params)
    total_steps = math.ceil(cfg.train.episodes / cfg.meta.meta_batch)
    scheduler = make_scheduler(cfg, optimizer, total_steps)
    sampler = setup.sampler("train", cfg.seed)
    _, val_episodes = fixed_episodes(setup, "val", cfg.train.val_episodes, cfg.train.val_seed)
    check_test_source(setup)  # an unusable test episode file, too few test examples: fail now, not after training
    if resume:  # a resumed run trains on the data it started with
        check_data_unchanged(setup, run_dir, allow=False,
                             remedy="start a new run on the new data (metaprompt train --out NEW_RUN)")
    val_slots = list(group.slots(len(val_episodes)))  # this process's share of the validation episodes
    val_tasks = [setup.task(val_episodes[i], i) for i in val_slots]
    counts = classifier.count({k: v for k, v in params.items() if not k.startswith(LR_PREFIX)})

    if not resume:  # own the new directory from its creation; another process may have filled it meanwhile
        def claim() -> None:
            owner.enter_context(owned(run_dir, "train"))
            if used_entries(run_dir):
                raise RunDirError(f"run directory {run_dir} was written by another process meanwhile "
                                  f"({', '.join(used_entries(run_dir)[:3])}); choose another --out")
        group.agree(claim)

    state = TrainState()
    if resume:
        ckpt = load_checkpoint(run_dir / CHECKPOINT_FILE)
        if set(ckpt["params"]) != set(params):
            raise TrainingError(f"{run_dir / CHECKPOINT_FILE} does not match this config's parameters")
        try:  # a damaged or foreign checkpoint: one message naming the file, not a traceback
            with torch.no_grad():
                for name, value in ckpt["params"].items():
                    params[name].copy_(value)
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            state = TrainState(**ckpt["state"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise TrainingError(f"{run_dir / CHECKPOINT_FILE}: its parameters, optimiser, scheduler, RNG or trainer "
                                f"state cannot be restored ({type(err).__name__}: {err}); the file is damaged") from None
        if state.step > total_steps:
            raise ConfigError(f"config key 'train.episodes': {run_dir} has trained {state.step} outer steps already, "
                              f"more than the {total_steps} that train.episodes={cfg.train.episodes} allows")
        metrics = _NoMetrics()
        if group.is_main:
            record_resume(run_dir, state.step, changes)
            for stale in run_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)  # left by a kill during an atomic write
            # A checkpoint taken before the first validation (empty history) keeps no metrics line.
            metrics = _Metrics(run_dir / METRICS_FILE, keep_until_step=state.step if state.history else -1)
            print(f"resuming {run_dir} at outer step {state.step}/{total_steps}")
    elif not group.is_main:
        metrics = _NoMetrics()
    else:
        pinned = pinned_config(cfg, setup)  # absolute paths: eval from another folder reads the same files
        (run_dir / CONFIG_FILE).write_text(pinned.to_yaml(), encoding="utf-8")
        info = {**provenance(), "trainable_params": counts, "dataset_sha256": setup.dataset.sha256,
                "data_files": data_record(setup), "model": cfg.model.name, "distributed": group.describe(),
                "config": pinned.to_dict()}  # what trained the run: a later hand edit of config.yaml is refused
        (run_dir / RUN_FILE).write_text(dumps_strict(info, indent=2), encoding="utf-8")
        metrics = _Metrics(run_dir / METRICS_FILE)
    if group.is_main:
        print(f"trainable parameters (meta-learned): {counts['total']:,} "
              f"(prompt {counts['prompt']:,}, verbalizer {counts['verbalizer']:,}, backbone {counts['backbone']:,})"
              + (f"; {group.world_size} processes" if group.enabled else ""))

    wandb_run = _wandb_run(cfg, run_dir) if group.is_main else None

    saved = {"step": state.step}

    def checkpoint() -> None:
        if group.is_main:
            save_checkpoint(run_dir / CHECKPOINT_FILE, params, optimizer, scheduler, state.to_dict())
        group.barrier()  # once any process is past this, the checkpoint of this step is on disk
        saved["step"] = state.step

    def run_validation() -> None:
        # Each process scores its share; the merged list is the same on every process (and the
        # same as one process would get), so early stopping agrees everywhere.
        mine = validate(setup, algorithm, params, val_tasks)
        accuracies = group.gather(dict(zip(val_slots, mine)), len(val_episodes))
        mean, ci = mean_ci95(accuracies)
        state.last_val = mean
        point = {"step": state.step, "episodes": state.step * cfg.meta.meta_batch,
                 "val_accuracy": mean, "val_ci95": ci}
        state.history.append(point)
        metrics.write(point)
        if wandb_run:
            wandb_run.log({"val/accuracy": mean}, step=state.step)
        if mean > state.best_val:
            state.best_val, state.best_step, state.bad_checks = mean, state.step, 0
            if group.is_main:
                save_init(run_dir / BEST_FILE, params, {"step": state.step, "val_accuracy": mean, "val_ci95": ci,
                                                        "base_model": setup.backbone.facts(),
                                                        "episodes": point["episodes"]})
        else:
            state.bad_checks += 1
        checkpoint()

    bar = tqdm(total=total_steps, initial=state.step, desc="meta-training", unit="step",
               disable=not cfg.log.progress or not group.is_main)
    try:
        if state.step == 0 and not state.history:
            if not resume:
                checkpoint()  # at once: a run killed during the first validation can be resumed
            run_validation()  # the curve starts at the pretrained init
        while state.step < total_steps and not state.stopped_early:
            started = time.perf_counter()
            for p in params.values():
                p.grad = None
            first = state.step * meta_batch
            index = first + meta_batch - 1  # the last episode of the step (for messages)
            results = {}
            for b in group.slots(meta_batch):  # episode first + b; this process's share of the meta-batch
                task = setup.task(sampler.episode(first + b), first + b)
                results[b] = algorithm.accumulate(params, task, state.step, total_steps, weight=1.0 / meta_batch)
            # Sum the meta-gradient over processes; read losses, accuracies and the norm at once.
            stats = group.reduce_step(params, results, meta_batch)
            losses, accuracies = stats.losses, stats.accuracies
            if not stats.finite:
                if cfg.train.on_nonfinite == "stop":
                    bad = [first + b for b, value in enumerate(losses) if not math.isfinite(value)]
                    what = (f"query loss non-finite in training episode(s) {bad}" if bad
                            else f"meta-gradient norm {stats.grad_norm}")
                    raise TrainingError(
                        f"non-finite loss or gradient at outer step {state.step + 1}, training episodes "
                        f"{first}-{index} ({what}); nothing was saved for this step, and the last checkpoint "
                        f"({run_dir / CHECKPOINT_FILE}, step {saved['step']}) is intact. "
                        "Lower train.lr or meta.inner_lr, or set train.on_nonfinite=skip.")
                state.skipped_steps += 1
                log.warning("skipped outer step %d: non-finite loss or gradient", state.step + 1)
                for p in params.values():
                    p.grad = None
            else:
                if cfg.train.grad_clip:  # clip_grad_norm_, with the norm reduce_step already computed
                    torch.nn.utils.clip_grads_with_norm_([p for p in params.values() if p.grad is not None],
                                                         cfg.train.grad_clip, stats.norm_tensor)
                optimizer.step()
                if not torch.stack([torch.isfinite(p).all() for p in params.values()]).all():
                    broken = next(name for name, p in params.items() if not torch.isfinite(p).all())
                    raise TrainingError(
                        f"the update of outer step {state.step + 1} (training episodes "
                        f"{first}-{index}) made '{broken}' non-finite although the loss "
                        f"and gradient were finite; nothing was saved for this step, and the last checkpoint "
                        f"({run_dir / CHECKPOINT_FILE}, step {saved['step']}) is intact. Lower train.lr, "
                        "or keep train.grad_clip > 0.")
            with warnings.catch_warnings():  # after a skipped first step torch warns of a step it did not miss
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                scheduler.step()
            state.step += 1
            state.train_seconds += time.perf_counter() - started
            loss = sum(losses) / len(losses)
            accuracy = sum(accuracies) / len(accuracies)
            metrics.write({"step": state.step, "episodes": state.step * cfg.meta.meta_batch, "loss": loss,
                           "accuracy": accuracy, "lr": scheduler.get_last_lr()[0],
                           **({} if stats.finite else {"skipped": "non-finite loss or gradient"})})
            if wandb_run:
                wandb_run.log({"train/loss": loss, "train/accuracy": accuracy}, step=state.step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}",
                            val=f"{state.last_val:.3f}" if state.last_val is not None else "-")
            if state.step % cfg.train.val_every == 0 or state.step == total_steps:
                run_validation()
                if cfg.train.patience and state.bad_checks >= cfg.train.patience:
                    state.stopped_early = True
                    checkpoint()
            elif state.step % cfg.train.checkpoint_every == 0:
                checkpoint()
    except OSError as err:  # disk full, or the folder went away: the last checkpoint is whole (atomic writes)
        raise TrainingError(
            f"cannot write to {run_dir} at outer step {state.step}: {err.strerror or err}; the last checkpoint "
            f"({run_dir / CHECKPOINT_FILE}, step {saved['step']}) is intact: free some space, then continue "
            f"with `metaprompt train --resume {run_dir}`") from None
    finally:
        bar.close()
        metrics.close()
        if wandb_run:
            wandb_run.finish()

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
