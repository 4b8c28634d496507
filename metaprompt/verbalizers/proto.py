"""``proto``: class prototypes of the support ``[MASK]`` states, cosine or Euclidean, optionally
mixed with the class's label words read through the same prompt."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from metaprompt import checks
from metaprompt.verbalizers.base import (VERBALIZERS, LabelWordShare, SharesWithLabelWords, apply_transform,
                                         class_means, scale_and_transform, support_states)

DISTANCES = ("cosine", "euclidean")


class ProtoVerbalizer(SharesWithLabelWords):
    """Class prototypes from the support set (prototypical networks, Snell et al. 2017; as a
    verbalizer: ProtoVerb, Cui et al. 2022).

    A class's prototype is the mean ``[MASK]`` state of its support examples under the
    *current* fast weights, so the inner loop and the meta-gradient flow through it.
    ``verbalizer.distance=cosine``: score = s · cos(h, c); ``euclidean``: score =
    −s · ‖h − c‖² / H (the squared distance per dimension, so one scale suits any width).
    The temperature s starts at ``verbalizer.scale`` and is meta-learned; with
    ``verbalizer.learn_transform`` a linear map of the states (identity init) is learned too.

    ``label_word_share`` > 0 (cosine only) starts each prototype where nearest centroid with the
    label words as extra support starts, and lets meta-training move it: the prototype is
    ``(1 − a) · n(mean of n(support states)) + a · n(state of the label words)`` (n: L2
    normalisation), the label words read as an input of the template under the same fast
    weights; a = sigmoid(``label_word_logit``) starts at ``label_word_share`` and is meta-learned.
    """

    def init_params(self, generator):
        return {**scale_and_transform(self), **self.share_params()}

    def logits(self, params, h_mask, vocab_logits, task, support=None, label_states=None):
        states = apply_transform(params, support_states(self, support, task))
        h = apply_transform(params, h_mask)
        scale = params["log_scale"].exp()
        share = self.learned_share(params, label_states)
        if share is not None:
            means = F.normalize(class_means(F.normalize(states, dim=-1), task.support.labels, len(task.classes)), dim=-1)
            words = F.normalize(apply_transform(params, label_states), dim=-1)
            protos = (1 - share) * means + share * words
            return scale * (F.normalize(h, dim=-1) @ F.normalize(protos, dim=-1).T)
        protos = class_means(states, task.support.labels, len(task.classes))
        if self.spec.distance == "euclidean":
            return -scale * (h.unsqueeze(1) - protos.unsqueeze(0)).pow(2).mean(-1)
        return scale * (F.normalize(h, dim=-1) @ F.normalize(protos, dim=-1).T)


@VERBALIZERS.register("proto")
@dataclass(frozen=True)
class Proto(LabelWordShare):
    """Support prototypes; ``distance``: cosine | euclidean; ``scale``: initial temperature;
    ``learn_transform``: a learned linear map of the states (identity init)."""

    verbalizer = ProtoVerbalizer
    title = "class prototypes of the support examples"

    learn_transform: bool = False
    distance: str = "cosine"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.choice(self.distance, "verbalizer.distance", DISTANCES)
        checks.check(self.label_word_share == 0 or self.distance == "cosine", "verbalizer.label_word_share",
                     "mixes normalised states: it needs verbalizer.distance=cosine")
