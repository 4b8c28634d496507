"""Meta-training with checkpoints, validation, early stopping and resume: :class:`MetaTrainer`.

>>> trainer = MetaTrainer(learner, data, run_dir="runs/x", episodes=300, n_way=5, k_shot=1)  # doctest: +SKIP
>>> state = trainer.fit()                                  # doctest: +SKIP
>>> init = learner.init()                                  # the last init; runs/x/best.safetensors: the best

Outer step ``s`` trains on the episodes ``s·B … s·B + B − 1`` (``B = meta_batch``) of a
:class:`TaskSource`, a pure function of the episode index, so a checkpoint's step is all a
resumed run needs. ``metaprompt train`` uses this class (:mod:`metaprompt.run.train` adds
the run directory's config, record, lock and summary).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from metaprompt.errors import UserError
from metaprompt.meta.learners import Learner
from metaprompt.model.classifier import Task
from metaprompt.run.adaptation import AdaptationSettings, adapt_and_score
from metaprompt.run.callbacks import Callback, Checkpoints, MetricsFile
from metaprompt.run.checkpoint import load_checkpoint
from metaprompt.run.distributed import Group
from metaprompt.run.rundir import BEST_FILE, CHECKPOINT_FILE, METRICS_FILE
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


class TaskSource(Protocol):
    """Where the trainer's tasks come from: training episode ``index``, fixed validation episodes."""

    val_count: int

    def train_task(self, index: int) -> Task: ...

    def val_task(self, index: int) -> Task: ...


class EpisodeTasks:
    """The tasks of an :class:`episodes.EpisodeData` for a classifier: training episodes of the
    ``train`` classes (seed ``seed``), ``val_count`` fixed ones of the ``val`` classes."""

    def __init__(self, data, classifier, n_way: int, k_shot: int, n_query: int, seed: int = 0,
                 val_count: int = 50, val_seed: int = 4321):
        self.data, self.classifier = data, classifier
        self.sampler = data.sampler("train", n_way, k_shot, n_query, seed)
        self.val_count = val_count
        self._val = list(data.episodes("val", n_way, k_shot, n_query, val_seed, val_count)) if val_count else []

    def train_task(self, index: int) -> Task:
        return self.classifier.task(self.data.task(self.sampler.episode(index), index))

    def val_task(self, index: int) -> Task:
        return self.classifier.task(self._val[index])


