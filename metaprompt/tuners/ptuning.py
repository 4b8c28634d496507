"""P-tuning (Liu et al. 2021): soft tokens produced by a small prompt encoder network.

Maps onto the ``ptuning`` prompt encoder (``metaprompt/model/prompts.py``); its hidden size is
``prompt.hidden_size``.
"""
from __future__ import annotations

from metaprompt.tuners.base import Method, NoSettings, register
from metaprompt.tuners.prompt_tuning import apply

METHOD = register(Method(
    name="ptuning", side="prompt", summary="soft tokens from a prompt-encoder network",
    settings=NoSettings, apply=apply, prompt={"kind": "ptuning"},
    defaults={"prompt.kind": "ptuning", "meta.inner_lr": 1e-1},
))
