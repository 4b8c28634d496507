"""Prefix tuning (Li & Liang 2021): key/value prefixes in every layer, through an MLP reparameterisation.

Maps onto the ``prefix`` prompt encoder (``metaprompt/model/prompts.py``) with its MLP
reparameterisation on (``prompt.prefix_projection=true``, hidden size ``prompt.hidden_size``).
"""
from __future__ import annotations

from metaprompt.tuners.base import Method, NoSettings, register
from metaprompt.tuners.prompt_tuning import apply

METHOD = register(Method(
    name="prefix", side="prompt", summary="deep key/value prefixes, MLP-reparameterised",
    settings=NoSettings, apply=apply, prompt={"kind": "prefix", "prefix_projection": True},
    defaults={"prompt.kind": "prefix", "prompt.prefix_projection": True, "meta.inner_lr": 3e-1},
))
