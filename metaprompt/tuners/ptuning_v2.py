"""P-tuning v2 (Liu et al. 2022): deep prompts, key/value prefixes in every layer, learned directly.

Maps onto the ``prefix`` prompt encoder (``metaprompt/model/prompts.py``) without the MLP
reparameterisation of prefix tuning (``prompt.prefix_projection=false``).
"""
from __future__ import annotations

from metaprompt.tuners.base import Method, NoSettings, register
from metaprompt.tuners.prompt_tuning import apply

METHOD = register(Method(
    name="ptuning_v2", side="prompt", summary="deep key/value prefixes, learned directly",
    settings=NoSettings, apply=apply, prompt={"kind": "prefix", "prefix_projection": False},
    defaults={"prompt.kind": "prefix", "prompt.prefix_projection": False, "meta.inner_lr": 3e-1},
))
