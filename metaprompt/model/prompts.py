"""Soft-prompt encoders: functions from explicitly passed parameters to prompt vectors.

Each encoder owns a few named tensors (``init_params``) and maps them to what the backbone
consumes (:class:`PromptOutput`). Parameters are never stored on the encoder, so the same
encoder serves the pretrained init, inner-loop fast weights and the meta-learned init.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from metaprompt.config import PromptConfig

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone
    from metaprompt.model.template import Batch

Params = dict[str, torch.Tensor]


@dataclass
class PromptOutput:
    embeds: torch.Tensor | None  # [L, H] shared by the batch, or [B, L, H] per example
    past_key_values: object | None = None  # deep prompts (prefix tuning)


class PromptEncoder:
    """Base class. Subclasses set ``kind`` and implement ``init_params`` and ``__call__``."""

    kind = ""

    def __init__(self, cfg: PromptConfig, backbone: "Backbone", label_word_ids: dict[int, list[list[int]]],
                 train_classes: tuple[int, ...]):
        self.cfg = cfg
        self.backbone = backbone
        self.label_word_ids = label_word_ids
        self.train_classes = train_classes

    def init_params(self, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def __call__(self, params: Params, batch: "Batch", encode_frozen: Callable | None = None) -> PromptOutput:
        raise NotImplementedError

    # -- initial token vectors shared by several encoders -------------------------------------
    def initial_vectors(self, generator: torch.Generator, length: int | None = None) -> torch.Tensor:
        """``length`` vectors in the word-embedding space, chosen by ``prompt.init``."""
        length = self.cfg.length if length is None else length
        table = self.backbone.word_embeddings.detach()
        tokenizer = self.backbone.tokenizer
        special = set(tokenizer.all_special_ids)
        if self.cfg.init == "random":
            return torch.randn(length, table.shape[1], generator=generator) * table.std()
        if self.cfg.init == "text":
            ids = [i for i in tokenizer.encode(self.cfg.init_text, add_special_tokens=False) if i not in special]
        elif self.cfg.init == "label_words":
            # Words of the meta-training classes only: test classes must stay unseen.
            ids = [w[0] for c in self.train_classes for w in self.label_word_ids.get(c, []) if w]
            order = torch.randperm(len(ids), generator=generator).tolist() if ids else []
            ids = [ids[i] for i in order]
        else:  # vocab
            ids = []
        ids = ids[:length]
        while len(ids) < length:  # fill with random ordinary vocabulary entries
            candidate = int(torch.randint(1000, table.shape[0], (1,), generator=generator))
            if candidate not in special:
                ids.append(candidate)
        return table[torch.tensor(ids, dtype=torch.long)].clone().float()


class EmbeddingPrompt(PromptEncoder):
    """Plain soft tokens (Lester et al. 2021): the prompt vectors are the parameters."""

    kind = "embedding"

    def init_params(self, generator: torch.Generator) -> Params:
        return {"embeds": self.initial_vectors(generator)}

    def __call__(self, params: Params, batch: "Batch", encode_frozen: Callable | None = None) -> PromptOutput:
        return PromptOutput(embeds=params["embeds"])


PROMPT_ENCODERS: dict[str, type[PromptEncoder]] = {"embedding": EmbeddingPrompt}


def build_prompt_encoder(cfg: PromptConfig, backbone: "Backbone", label_word_ids, train_classes) -> PromptEncoder:
    if cfg.kind not in PROMPT_ENCODERS:
        raise ValueError(f"prompt.kind '{cfg.kind}' is not implemented (available: {', '.join(PROMPT_ENCODERS)})")
    return PROMPT_ENCODERS[cfg.kind](cfg, backbone, label_word_ids, train_classes)
