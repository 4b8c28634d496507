"""Verbalizers: from the model's ``[MASK]`` output to one score per class of the episode.

Classes differ from episode to episode (meta-test classes are never seen in training), so a
verbalizer is built from each class's *label words* or from the task's *support examples*;
anything class-specific it learns is created per task (``task_params``, or prototypes of the
support states in ``logits``), and only class-agnostic tensors (scales, transforms) are
meta-learned.

===============  ===========================================================================
``label_words``  MLM-head logits of the label words (MetaPrompting; needs an MLM head)
``soft``         learned class embeddings, label-word init, cosine (WARP-style)
``proto``        class prototypes of the support ``[MASK]`` states, cosine or Euclidean
``repverb``      MetaPrompter's RepVerb: centred, normalised support prototypes, cosine
``hybrid``       MetaPrompter's mixture of RepVerb and label words (needs an MLM head)
===============  ===========================================================================
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from metaprompt.config import VerbalizerConfig
from metaprompt.errors import ConfigError

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone
    from metaprompt.model.classifier import Task

Params = dict[str, torch.Tensor]


class Verbalizer:
    """Base class. ``needs_vocab``: the logits need the MLM head's vocabulary scores.
    ``needs_support``: the logits need the ``[MASK]`` states of the task's support examples
    under the same (fast) parameters (prototype verbalizers); the classifier passes them."""

    kind = ""
    needs_vocab = False
    needs_support = False
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


class LabelWordVerbalizer(Verbalizer):
    """MLM-head logits of each class's label words, averaged (MetaPrompting's verbalizer).

    As in the MetaPrompting code, each word contributes the logit of its first word piece.
    """

    kind = "label_words"
    needs_vocab = True

    def __init__(self, cfg, backbone, label_word_ids):
        super().__init__(cfg, backbone, label_word_ids)
        if not backbone.has_mlm_head:
            raise ConfigError(
                f"config key 'verbalizer.kind': 'label_words' needs a masked-LM head, and model '{backbone.name}' "
                "has none (the offline MiniLM ships without one); use verbalizer.kind=soft, proto or repverb, "
                "or a model with an MLM head such as bert-base-uncased"
            )

        self._first_pieces = {c: [w[0] for w in words if w] for c, words in label_word_ids.items()}

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        if vocab_logits is None:
            raise ValueError("the label-word verbalizer needs the MLM head's logits (vocab_logits)")
        scores = []
        for c in task.classes:
            scores.append(vocab_logits.index_select(1, self._piece_index(c, vocab_logits.device)).mean(1))
        return torch.stack(scores, dim=1)

    def _piece_index(self, c: int, device: torch.device) -> torch.Tensor:
        """The first word pieces of class ``c`` as an index tensor on ``device``, made once: a
        host-to-device copy at every forward pass would wait for the device."""
        cache = self.__dict__.setdefault("_piece_cache", {})
        if (c, device) not in cache:
            cache[(c, device)] = torch.tensor(self._first_pieces[c], device=device)
        return cache[(c, device)]


class SoftVerbalizer(Verbalizer):
    """Learnable class embeddings scored against the ``[MASK]`` state (WARP-style).

    Each task's class embeddings start at the mean input embedding of the class's label
    words and are fast weights of the inner loop; a temperature (and optionally a linear map
    of the ``[MASK]`` state, identity at init) is meta-learned. Score = scale · cos(W h + b, e_c).
    """

    kind = "soft"
    task_keys = frozenset({"class_emb"})

    def init_params(self, generator):
        return _scale_and_transform(self)

    def task_params(self, params, task):
        return {**params, "class_emb": self.class_label_embeddings(task.classes, params["log_scale"])}

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        h = _transform(params, h_mask)
        cosine = F.normalize(h, dim=-1) @ F.normalize(params["class_emb"], dim=-1).T
        return params["log_scale"].exp() * cosine


def _scale_and_transform(verbalizer: Verbalizer) -> Params:
    """The meta-learned temperature, and with ``verbalizer.learn_transform`` a linear map of the
    ``[MASK]`` state that starts as the identity."""
    params = {"log_scale": torch.tensor(math.log(verbalizer.cfg.scale))}
    if verbalizer.cfg.learn_transform:
        hidden = verbalizer.backbone.hidden_size
        params["transform"] = torch.eye(hidden)
        params["bias"] = torch.zeros(hidden)
    return params


def _transform(params: Params, h: torch.Tensor) -> torch.Tensor:
    if "transform" in params:
        return F.linear(h, params["transform"], params["bias"])
    return h


def class_means(states: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[N, H] mean of the rows of ``states`` [S, H] with each label 0..N-1 (differentiable)."""
    # [S, N]; a comparison rather than F.one_hot, which reads the labels' range back to the host
    onehot = (labels.unsqueeze(1) == torch.arange(n_classes, device=labels.device)).to(states.dtype)
    counts = onehot.sum(0).clamp_min(1.0)
    return (onehot.T @ states) / counts.unsqueeze(1)


