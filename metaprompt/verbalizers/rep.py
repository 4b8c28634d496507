"""``repverb``: MetaPrompter's RepVerb: centred, normalised support prototypes, cosine."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprompt.verbalizers.base import VERBALIZERS, Prototypes, Verbalizer, class_means, support_states


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

    needs_support = True

    def init_params(self, generator):
        return {"log_scale": torch.tensor(math.log(self.spec.scale))}

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        states = support_states(self, support, task)
        centre = states.mean(0, keepdim=True)
        protos = class_means(F.normalize(states - centre, dim=-1), task.support.labels, len(task.classes))
        h = F.normalize(h_mask - centre, dim=-1)
        return params["log_scale"].exp() * (h @ F.normalize(protos, dim=-1).T)


@VERBALIZERS.register("repverb")
@dataclass(frozen=True)
class Rep(Prototypes):
    """RepVerb; ``scale``: initial temperature."""

    verbalizer = RepVerbalizer
    title = "centred support prototypes (RepVerb)"
