"""``ptuning``: P-tuning v1 (Liu et al. 2021): embeddings → 2-layer BiLSTM → 2-layer MLP."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from metaprompt import checks
from metaprompt.prompts.base import PROMPTS, PromptEncoder, PromptOutput, PromptSpec, uniform_init


def _no_cudnn(device: torch.device):
    """cuDNN's LSTM has no double backward: second-order meta-gradients need the native kernel."""
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


class _LSTMHead(nn.Module):
    """BiLSTM (2 layers) → MLP (2 layers). Only its structure is used: weights are always
    passed to it with ``functional_call``."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.lstm = nn.LSTM(hidden, inner, num_layers=2, bidirectional=True, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(2 * inner, inner), nn.ReLU(), nn.Linear(inner, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.lstm(x)[0])


class PTuningPrompt(PromptEncoder):
    """P-tuning v1 (Liu et al. 2021, "GPT understands, too"), MetaPrompting's prompt encoder.

    Learned input vectors ``embeds`` [L, H] (initialised by ``prompt.init``) pass through a
    2-layer bidirectional LSTM (``prompt.hidden_size`` units per direction) and a 2-layer MLP
    (hidden ``prompt.hidden_size``, ReLU) back to [L, H]. LSTM and MLP weights are parameters
    like the input vectors (``prompt.lstm.*``, ``prompt.mlp.*``): adapted in the inner loop and
    meta-learned. On CUDA the LSTM runs without cuDNN, whose kernel has no double backward.
    """

    def __init__(self, spec, backbone, label_word_ids, train_classes):
        super().__init__(spec, backbone, label_word_ids, train_classes)
        if spec.length < 1:
            raise ValueError("prompt.kind=ptuning needs prompt.length ≥ 1")
        with torch.device("meta"):  # structure only: functional_call always passes the weights
            self.head = _LSTMHead(backbone.hidden_size, spec.hidden_size)

    def init_params(self, generator):
        return {"embeds": self.initial_vectors(generator), **uniform_init(self.head, generator)}

    def __call__(self, params, batch, encode_frozen=None):
        embeds = params["embeds"]
        weights = {k: v for k, v in params.items() if k != "embeds"}
        with _no_cudnn(embeds.device):
            out = functional_call(self.head, weights, (embeds.unsqueeze(0),), strict=True)
        return PromptOutput(embeds=out.squeeze(0))


@PROMPTS.register("ptuning")
@dataclass(frozen=True)
class PTuning(PromptSpec):
    """P-tuning v1 soft tokens; ``hidden_size``: LSTM units per direction and MLP width."""

    encoder = PTuningPrompt
    title = "P-tuning prompt"
    peft_export = "prompt_tuning"
    folded = "the LSTM/MLP prompt encoder is folded: its output is exported"

    hidden_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check(self.hidden_size >= 1, "prompt.hidden_size", "must be ≥ 1")
