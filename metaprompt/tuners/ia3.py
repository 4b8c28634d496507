"""(IA)³ (Liu et al. 2022): learned rescaling vectors of keys, values and feed-forward activations.

Injected in place by Hugging Face peft (see ``lora.py`` for why the low-level injection and
the seeded RNG). The vectors start at one, so at init the model is the pretrained one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from metaprompt.checks import check
from metaprompt.checks import names as check_names
from metaprompt.compat import peft_tensor_filter
from metaprompt.tuners.base import Method, register
from metaprompt.tuners.lora import inject


@dataclass
class IA3Settings:
    targets: list[str] = field(default_factory=list)  # empty: peft's default (BERT: key, value, output.dense)
    feedforward: list[str] = field(default_factory=list)  # scaled at their input; a subset of targets

    def __post_init__(self) -> None:
        check_names(self.targets, "peft.ia3_targets")
        check_names(self.feedforward, "peft.ia3_feedforward")
        if self.targets:
            extra = [m for m in self.feedforward if m not in self.targets]
            check(not extra, "peft.ia3_feedforward", f"{extra} are not in peft.ia3_targets {self.targets}")
        else:
            check(not self.feedforward, "peft.ia3_feedforward",
                  "set peft.ia3_targets too (with both empty, peft's defaults for the model type are used)")

    @classmethod
    def from_peft(cls, cfg) -> "IA3Settings":
        return cls(targets=list(cfg.ia3_targets), feedforward=list(cfg.ia3_feedforward))


def peft_config(settings: IA3Settings, task_type: str | None = None):
    """peft's config of this (IA)³ (injection uses it without a task type, export with one)."""
    from peft import IA3Config

    if settings.targets:
        return IA3Config(target_modules=list(settings.targets), feedforward_modules=list(settings.feedforward),
                         task_type=task_type)
    return IA3Config(task_type=task_type)  # peft fills both lists for the model type


def apply(backbone, settings: IA3Settings, seed: int):
    inject(backbone, peft_config(settings), seed, "peft.ia3_targets")
    return peft_tensor_filter("ia3")


METHOD = register(Method(
    name="ia3", side="backbone", summary="rescaling vectors of keys, values, feed-forward (peft)",
    settings=IA3Settings, apply=apply, title="(IA)³", export="peft", peft_config=peft_config,
    defaults={"prompt.length": 0, "meta.inner_lr": 3e-1, "train.backbone_lr": 1e-3, "eval.adamw_backbone_lr": 1e-3},
))
