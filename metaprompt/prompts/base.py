"""What every prompt kind shares: the registry, the spec base class and the bound-encoder base.

A prompt kind is two classes in one file of this package:

* a **spec**, a frozen dataclass of plain settings (``SoftPrompt(length=8, init="text")``),
  registered with ``@PROMPTS.register("name")``; it needs no backbone and no config, checks its
  values when it is built, and says what export and the model card need (``title``,
  ``peft_export``, ``no_peft_reason``);
* a **bound encoder** (:class:`PromptEncoder`), made by ``spec.bind(backbone, label_word_ids,
  train_classes)``: a function from explicitly passed parameters to prompt vectors.

Each encoder owns a few named tensors (``init_params``) and maps them to what the backbone
consumes (:class:`PromptOutput`). Parameters are never stored on the encoder, so the same
encoder serves the pretrained init, inner-loop fast weights and the meta-learned init; every
encoder is differentiable twice and runs under :func:`torch.func.grad` and ``higher``.

To add a kind, add a module to ``metaprompt/prompts/`` that subclasses both and registers the
spec; the package imports it, ``prompt.kind`` accepts its name, and a kind whose settings are
among ``PromptConfig``'s fields needs no other change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from metaprompt import checks
from metaprompt.registry import Registry

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone
    from metaprompt.model.template import Batch

Params = dict[str, torch.Tensor]

#: How the prompt vectors start (``PromptEncoder.initial_vectors``).
INITS = ("random", "vocab", "label_words", "text")


@dataclass
class PromptOutput:
    embeds: torch.Tensor | None  # [L, H] shared by the batch, or [B, L, H] per example
    prefix: torch.Tensor | None = None  # deep prompts: [layers, 2 (key, value), P, H], shared by the batch


class PromptEncoder:
    """Bound encoder base class. Subclasses implement ``init_params`` and ``__call__``; ``spec``
    holds the settings."""

    def __init__(self, spec: "PromptSpec", backbone: "Backbone", label_word_ids: dict[int, list[list[int]]],
                 train_classes: tuple[int, ...]):
        self.spec = spec
        self.backbone = backbone
        self.label_word_ids = label_word_ids
        self.train_classes = tuple(train_classes)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def init_params(self, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def __call__(self, params: Params, batch: "Batch", encode_frozen: Callable | None = None) -> PromptOutput:
        raise NotImplementedError

    # -- initial token vectors shared by several encoders -------------------------------------
    def initial_vectors(self, generator: torch.Generator, length: int | None = None) -> torch.Tensor:
        """``length`` vectors in the word-embedding space, chosen by ``prompt.init``.

        ``text``: the word pieces of ``prompt.init_text`` (cut, or filled up with random
        vocabulary); ``label_words``: the word pieces of the label words of the *meta-training*
        classes, shuffled, repeated when there are fewer than ``length`` (test classes never
        leak into the init); ``vocab``: random ordinary vocabulary entries; ``random``: Gaussian
        vectors with the spread of the embedding table.
        """
        length = self.spec.length if length is None else length
        table = self.backbone.word_embeddings.detach()
        tokenizer = self.backbone.tokenizer
        special = set(tokenizer.all_special_ids)
        if self.spec.init == "random":
            return torch.randn(length, table.shape[1], generator=generator) * table.std().cpu()
        if self.spec.init == "text":
            ids = [i for i in tokenizer.encode(self.spec.init_text, add_special_tokens=False) if i not in special]
        elif self.spec.init == "label_words":
            pieces = [p for c in self.train_classes for word in self.label_word_ids.get(c, []) for p in word]
            ids = [i for i in dict.fromkeys(pieces) if i not in special]
            if ids:
                order = torch.randperm(len(ids), generator=generator).tolist()
                ids = [ids[i] for i in order]
                ids = (ids * math.ceil(length / len(ids)))[:length]
        else:  # vocab
            ids = []
        ids = ids[:length]
        # Fill with random ordinary vocabulary entries (skipping the first rows, which hold
        # special and unused tokens in BERT-style vocabularies, when the vocabulary is large).
        low = 1000 if table.shape[0] > 2000 else 0
        while len(ids) < length:
            candidate = int(torch.randint(low, table.shape[0], (1,), generator=generator))
            if candidate not in special:
                ids.append(candidate)
        return table[torch.tensor(ids, dtype=torch.long, device=table.device)].detach().clone().float().cpu()


@dataclass(frozen=True)
class PromptSpec:
    """Settings of a prompt kind, plain values only; ``bind`` makes the encoder for a backbone.

    Class attributes a kind sets: ``encoder`` (its :class:`PromptEncoder` subclass), ``title``
    (the model card's words for it), ``deep`` (key/value prefixes in every layer instead of the
    template's ``[P]`` slots), ``min_length`` (fewest soft tokens), ``peft_export``
    (``"prompt_tuning"``: peft's PROMPT_TUNING of the computed [L, H] prompt; ``"prefix"``:
    PREFIX_TUNING of the computed prefixes; None: no peft equivalent, ``no_peft_reason`` says
    why), ``folded`` (what the peft export folds, or None). ``kind`` is set by the registry.
    """

    kind: ClassVar[str] = ""
    encoder: ClassVar[type[PromptEncoder]] = PromptEncoder
    title: ClassVar[str] = "soft prompt"
    deep: ClassVar[bool] = False
    min_length: ClassVar[int] = 1
    peft_export: ClassVar[str | None] = None
    no_peft_reason: ClassVar[str] = "this prompt kind has no Hugging Face peft equivalent"
    folded: ClassVar[str | None] = None

    length: int = 4  # soft tokens (deep prompts: virtual tokens per layer)
    init: str = "text"  # one of INITS
    init_text: str = "the news article"  # init=text: cut to `length` tokens, or filled up with random words

    def __post_init__(self) -> None:
        checks.check(isinstance(self.length, int) and self.length >= 0, "prompt.length",
                     f"must be an integer ≥ 0, got {self.length!r}")
        checks.check(self.length >= self.min_length, "prompt.length",
                     f"prompt.kind={self.kind} needs at least "
                     f"{'one prompt token' if self.min_length == 1 else f'{self.min_length} prompt tokens'}, got {self.length}")
        checks.choice(self.init, "prompt.init", INITS)
        if self.init == "text":
            checks.text(self.init_text, "prompt.init_text")

    @property
    def shallow_length(self) -> int:
        """Soft tokens that go into the template's ``[P]`` slots (0 for deep prompts, which put
        their ``length`` virtual tokens in front of every layer instead)."""
        return 0 if self.deep else self.length

    @property
    def has_prompt(self) -> bool:
        """Whether the prompt reaches the model at all (a shallow prompt of length 0 does not)."""
        return self.deep or self.length > 0

    @classmethod
    def from_settings(cls, settings: Any) -> "PromptSpec":
        """The spec from any object with attributes named like its fields (the config layer
        passes the ``prompt`` section); attributes the kind does not use are ignored."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: getattr(settings, name) for name in names if hasattr(settings, name)})

    def bind(self, backbone: "Backbone", label_word_ids: dict[int, list[list[int]]],
             train_classes: tuple[int, ...] = ()) -> PromptEncoder:
        """The encoder for ``backbone``; ``label_word_ids`` and ``train_classes`` feed ``init=label_words``."""
        return self.encoder(self, backbone, label_word_ids, train_classes)


def uniform_init(module: nn.Module, generator: torch.Generator) -> Params:
    """PyTorch's default init of LSTM/Linear weights, drawn from ``generator`` (deterministic):
    U(−1/√fan, 1/√fan), fan = hidden size for LSTMs and input features for linear layers."""
    out = {}
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.LSTM):
            fan = sub.hidden_size
        elif isinstance(sub, nn.Linear):
            fan = sub.in_features
        else:
            continue
        bound = 1.0 / math.sqrt(fan)
        for name, p in sub.named_parameters(recurse=False):
            key = f"{prefix}.{name}" if prefix else name
            out[key] = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
    return out


#: Prompt kinds by name; ``kind`` is set on each spec class.
PROMPTS: Registry[type[PromptSpec]] = Registry("prompt kind", attribute="kind")

__all__ = ["INITS", "PROMPTS", "Params", "PromptEncoder", "PromptOutput", "PromptSpec", "uniform_init"]
