"""What every verbalizer shares: the registry, the spec base class, the bound base class, helpers.

Classes differ from episode to episode (meta-test classes are never seen in training), so a
verbalizer is built from each class's *label words* or from the task's *support examples*;
anything class-specific it learns is created per task (``task_params``, or prototypes of the
support states in ``logits``), and only class-agnostic tensors (scales, transforms) are
meta-learned.

A verbalizer kind is two classes in one file of this package: a **spec** (a frozen dataclass of
plain settings, ``Soft(scale=10.0)``, registered with ``@VERBALIZERS.register("name")``) and a
**bound verbalizer** (:class:`Verbalizer`), made by ``spec.bind(backbone, label_word_ids)``. To
add a kind, add a module to ``metaprompt/verbalizers/``; the package imports it and
``verbalizer.kind`` accepts its name.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from metaprompt import checks
from metaprompt.registry import Registry

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone
    from metaprompt.model.classifier import Task

Params = dict[str, torch.Tensor]


class Verbalizer:
    """Bound verbalizer base class; ``spec`` holds the settings. ``needs_vocab``: the logits need the MLM head's vocabulary scores.
    ``needs_support``: the logits need the ``[MASK]`` states of the task's support examples
    under the same (fast) parameters (prototype verbalizers); the classifier passes them."""

    needs_vocab = False
    needs_support = False
    task_keys: frozenset[str] = frozenset()  # entries that task_params adds per episode

    def __init__(self, spec: "VerbalizerSpec", backbone: "Backbone", label_word_ids: dict[int, list[list[int]]]):
        self.spec = spec
        self.backbone = backbone
        self.label_word_ids = label_word_ids
        missing = [c for c, words in label_word_ids.items() if not any(words)]
        if missing:
            raise ValueError(f"classes {missing} have no label words that the tokenizer can encode")
        table = backbone.word_embeddings.detach().float()
        # Mean input embedding of all word pieces of all label words of each class.
        self.label_embeddings = {
            c: torch.stack([table[torch.tensor(w)].mean(0) for w in words if w]).mean(0)
            for c, words in label_word_ids.items()
        }

    @property
    def kind(self) -> str:
        return self.spec.kind

    def init_params(self, generator: torch.Generator) -> Params:
        return {}

    def task_params(self, params: Params, task: "Task") -> Params:
        """Fast weights for one task, as a differentiable function of the meta-level ``params``."""
        return dict(params)

    def logits(self, params: Params, h_mask: torch.Tensor, vocab_logits: torch.Tensor | None,
               task: "Task", support: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N] class scores for the ``[MASK]`` states ``h_mask`` [B, H] (and MLM logits
        ``vocab_logits`` [B, V] when ``needs_vocab``); ``support``: the support examples'
        ``[MASK]`` states [S, H], in the order of ``task.support.labels`` (when ``needs_support``)."""
        raise NotImplementedError

    def class_label_embeddings(self, classes, like: torch.Tensor) -> torch.Tensor:
        """Label-word embeddings of ``classes`` on the device and in the dtype of ``like``.

        The table is copied to the device once (a copy per task would wait for the device)."""
        key = (like.device, like.dtype)
        table = getattr(self, "_device_embeddings", {}).get(key)
        if table is None:
            table = {c: e.to(like) for c, e in self.label_embeddings.items()}
            self._device_embeddings = {**getattr(self, "_device_embeddings", {}), key: table}
        return torch.stack([table[c] for c in classes])


