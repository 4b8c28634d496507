"""BitFit (Ben Zaken et al. 2022): only the bias terms of the backbone are adapted."""
from __future__ import annotations

from metaprompt.tuners.base import Method, NoSettings, register


def apply(backbone, settings: NoSettings, seed: int):
    return lambda name: name.endswith(".bias")


METHOD = register(Method(
    name="bitfit", side="backbone", summary="bias terms only", settings=NoSettings, apply=apply,
    title="BitFit", export="weights",
    defaults={"prompt.length": 0, "meta.inner_lr": 3e-1, "train.backbone_lr": 1e-3, "eval.adamw_backbone_lr": 1e-3},
))