class MetaTrainer:
    """Meta-trains ``learner`` on the tasks of ``data`` (an :class:`episodes.EpisodeData`, with
    ``n_way``/``k_shot``/``n_query``/``seed``/``val_episodes``/``val_seed``; or a :class:`TaskSource`).

    ``run_dir``: write ``metrics.jsonl``, ``checkpoint.safetensors`` and ``best.safetensors``
    there (and :meth:`fit` with ``resume=True`` continues from its checkpoint); ``callbacks``
    (:mod:`metaprompt.run.callbacks`) replace those files when given. ``episodes``:
    training episodes in all (``episodes / meta_batch`` outer steps); validation every
    ``val_every`` steps and at the end; ``patience``: stop after that many validations without
    a new best (0: never). ``adaptation``: how validation adapts (``metaprompt.evaluation.
    AdaptationSettings``). Default optimiser: Adam at lr 2e-3, constant."""

    def __init__(self, learner: Learner, data, run_dir: str | Path | None = None, *, episodes: int = 1000,
                 meta_batch: int = 1, n_way: int = 5, k_shot: int = 1, n_query: int = 15, seed: int = 0,
                 val_episodes: int = 50, val_seed: int = 4321, val_every: int = 100, checkpoint_every: int = 100,
                 patience: int = 0, optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                 grad_clip: float = 1.0, on_nonfinite: str = "stop", adaptation=None,
                 callbacks: Sequence[Callback] | None = None, group: Group | None = None, progress: bool = False):
        self.learner = learner
        self.tasks: TaskSource = data if hasattr(data, "train_task") else EpisodeTasks(
            data, learner.classifier, n_way, k_shot, n_query, seed, val_episodes, val_seed)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.meta_batch = meta_batch
        self.total_steps = math.ceil(episodes / meta_batch)
        learner.total_steps = self.total_steps
        self.optimizer = optimizer or torch.optim.Adam(learner.parameters(), lr=2e-3)
        self.scheduler = scheduler or torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.val_every, self.checkpoint_every = val_every, checkpoint_every
        self.grad_clip, self.on_nonfinite = grad_clip, on_nonfinite
        self.adaptation = adaptation or AdaptationSettings()
        self.group = group or Group()
        self.progress = progress
        self.state = TrainState()
        self.patience = patience
        self.saved_step = 0  # the step of the last checkpoint (for messages)
        self.restored = False
        self.callbacks = None if callbacks is None else list(callbacks)
        self.val_slots = list(self.group.slots(self.tasks.val_count))  # this process's share

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.learner.params

    # -- resume -----------------------------------------------------------------------------------------
    def restore(self, path: str | Path) -> TrainState:
        """Parameters, optimiser, scheduler, RNG and counters from a checkpoint file."""
        path = Path(path)
        ckpt = load_checkpoint(path)
        if set(ckpt["params"]) != set(self.params):
            raise TrainingError(f"{path} does not match this config's parameters")
        try:  # a damaged or foreign checkpoint: one message naming the file, not a traceback
            with torch.no_grad():
                for name, value in ckpt["params"].items():
                    self.params[name].copy_(value)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            self.state = TrainState(**ckpt["state"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise TrainingError(f"{path}: its parameters, optimiser, scheduler, RNG or trainer "
                                f"state cannot be restored ({type(err).__name__}: {err}); the file is damaged") from None
        self.saved_step = self.learner.step = self.state.step
        self.restored = True
        return self.state

    # -- events -----------------------------------------------------------------------------------------
    def _default_callbacks(self) -> list[Callback]:
        """With a ``run_dir``: the metrics file (on resume, cut back to the checkpoint) and checkpoints."""
        if self.run_dir is None or not self.group.is_main:
            return []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        keep = (self.state.step if self.state.history else -1) if self.restored else None
        return [MetricsFile(self.run_dir / METRICS_FILE, keep_until_step=keep),
                Checkpoints(self.run_dir / CHECKPOINT_FILE, self.run_dir / BEST_FILE,
                            {"base_model": self.learner.classifier.backbone.facts()})]

    def _emit(self, event: str, *args) -> None:
        for callback in self.callbacks or ():
            getattr(callback, event)(self, *args)

    def checkpoint(self) -> None:
        self._emit("on_checkpoint")
        self.group.barrier()  # once any process is past this, the checkpoint of this step is on disk
        self.saved_step = self.state.step

    def validate(self) -> dict[str, Any]:
        """Score the init on the validation tasks; record the point; checkpoint."""
        # Each process scores its share; the merged list is the same on every process (and the
        # same as one process would get), so early stopping agrees everywhere.
        mine = [adapt_and_score(self.learner.algorithm, self.params, self.tasks.val_task(i), self.adaptation)
                for i in self.val_slots]
        accuracies = self.group.gather(dict(zip(self.val_slots, mine)), self.tasks.val_count)
        mean, ci = mean_ci95(accuracies)
        state = self.state
        state.last_val = mean
        point = {"step": state.step, "episodes": state.step * self.meta_batch, "val_accuracy": mean, "val_ci95": ci}
        state.history.append(point)
        improved = mean > state.best_val
        if improved:
            state.best_val, state.best_step, state.bad_checks = mean, state.step, 0
        else:
            state.bad_checks += 1
        self._emit("on_validation", point, improved)
        self.checkpoint()
        return point

    # -- training ---------------------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One outer step: the meta-batch's meta-gradient, checked, clipped, applied."""
        state, params = self.state, self.params
        started = time.perf_counter()
        for p in params.values():
            p.grad = None
        first = state.step * self.meta_batch
        last = first + self.meta_batch - 1  # the last episode of the step (for messages)
        results = {}
        self.learner.step = state.step
        for b in self.group.slots(self.meta_batch):  # episode first + b; this process's share of the meta-batch
            task = self.tasks.train_task(first + b)
            results[b] = self.learner.accumulate(task, weight=1.0 / self.meta_batch)
        # Sum the meta-gradient over processes; read losses, accuracies and the norm at once.
        stats = self.group.reduce_step(params, results, self.meta_batch)
        if not stats.finite:
            self._skip_or_stop(stats, first, last)
        else:
            if self.grad_clip:  # clip_grad_norm_, with the norm reduce_step already computed
                torch.nn.utils.clip_grads_with_norm_([p for p in params.values() if p.grad is not None],
                                                     self.grad_clip, stats.norm_tensor)
            self.optimizer.step()
            if not torch.stack([torch.isfinite(p).all() for p in params.values()]).all():
                broken = next(name for name, p in params.items() if not torch.isfinite(p).all())
                raise TrainingError(
                    f"the update of outer step {state.step + 1} (training episodes "
                    f"{first}-{last}) made '{broken}' non-finite although the loss "
                    f"and gradient were finite; nothing was saved for this step, and the last checkpoint "
                    f"({self._checkpoint_name()}, step {self.saved_step}) is intact. Lower train.lr, "
                    "or keep train.grad_clip > 0.")
        with warnings.catch_warnings():  # after a skipped first step torch warns of a step it did not miss
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        state.step += 1
        self.learner.step = state.step
        state.train_seconds += time.perf_counter() - started
        record = {"step": state.step, "episodes": state.step * self.meta_batch,
                  "loss": sum(stats.losses) / len(stats.losses),
                  "accuracy": sum(stats.accuracies) / len(stats.accuracies), "lr": self.scheduler.get_last_lr()[0],
                  **({} if stats.finite else {"skipped": "non-finite loss or gradient"})}
        self._emit("on_step", record)
        return record

    def _checkpoint_name(self) -> str:
        return str(self.run_dir / CHECKPOINT_FILE) if self.run_dir is not None else "checkpoint"

    def _skip_or_stop(self, stats, first: int, last: int) -> None:
        state = self.state
        if self.on_nonfinite == "stop":
            bad = [first + b for b, value in enumerate(stats.losses) if not math.isfinite(value)]
            what = (f"query loss non-finite in training episode(s) {bad}" if bad
                    else f"meta-gradient norm {stats.grad_norm}")
            raise TrainingError(
                f"non-finite loss or gradient at outer step {state.step + 1}, training episodes "
                f"{first}-{last} ({what}); nothing was saved for this step, and the last checkpoint "
                f"({self._checkpoint_name()}, step {self.saved_step}) is intact. "
                "Lower train.lr or meta.inner_lr, or set train.on_nonfinite=skip.")
        state.skipped_steps += 1
        log.warning("skipped outer step %d: non-finite loss or gradient", state.step + 1)
        for p in self.params.values():
            p.grad = None

    def fit(self, resume: bool = False) -> TrainState:
        """Train to the end (or early stop). ``resume``: first restore ``run_dir``'s checkpoint.
        A validation of the pretrained init starts the curve; one ends it."""
        if resume and not self.restored:
            if self.run_dir is None:
                raise TrainingError("resume=True needs the run_dir of the run to continue")
            self.restore(self.run_dir / CHECKPOINT_FILE)
        if self.callbacks is None:
            self.callbacks = self._default_callbacks()
        state = self.state
        bar = tqdm(total=self.total_steps, initial=state.step, desc="meta-training", unit="step",
                   disable=not self.progress or not self.group.is_main)
        try:
            if state.step == 0 and not state.history:
                if not resume:
                    self.checkpoint()  # at once: a run killed during the first validation can be resumed
                self.validate()  # the curve starts at the pretrained init
            while state.step < self.total_steps and not state.stopped_early:
                record = self.step()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}",
                                val=f"{state.last_val:.3f}" if state.last_val is not None else "-")
                if state.step % self.val_every == 0 or state.step == self.total_steps:
                    self.validate()
                    if self.patience and state.bad_checks >= self.patience:
                        state.stopped_early = True
                        self.checkpoint()
                elif state.step % self.checkpoint_every == 0:
                    self.checkpoint()
        except OSError as err:  # disk full, or the folder went away: the last checkpoint is whole (atomic writes)
            raise TrainingError(
                f"cannot write to {self.run_dir} at outer step {state.step}: {err.strerror or err}; the last "
                f"checkpoint ({self._checkpoint_name()}, step {self.saved_step}) is intact: free some space, then "
                f"continue with `metaprompt train --resume {self.run_dir}`") from None
        finally:
            bar.close()
            self._emit("on_end")
        return state
