"""Verbalizers: from the model's ``[MASK]`` output to one score per class of the episode.

Classes differ from episode to episode (meta-test classes are never seen in training), so a
verbalizer is built from each class's *label words*; anything class-specific it learns is
created per task in ``task_params`` from those words, and only class-agnostic tensors
(scales, transforms) are meta-learned.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from metaprompt.config import VerbalizerConfig

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone
    from metaprompt.model.classifier import Task

Params = dict[str, torch.Tensor]


class Verbalizer:
    """Base class. ``needs_vocab``: the logits need the MLM head's vocabulary scores."""

    kind = ""
    needs_vocab = False
    task_keys: frozenset[str] = frozenset()  # entries that task_params adds per episode

    def __init__(self, cfg: VerbalizerConfig, backbone: "Backbone", label_word_ids: dict[int, list[list[int]]]):
        self.cfg = cfg
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

    def init_params(self, generator: torch.Generator) -> Params:
        return {}

    def task_params(self, params: Params, task: "Task") -> Params:
        """Fast weights for one task, as a differentiable function of the meta-level ``params``."""
        return dict(params)

    def logits(self, params: Params, h_mask: torch.Tensor, vocab_logits: torch.Tensor | None,
               task: "Task") -> torch.Tensor:
        raise NotImplementedError

    def class_label_embeddings(self, classes, like: torch.Tensor) -> torch.Tensor:
        """Label-word embeddings of ``classes`` on the device and in the dtype of ``like``."""
        return torch.stack([self.label_embeddings[c] for c in classes]).to(like)


class LabelWordVerbalizer(Verbalizer):
    """MLM-head logits of each class's label words, averaged (MetaPrompting's verbalizer).

    As in the MetaPrompting code, each word contributes the logit of its first word piece.
    """

    kind = "label_words"
    needs_vocab = True

    def __init__(self, cfg, backbone, label_word_ids):
        super().__init__(cfg, backbone, label_word_ids)
        if not backbone.has_mlm_head:
            raise ValueError(
                f"verbalizer.kind=label_words needs a masked-LM head, and model '{backbone.name}' has none "
                "(the offline MiniLM ships without one); use verbalizer.kind=soft, proto or repverb, "
                "or a model with an MLM head such as bert-base-uncased"
            )

    def logits(self, params, h_mask, vocab_logits, task):
        scores = []
        for c in task.classes:
            first_pieces = torch.tensor([w[0] for w in self.label_word_ids[c] if w], device=vocab_logits.device)
            scores.append(vocab_logits[:, first_pieces].mean(1))
        return torch.stack(scores, dim=1)


class SoftVerbalizer(Verbalizer):
    """Learnable class embeddings scored against the ``[MASK]`` state (WARP-style).

    Each task's class embeddings start at the mean input embedding of the class's label
    words and are fast weights of the inner loop; a temperature (and optionally a linear map
    of the ``[MASK]`` state, identity at init) is meta-learned. Score = scale · cos(W h + b, e_c).
    """

    kind = "soft"
    task_keys = frozenset({"class_emb"})

    def init_params(self, generator):
        params = {"log_scale": torch.tensor(math.log(self.cfg.scale))}
        if self.cfg.learn_transform:
            hidden = self.backbone.hidden_size
            params["transform"] = torch.eye(hidden)
            params["bias"] = torch.zeros(hidden)
        return params

    def task_params(self, params, task):
        return {**params, "class_emb": self.class_label_embeddings(task.classes, params["log_scale"])}

    def logits(self, params, h_mask, vocab_logits, task):
        h = h_mask
        if "transform" in params:
            h = F.linear(h, params["transform"], params["bias"])
        cosine = F.normalize(h, dim=-1) @ F.normalize(params["class_emb"], dim=-1).T
        return params["log_scale"].exp() * cosine


VERBALIZERS: dict[str, type[Verbalizer]] = {"label_words": LabelWordVerbalizer, "soft": SoftVerbalizer}


def build_verbalizer(cfg: VerbalizerConfig, backbone: "Backbone", label_word_ids) -> Verbalizer:
    if cfg.kind not in VERBALIZERS:
        raise ValueError(f"verbalizer.kind '{cfg.kind}' is not implemented (available: {', '.join(VERBALIZERS)})")
    return VERBALIZERS[cfg.kind](cfg, backbone, label_word_ids)
