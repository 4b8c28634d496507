"""Prompt tuning (Lester et al. 2021): soft token vectors in the input, nothing else adapted.

Maps onto the ``embedding`` prompt encoder. Lester et al. initialise from sampled vocabulary
embeddings (``prompt.init=vocab``) or randomly (``prompt.init=random``); the baseline uses
the vocabulary init, the better of the two in their study and the one that stays on the
embedding manifold.
"""
from __future__ import annotations

from metaprompt.tuners.base import Method, NoSettings, register


def apply(backbone, settings: NoSettings, seed: int):
    return None  # prompt-side: the prompt encoder holds the parameters


METHOD = register(Method(
    name="prompt_tuning", side="prompt", summary="soft input tokens (embedding prompt encoder)",
    settings=NoSettings, apply=apply, prompt={"kind": "embedding"},
    defaults={"prompt.kind": "embedding", "prompt.init": "vocab", "meta.inner_lr": 1e-1},
))
