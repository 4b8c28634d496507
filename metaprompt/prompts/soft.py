"""``embedding``: plain soft tokens in the template's ``[P]`` slots (Lester et al. 2021)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from metaprompt.prompts.base import PROMPTS, Params, PromptEncoder, PromptOutput, PromptSpec


class EmbeddingPrompt(PromptEncoder):
    """Plain soft tokens (Lester et al. 2021): the prompt vectors are the parameters."""

    def init_params(self, generator) -> Params:
        return {"embeds": self.initial_vectors(generator)}

    def __call__(self, params: Params, batch, encode_frozen: Callable | None = None) -> PromptOutput:
        return PromptOutput(embeds=params["embeds"])


@PROMPTS.register("embedding")
@dataclass(frozen=True)
class SoftPrompt(PromptSpec):
    """Plain soft tokens; ``length=0`` is no prompt at all (the verbalizer, or a PEFT method, alone)."""

    encoder = EmbeddingPrompt
    title = "soft prompt"
    min_length = 0
    peft_export = "prompt_tuning"
