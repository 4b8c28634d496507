"""A prompt kind added in one file, outside the package: soft tokens scaled by a learned gate.

Importing this module registers ``prompt.kind=toy_gated``; nothing else is edited. A kind that
ships with metaprompt is the same file in ``metaprompt/prompts/`` (the package imports it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metaprompt.prompts import PROMPTS, PromptEncoder, PromptOutput, PromptSpec


class GatedEncoder(PromptEncoder):
    """``embeds · 2σ(gate)``: the plain soft prompt at init (σ(0) = ½), with one learned gate."""

    def init_params(self, generator):
        return {"embeds": self.initial_vectors(generator), "gate": torch.zeros(())}

    def __call__(self, params, batch, encode_frozen=None):
        return PromptOutput(embeds=params["embeds"] * 2 * torch.sigmoid(params["gate"]))


@PROMPTS.register("toy_gated")
@dataclass(frozen=True)
class GatedPrompt(PromptSpec):
    encoder = GatedEncoder
    title = "gated toy prompt"
    no_peft_reason = "prompt.kind=toy_gated scales its tokens by a learned gate, which peft's prompt tuning lacks"
