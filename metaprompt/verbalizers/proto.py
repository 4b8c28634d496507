"""``proto``: class prototypes of the support ``[MASK]`` states, cosine or Euclidean."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from metaprompt import checks
from metaprompt.verbalizers.base import (VERBALIZERS, Prototypes, Verbalizer, apply_transform, class_means,
                                         scale_and_transform, support_states)

DISTANCES = ("cosine", "euclidean")


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

    needs_support = True

    def init_params(self, generator):
        return scale_and_transform(self)

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        states = apply_transform(params, support_states(self, support, task))
        h = apply_transform(params, h_mask)
        protos = class_means(states, task.support.labels, len(task.classes))
        scale = params["log_scale"].exp()
        if self.spec.distance == "euclidean":
            return -scale * (h.unsqueeze(1) - protos.unsqueeze(0)).pow(2).mean(-1)
        return scale * (F.normalize(h, dim=-1) @ F.normalize(protos, dim=-1).T)


@VERBALIZERS.register("proto")
@dataclass(frozen=True)
class Proto(Prototypes):
    """Support prototypes; ``distance``: cosine | euclidean; ``scale``: initial temperature;
    ``learn_transform``: a learned linear map of the states (identity init)."""

    verbalizer = ProtoVerbalizer
    title = "class prototypes of the support examples"

    learn_transform: bool = False
    distance: str = "cosine"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.choice(self.distance, "verbalizer.distance", DISTANCES)