def _support_states(verbalizer: Verbalizer, support: torch.Tensor | None, task: "Task") -> torch.Tensor:
    if support is None:
        raise ValueError(f"verbalizer.kind={verbalizer.kind} needs the support examples' [MASK] states")
    if task.support.labels is None:
        raise ValueError(f"verbalizer.kind={verbalizer.kind} needs the labels of the support examples")
    return support


class ProtoVerbalizer(Verbalizer):
    """Class prototypes from the support set (prototypical networks, Snell et al. 2017; as a
    verbalizer: ProtoVerb, Cui et al. 2022).

    A class's prototype is the mean ``[MASK]`` state of its support examples under the
    *current* fast weights, so the inner loop and the meta-gradient flow through it.
    ``verbalizer.distance=cosine``: score = s · cos(h, c); ``euclidean``: score =
    −s · ‖h − c‖² / H (the squared distance per dimension, so one scale suits any width).
    The temperature s starts at ``verbalizer.scale`` and is meta-learned; with
    ``verbalizer.learn_transform`` a linear map of the states (identity init) is learned too.
    """

    kind = "proto"
    needs_support = True

    def init_params(self, generator):
        return _scale_and_transform(self)

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        states = _transform(params, _support_states(self, support, task))
        h = _transform(params, h_mask)
        protos = class_means(states, task.support.labels, len(task.classes))
        scale = params["log_scale"].exp()
        if self.cfg.distance == "euclidean":
            return -scale * (h.unsqueeze(1) - protos.unsqueeze(0)).pow(2).mean(-1)
        return scale * (F.normalize(h, dim=-1) @ F.normalize(protos, dim=-1).T)


class RepVerbalizer(Verbalizer):
    """MetaPrompter's representative verbalizer, RepVerb (Jiang et al. 2023).

    Label embeddings are built from the support ``[MASK]`` states themselves: states are
    centred by the support mean μ, normalised, and averaged per class, v_c = mean_i
    (z_i − μ)/‖z_i − μ‖; a query scores s · cos(h − μ, v_c). Under fast weights, so the inner
    loop and the meta-gradient flow through the label embeddings. Differences from the
    public code: the centre is the support mean (that code centres the query forward over
    support *and* query, which makes a prediction depend on the other queries), and the
    temperature s is one meta-learned scalar starting at ``verbalizer.scale`` (that code uses
    1 in the inner loop and 10 on the query set).
    """

    kind = "repverb"
    needs_support = True

    def init_params(self, generator):
        return {"log_scale": torch.tensor(math.log(self.cfg.scale))}

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        states = _support_states(self, support, task)
        centre = states.mean(0, keepdim=True)
        protos = class_means(F.normalize(states - centre, dim=-1), task.support.labels, len(task.classes))
        h = F.normalize(h_mask - centre, dim=-1)
        return params["log_scale"].exp() * (h @ F.normalize(protos, dim=-1).T)


class HybridVerbalizer(Verbalizer):
    """MetaPrompter's final scorer: w · softmax(RepVerb) + (1 − w) · softmax(label words),
    w = ``verbalizer.hybrid_weight`` (0.5 in the paper). ``logits`` returns the *log* of this
    mixture, so cross-entropy on it is the negative log-likelihood of the mixture and argmax
    is the mixture's prediction. Needs a masked-LM head."""

    kind = "hybrid"
    needs_vocab = True
    needs_support = True

    def __init__(self, cfg, backbone, label_word_ids):
        super().__init__(cfg, backbone, label_word_ids)
        if not backbone.has_mlm_head:
            raise ConfigError(
                f"config key 'verbalizer.kind': 'hybrid' mixes RepVerb with label-word scores from a masked-LM head, and model "
                f"'{backbone.name}' has none (the offline MiniLM ships without one); use verbalizer.kind=repverb, "
                "or a model with an MLM head such as bert-base-uncased")
        self.rep = RepVerbalizer(cfg, backbone, label_word_ids)
        self.words = LabelWordVerbalizer(cfg, backbone, label_word_ids)

    def init_params(self, generator):
        return self.rep.init_params(generator)

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        rep = torch.log_softmax(self.rep.logits(params, h_mask, None, task, support), dim=-1)
        words = torch.log_softmax(self.words.logits({}, h_mask, vocab_logits, task), dim=-1)
        w = float(self.cfg.hybrid_weight)
        if w >= 1.0:
            return rep
        if w <= 0.0:
            return words
        return torch.logsumexp(torch.stack([rep + math.log(w), words + math.log(1.0 - w)]), dim=0)


VERBALIZERS: dict[str, type[Verbalizer]] = {
    "label_words": LabelWordVerbalizer, "soft": SoftVerbalizer, "proto": ProtoVerbalizer,
    "repverb": RepVerbalizer, "hybrid": HybridVerbalizer,
}


def build_verbalizer(cfg: VerbalizerConfig, backbone: "Backbone", label_word_ids) -> Verbalizer:
    if cfg.kind not in VERBALIZERS:
        raise ValueError(f"verbalizer.kind '{cfg.kind}' is not implemented (available: {', '.join(VERBALIZERS)})")
    return VERBALIZERS[cfg.kind](cfg, backbone, label_word_ids)
