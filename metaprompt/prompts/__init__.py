"""Soft-prompt kinds: specs of plain settings, bound to a backbone with ``spec.bind(...)``.

=============  =============  ==========================================================================
``kind``       spec           what the prompt is
=============  =============  ==========================================================================
``embedding``  SoftPrompt     plain soft tokens in the template's ``[P]`` slots (Lester et al. 2021)
``ptuning``    PTuning        P-tuning v1 (Liu et al. 2021): embeddings → 2-layer BiLSTM → 2-layer MLP
``prefix``     Prefix         deep prompts (Li & Liang 2021; P-Tuning v2, Liu et al. 2022): key/value
                              prefixes at every layer, optionally reparameterised by an MLP
``pool``       Pool           MetaPrompter's prompt pool (Jiang et al. 2023): an instance-dependent
                              prompt, attention of the frozen model's ``[MASK]`` state over learned keys
=============  =============  ==========================================================================

Every module of this package is imported here, and registers its kind in :data:`PROMPTS`: a
new kind is a new file (see :mod:`metaprompt.prompts.base`).
"""
from __future__ import annotations

from metaprompt.prompts.base import INITS, PROMPTS, Params, PromptEncoder, PromptOutput, PromptSpec
from metaprompt.registry import import_members

import_members(__name__, __path__, first=("base", "soft", "ptuning", "prefix", "pool"))

from metaprompt.prompts.pool import Pool, PoolPrompt  # noqa: E402  (after the registry is filled)
from metaprompt.prompts.prefix import Prefix, PrefixPrompt  # noqa: E402
from metaprompt.prompts.ptuning import PTuning, PTuningPrompt  # noqa: E402
from metaprompt.prompts.soft import EmbeddingPrompt, SoftPrompt  # noqa: E402

__all__ = ["INITS", "PROMPTS", "EmbeddingPrompt", "PTuning", "PTuningPrompt", "Params", "Pool", "PoolPrompt",
           "Prefix", "PrefixPrompt", "PromptEncoder", "PromptOutput", "PromptSpec", "SoftPrompt"]
