"""``pool``: MetaPrompter's prompt pool (Jiang et al. 2023): an instance-dependent prompt, attention
of the frozen model's ``[MASK]`` state over learned keys."""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from metaprompt import checks
from metaprompt.prompts.base import PROMPTS, PromptEncoder, PromptOutput, PromptSpec

if TYPE_CHECKING:
    from metaprompt.model.template import Batch


class PoolPrompt(PromptEncoder):
    """MetaPrompter's prompt pool (Jiang et al. 2023): ``prompt.pool_size`` prompts of
    ``prompt.length`` tokens, each with a key; every example gets its own prompt

        a = softmax(q · Kᵀ / √H),   prompt = Σ_k a_k · P_k     ([B, L, H])

    where q is the ``[MASK]`` state of the *frozen* pretrained model on the example without
    a prompt (``classifier.frozen_mask_states``; cached per batch). Prompts start from
    ``prompt.init`` (MetaPrompter: ``label_words``, here the words of the meta-training classes
    only; the paper drew them from all classes, test classes included), keys from N(0, 1).
    """


    def __init__(self, spec, backbone, label_word_ids, train_classes):
        super().__init__(spec, backbone, label_word_ids, train_classes)
        if spec.length < 1:
            raise ValueError("prompt.kind=pool needs prompt.length ≥ 1")
        self.temperature = math.sqrt(backbone.hidden_size)
        self._cache: list[tuple[weakref.ref, torch.Tensor]] = []

    def init_params(self, generator):
        k, length, hidden = self.spec.pool_size, self.spec.length, self.backbone.hidden_size
        prompts = self.initial_vectors(generator, k * length).view(k, length, hidden)
        keys = torch.randn(k, hidden, generator=generator)
        return {"prompts": prompts, "keys": keys}

    def query_states(self, batch: "Batch", encode_frozen: Callable) -> torch.Tensor:
        """The frozen ``[MASK]`` states of ``batch``, computed once per batch object (the inner
        loop scores the same support batch at every step)."""
        for ref, states in self._cache:
            if ref() is batch:
                return states
        states = encode_frozen(batch)
        self._cache = [(weakref.ref(batch), states)] + [(r, s) for r, s in self._cache if r() is not None][:3]
        return states

    def __call__(self, params, batch, encode_frozen=None):
        if encode_frozen is None:
            raise ValueError("prompt.kind=pool needs the frozen model's [MASK] states (encode_frozen)")
        query = self.query_states(batch, encode_frozen).to(params["keys"].dtype)
        weights = torch.softmax(query @ params["keys"].T / self.temperature, dim=-1)  # [B, K]
        return PromptOutput(embeds=torch.einsum("bk,klh->blh", weights, params["prompts"]))


@PROMPTS.register("pool")
@dataclass(frozen=True)
class Pool(PromptSpec):
    """A pool of ``pool_size`` prompts of ``length`` tokens, mixed per example."""

    encoder = PoolPrompt
    title = "prompt pool"
    no_peft_reason = ("prompt.kind=pool is instance-dependent: each example gets its own prompt, an attention of "
                      "its frozen [MASK] state over the learned keys, and peft's prompt methods hold one fixed prompt")

    pool_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check(self.pool_size >= 1, "prompt.pool_size", "must be ≥ 1")
