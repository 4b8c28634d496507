"""``label_words``: MLM-head logits of the label words (MetaPrompting; needs an MLM head)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from metaprompt.errors import ConfigError
from metaprompt.verbalizers.base import VERBALIZERS, Verbalizer, VerbalizerSpec


class LabelWordVerbalizer(Verbalizer):
    """MLM-head logits of each class's label words, averaged (MetaPrompting's verbalizer).

    As in the MetaPrompting code, each word contributes the logit of its first word piece.
    """

    needs_vocab = True

    def __init__(self, spec, backbone, label_word_ids):
        super().__init__(spec, backbone, label_word_ids)
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


@VERBALIZERS.register("label_words")
@dataclass(frozen=True)
class LabelWords(VerbalizerSpec):
    """Label-word logits of a masked-LM head; no settings, nothing learned."""

    verbalizer = LabelWordVerbalizer
    title = "label-word logits of the masked-LM head"

    @classmethod
    def card(cls, facts):
        return ("Label words: a class's score is the mean MLM-head logit at [MASK] of the first word piece of "
                "each of its label words.")
