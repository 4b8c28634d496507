"""Full fine-tuning: every backbone weight that reaches the ``[MASK]`` state is adapted."""
from __future__ import annotations

from metaprompt.tuners.base import Method, NoSettings, register


def apply(backbone, settings: NoSettings, seed: int):
    return lambda name: True  # narrowed to the weights that reach the output by the caller


METHOD = register(Method(
    name="full", side="backbone", summary="all backbone weights", settings=NoSettings, apply=apply,
    title="full fine-tuning", export="weights",
    # SGD on 22M pretrained weights collapses at 0.1 (chance level on MiniLM); 1e-5 is the usual
    # outer (and AdamW) rate for BERT weights. See configs/baselines/full.yaml for the inner rate.
    defaults={"prompt.length": 0, "meta.inner_lr": 3e-2, "train.backbone_lr": 1e-5, "eval.adamw_backbone_lr": 1e-5},
))
