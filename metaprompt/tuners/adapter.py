"""Houlsby bottleneck adapters (Houlsby et al. 2019), after attention and after the feed-forward block.

Hand-written because AdapterHub's ``adapters`` package pins transformers 4.x and cannot share
the environment. Each target linear layer (the attention output projection and the
feed-forward output projection of every layer) is replaced by ``houlsby.AdaptedLinear``, which
keeps the original weight and bias *under their original names* and applies
``h + W_up f(W_down h + b_down) + b_up`` to its output, before the block's dropout, residual
and LayerNorm, which is where Houlsby et al. put it. Wrapping (rather than forward hooks)
keeps the adapter an ordinary submodule: ``functional_call`` swaps its tensors like any
other, and a deep copy or a state dict sees it.

Init: the down-projection from a normal with std ``peft.adapter_init_std`` truncated at two
std (Houlsby et al.'s near-identity init), drawn from a generator seeded by the run's seed;
the up-projection and both biases start at zero. Houlsby et al. draw the up-projection like
the down-projection; starting it at zero (as LoRA's ``B``) makes the adapted model compute
exactly the pretrained function at init, so anything that runs the backbone module directly
(the training-free reference, prompt pools) sees the unmodified model, as with LoRA and IA3.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from metaprompt.checks import check
from metaprompt.checks import names as check_names
from metaprompt.errors import ConfigError
from metaprompt.tuners.base import Method, freeze, register, seeded

ACTIVATIONS = ("relu", "gelu", "tanh", "swish")
#: Target suffixes per model family: attention output projection, feed-forward output projection.
DEFAULT_TARGETS = {
    **{t: ["attention.output.dense", "output.dense"]
       for t in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "deberta", "deberta-v2")},
    "distilbert": ["attention.out_lin", "ffn.lin2"],
}


@dataclass
class AdapterSettings:
    size: int = 32
    activation: str = "gelu"
    init_std: float = 1e-2
    targets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(isinstance(self.size, int) and self.size >= 1, "peft.adapter_size", f"must be ≥ 1, got {self.size!r}")
        check(self.activation in ACTIVATIONS, "peft.adapter_activation",
              f"unknown value {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        check(0 < self.init_std < 1, "peft.adapter_init_std", f"must be in (0, 1), got {self.init_std!r}")
        check_names(self.targets, "peft.adapter_targets")

    @classmethod
    def from_peft(cls, cfg) -> "AdapterSettings":
        return cls(size=cfg.adapter_size, activation=cfg.adapter_activation, init_std=cfg.adapter_init_std,
                   targets=list(cfg.adapter_targets))


def target_modules(model, suffixes: list[str]) -> list[str]:
    """Names of the linear layers inside numbered layers whose name ends with a suffix."""
    from torch import nn

    from metaprompt.tuners.houlsby import AdaptedLinear

    pattern = re.compile(r"\.\d+\.(?:" + "|".join(re.escape(s) for s in suffixes) + r")$")
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not isinstance(module, AdaptedLinear) and pattern.search(name)]


def apply(backbone, settings: AdapterSettings, seed: int):
    model = backbone.encoder.model
    model_type = getattr(model.config, "model_type", "")
    suffixes = settings.targets or DEFAULT_TARGETS.get(model_type)
    if not suffixes:
        raise ConfigError(f"config key 'peft.adapter_targets': no default adapter positions for model type "
                          f"'{model_type}'; set the suffixes of its attention and feed-forward output projections")
    names = target_modules(model, suffixes)
    if not names:
        raise ConfigError(f"config key 'peft.adapter_targets': no linear layer of {type(model).__name__} "
                          f"inside a numbered layer ends with {suffixes}")
    import torch

    from metaprompt.tuners.houlsby import AdaptedLinear, BottleneckAdapter

    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):  # nn.Linear draws a throw-away init from the global RNG
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            base = getattr(parent, child)
            adapter = BottleneckAdapter(base.out_features, settings.size, settings.activation, settings.init_std,
                                        generator).to(device=base.weight.device, dtype=base.weight.dtype)
            setattr(parent, child, AdaptedLinear(base, adapter))
    freeze(backbone)
    return lambda name: ".adapter." in name


METHOD = register(Method(
    name="adapter", side="backbone", summary="Houlsby bottleneck adapters after attention and feed-forward",
    settings=AdapterSettings, apply=apply, title="Houlsby adapter", export="unavailable",
    no_peft_reason="peft.method=adapter (Houlsby bottleneck adapters after attention and feed-forward) has no "
                   "peft equivalent (peft's bottleneck adapters are not Houlsby's); use the native files",
    defaults={"prompt.length": 0, "meta.inner_lr": 3e-1, "train.backbone_lr": 1e-3, "eval.adamw_backbone_lr": 1e-3},
))