@dataclass(frozen=True)
class VerbalizerSpec:
    """Settings of a verbalizer kind, plain values only; ``bind`` makes the verbalizer for a backbone.

    Class attributes a kind sets: ``verbalizer`` (its :class:`Verbalizer` subclass) and ``title``
    (the model card's words for it); ``kind`` is set by the registry. ``needs_vocab`` and
    ``needs_support`` are the bound class's."""

    kind: ClassVar[str] = ""
    verbalizer: ClassVar[type[Verbalizer]] = Verbalizer
    title: ClassVar[str] = "verbalizer"

    @classmethod
    def needs_vocab(cls) -> bool:
        return cls.verbalizer.needs_vocab

    @classmethod
    def from_settings(cls, settings: Any) -> "VerbalizerSpec":
        """The spec from any object with attributes named like its fields (the config layer
        passes the ``verbalizer`` section); attributes the kind does not use are ignored."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: getattr(settings, name) for name in names if hasattr(settings, name)})

    def bind(self, backbone: "Backbone", label_word_ids: dict[int, list[list[int]]],
             train_classes: tuple[int, ...] = ()) -> Verbalizer:
        """The verbalizer for ``backbone`` and the classes of ``label_word_ids`` (``train_classes``
        is accepted for symmetry with prompt specs; verbalizers build everything per task)."""
        return self.verbalizer(self, backbone, label_word_ids)

    @classmethod
    def card(cls, facts: dict[str, Any]) -> str:
        """The model card's paragraph on this verbalizer; ``facts``: ``metaprompt.json["verbalizer"]``
        (``kind``, ``temperature`` when there is one, ``learned_transform``)."""
        return f"`{cls.kind}`: {cls.title}."


@dataclass(frozen=True)
class Scaled(VerbalizerSpec):
    """A spec with a meta-learned temperature starting at ``scale``."""

    scale: float = 10.0

    def __post_init__(self) -> None:
        checks.positive(self.scale, "verbalizer.scale")


@dataclass(frozen=True)
class Prototypes(Scaled):
    """A spec that scores classes against prototypes of the support examples' ``[MASK]`` states."""

    #: the card's words for how a class's label words enter, given the learned share
    label_words_phrase: ClassVar[str] = ", each mixed with the state of its class's label words (learned share {share:.4g})"

    @classmethod
    def head_words(cls, facts) -> str:
        """The card's words for the head itself (what is fitted to the support states)."""
        return "class prototypes from"

    @classmethod
    def card(cls, facts):
        states = ("mean-pooled text states" if facts.get("readout") == "mean_pooled" else "[MASK] states")
        share = facts.get("learned_label_word_share")
        words = cls.label_words_phrase.format(share=share) if share is not None else ""
        return (f"`{cls.kind}`: {cls.head_words(facts)} the support examples' {states}{words}, temperature "
                f"{facts.get('temperature', float('nan')):.6g} (see docs/zoo.md for the formula).")


@dataclass(frozen=True)
class LabelWordShare(Prototypes):
    """A prototypes spec whose classes also take in the state of their label words, read through
    the template under the same fast weights, holding a meta-learned share ``a`` of the class
    (``label_word_share``: a's start; 0: the label words are not used)."""

    label_word_share: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check(0.0 <= self.label_word_share < 1.0, "verbalizer.label_word_share",
                     f"must be in [0, 1), got {self.label_word_share!r}")


class SharesWithLabelWords(Verbalizer):
    """Bound side of :class:`LabelWordShare`: asks the classifier for the label words' states and
    holds the share as ``label_word_logit`` (a = sigmoid of it)."""

    needs_support = True

    @property
    def needs_label_states(self) -> bool:
        return self.spec.label_word_share > 0

    def share_params(self) -> Params:
        share = self.spec.label_word_share
        return {"label_word_logit": torch.tensor(math.log(share / (1.0 - share)))} if share > 0 else {}

    def learned_share(self, params: Params, label_states: torch.Tensor | None) -> torch.Tensor | None:
        """a for these params (None when the label words are not used)."""
        if "label_word_logit" not in params:
            return None
        if label_states is None:
            raise ValueError(f"verbalizer {self.kind} with label_word_share > 0 needs the label words' states")
        return torch.sigmoid(params["label_word_logit"])


def scale_and_transform(verbalizer: Verbalizer) -> Params:
    """The meta-learned temperature, and with ``verbalizer.learn_transform`` a linear map of the
    ``[MASK]`` state that starts as the identity."""
    params = {"log_scale": torch.tensor(math.log(verbalizer.spec.scale))}
    if verbalizer.spec.learn_transform:
        hidden = verbalizer.backbone.hidden_size
        params["transform"] = torch.eye(hidden)
        params["bias"] = torch.zeros(hidden)
    return params


def apply_transform(params: Params, h: torch.Tensor) -> torch.Tensor:
    if "transform" in params:
        return F.linear(h, params["transform"], params["bias"])
    return h


def support_states(verbalizer: Verbalizer, support: torch.Tensor | None, task: "Task") -> torch.Tensor:
    if support is None:
        raise ValueError(f"verbalizer.kind={verbalizer.kind} needs the support examples' [MASK] states")
    if task.support.labels is None:
        raise ValueError(f"verbalizer.kind={verbalizer.kind} needs the labels of the support examples")
    return support


def class_means(states: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[N, H] mean of the rows of ``states`` [S, H] with each label 0..N-1 (differentiable)."""
    # [S, N]; a comparison rather than F.one_hot, which reads the labels' range back to the host
    onehot = (labels.unsqueeze(1) == torch.arange(n_classes, device=labels.device)).to(states.dtype)
    counts = onehot.sum(0).clamp_min(1.0)
    return (onehot.T @ states) / counts.unsqueeze(1)


#: Verbalizer kinds by name; ``kind`` is set on each spec class.
VERBALIZERS: Registry[type[VerbalizerSpec]] = Registry("verbalizer", attribute="kind")

__all__ = ["VERBALIZERS", "LabelWordShare", "Params", "Prototypes", "Scaled", "SharesWithLabelWords", "Verbalizer",
           "VerbalizerSpec", "apply_transform", "class_means", "scale_and_transform", "support_states"]
