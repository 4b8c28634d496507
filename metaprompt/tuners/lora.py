"""LoRA (Hu et al. 2022): low-rank updates ``W + (α/r)·B A`` of chosen linear layers.

Injected in place with Hugging Face peft's low-level ``inject_adapter_in_model`` into the
backbone's transformers model, so no ``PeftModel`` wrapper sits in the forward path and the
``lora_A``/``lora_B`` tensors are ordinary parameters for ``torch.func.functional_call``
(second-order gradients included). peft draws ``A`` (Kaiming-uniform) from the global RNG
and sets ``B`` to zero, so injection runs under a seeded RNG and the init is a function of
the run's seed; at init the model computes exactly what the pretrained one does.

The backbone always runs in eval mode (inner loops are deterministic), so LoRA dropout would
never act and is not offered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from metaprompt.checks import check
from metaprompt.checks import names as check_names
from metaprompt.compat import peft_tensor_filter
from metaprompt.errors import ConfigError
from metaprompt.tuners.base import Method, freeze, register, seeded


@dataclass
class LoraSettings:
    r: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=list)  # empty: peft's default for the model type

    def __post_init__(self) -> None:
        check(isinstance(self.r, int) and self.r >= 1, "peft.lora_r", f"must be an integer ≥ 1, got {self.r!r}")
        check(0 < self.alpha < float("inf"), "peft.lora_alpha", f"must be a finite number > 0, got {self.alpha!r}")
        check_names(self.targets, "peft.lora_targets")

    @classmethod
    def from_peft(cls, cfg) -> "LoraSettings":
        return cls(r=cfg.lora_r, alpha=cfg.lora_alpha, targets=list(cfg.lora_targets))


def inject(backbone, peft_config, seed: int, key: str) -> None:
    """peft's in-place injection with a seeded RNG; a bad target list becomes a config error."""
    from peft import inject_adapter_in_model

    model = backbone.encoder.model
    try:
        with seeded(seed):
            inject_adapter_in_model(peft_config, model)
    except ValueError as err:
        raise ConfigError(f"config key '{key}': peft cannot inject into {type(model).__name__} "
                         f"(model type '{model.config.model_type}'): {str(err).splitlines()[0]} "
                         f"— set {key} to the names of its linear layers") from None
    freeze(backbone)


def peft_config(settings: LoraSettings, task_type: str | None = None):
    """peft's config of this LoRA (injection uses it without a task type, export with one)."""
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=0.0,
                      target_modules=list(settings.targets) or None, bias="none", task_type=task_type)


def apply(backbone, settings: LoraSettings, seed: int):
    inject(backbone, peft_config(settings), seed, "peft.lora_targets")
    return peft_tensor_filter("lora")


METHOD = register(Method(
    name="lora", side="backbone", summary="low-rank updates of attention projections (peft)",
    settings=LoraSettings, apply=apply, title="LoRA", export="peft", peft_config=peft_config,
    defaults={"prompt.length": 0, "meta.inner_lr": 3e-1, "train.backbone_lr": 1e-3, "eval.adamw_backbone_lr": 1e-3},
))
