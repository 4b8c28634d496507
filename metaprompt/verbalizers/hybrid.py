"""``hybrid``: MetaPrompter's mixture of RepVerb and label words (needs an MLM head)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metaprompt import checks
from metaprompt.errors import ConfigError
from metaprompt.verbalizers.base import VERBALIZERS, Prototypes, Verbalizer
from metaprompt.verbalizers.label_words import LabelWordVerbalizer
from metaprompt.verbalizers.rep import RepVerbalizer


class HybridVerbalizer(Verbalizer):
    """MetaPrompter's final scorer: w · softmax(RepVerb) + (1 − w) · softmax(label words),
    w = ``verbalizer.hybrid_weight`` (0.5 in the paper). ``logits`` returns the *log* of this
    mixture, so cross-entropy on it is the negative log-likelihood of the mixture and argmax
    is the mixture's prediction. Needs a masked-LM head."""

    needs_vocab = True
    needs_support = True

    def __init__(self, spec, backbone, label_word_ids):
        super().__init__(spec, backbone, label_word_ids)
        if not backbone.has_mlm_head:
            raise ConfigError(
                f"config key 'verbalizer.kind': 'hybrid' mixes RepVerb with label-word scores from a masked-LM head, and model "
                f"'{backbone.name}' has none (the offline MiniLM ships without one); use verbalizer.kind=repverb, "
                "or a model with an MLM head such as bert-base-uncased")
        self.rep = RepVerbalizer(spec, backbone, label_word_ids)
        self.words = LabelWordVerbalizer(spec, backbone, label_word_ids)

    def init_params(self, generator):
        return self.rep.init_params(generator)

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        rep = torch.log_softmax(self.rep.logits(params, h_mask, None, task, support), dim=-1)
        words = torch.log_softmax(self.words.logits({}, h_mask, vocab_logits, task), dim=-1)
        w = float(self.spec.hybrid_weight)
        if w >= 1.0:
            return rep
        if w <= 0.0:
            return words
        return torch.logsumexp(torch.stack([rep + math.log(w), words + math.log(1.0 - w)]), dim=0)


@VERBALIZERS.register("hybrid")
@dataclass(frozen=True)
class Hybrid(Prototypes):
    """RepVerb mixed with label words; ``hybrid_weight``: the weight of RepVerb; ``scale``: its
    initial temperature."""

    verbalizer = HybridVerbalizer
    title = "RepVerb mixed with label-word logits"

    hybrid_weight: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check(0.0 <= self.hybrid_weight <= 1.0, "verbalizer.hybrid_weight",
                     f"must be a number in [0, 1], got {self.hybrid_weight!r}")
