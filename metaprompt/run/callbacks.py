"""What :class:`~metaprompt.run.trainer.MetaTrainer` writes besides training, as callbacks:
the metrics file, checkpoints and the best init, wandb.

A callback gets the trainer at each event; every hook is optional. Only the main process of
a distributed run is given the callbacks that write (the trainer's caller decides). Early
stopping is the trainer's own (``patience``): every process must decide it alike.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaprompt.run.checkpoint import save_checkpoint, write_init_file
from metaprompt.run.jsonio import dumps_strict

if TYPE_CHECKING:
    from metaprompt.run.trainer import MetaTrainer


class Callback:
    """Hooks of a training run (all no-ops here)."""

    def on_step(self, trainer: "MetaTrainer", record: dict[str, Any]) -> None:
        """After an outer step; ``record``: its step, episodes, loss, accuracy, lr."""

    def on_validation(self, trainer: "MetaTrainer", point: dict[str, Any], improved: bool) -> None:
        """After a validation; ``improved``: its accuracy is the best so far."""

    def on_checkpoint(self, trainer: "MetaTrainer") -> None:
        """The trainer's state is to be saved (after every validation, every ``checkpoint_every`` steps)."""

    def on_end(self, trainer: "MetaTrainer") -> None:
        """Training ended (normally, by early stopping or by an error)."""


class MetricsFile(Callback):
    """Appends one JSON line per outer step and per validation. ``keep_until_step`` (on resume):
    first drop the lines written after the checkpoint the run resumes from."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = Path(path)
        if keep_until_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if record.get("step", 0) <= keep_until_step:
                    kept.append(line)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)  # a kill now leaves the old or the new file, never half of it
        self.handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(dumps_strict(record) + "\n")  # a skipped step's NaN loss: null, never NaN
        self.handle.flush()

    def on_step(self, trainer, record):
        self.write(record)

    def on_validation(self, trainer, point, improved):
        self.write(point)

    def on_end(self, trainer):
        self.handle.close()


class Checkpoints(Callback):
    """``checkpoint.safetensors`` (everything a resume needs) and ``best.safetensors`` (the init
    of the best validation so far, with ``info`` and the validation's numbers)."""

    def __init__(self, checkpoint: Path, best: Path, info: dict[str, Any] | None = None):
        self.checkpoint = Path(checkpoint)
        self.best = Path(best)
        self.info = dict(info or {})

    def on_validation(self, trainer, point, improved):
        if improved:
            write_init_file(self.best, trainer.learner.params,
                      {"step": point["step"], "val_accuracy": point["val_accuracy"], "val_ci95": point["val_ci95"],
                       **self.info, "episodes": point["episodes"]})

    def on_checkpoint(self, trainer):
        save_checkpoint(self.checkpoint, trainer.learner.params, trainer.optimizer, trainer.scheduler,
                        trainer.state.to_dict())


class WandbLogger(Callback):
    """Training loss and accuracy, validation accuracy, to a wandb run (finished at the end)."""

    def __init__(self, run):
        self.run = run

    def on_step(self, trainer, record):
        self.run.log({"train/loss": record["loss"], "train/accuracy": record["accuracy"]}, step=record["step"])

    def on_validation(self, trainer, point, improved):
        self.run.log({"val/accuracy": point["val_accuracy"]}, step=point["step"])

    def on_end(self, trainer):
        self.run.finish()

