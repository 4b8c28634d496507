"""``soft``: learned class embeddings, label-word init, cosine (WARP-style)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from metaprompt.verbalizers.base import (VERBALIZERS, Scaled, Verbalizer, apply_transform,
                                         scale_and_transform)


class SoftVerbalizer(Verbalizer):
    """Learnable class embeddings scored against the ``[MASK]`` state (WARP-style).

    Each task's class embeddings start at the mean input embedding of the class's label
    words and are fast weights of the inner loop; a temperature (and optionally a linear map
    of the ``[MASK]`` state, identity at init) is meta-learned. Score = scale · cos(W h + b, e_c).
    """

    task_keys = frozenset({"class_emb"})

    def init_params(self, generator):
        return scale_and_transform(self)

    def task_params(self, params, task):
        return {**params, "class_emb": self.class_label_embeddings(task.classes, params["log_scale"])}

    def logits(self, params, h_mask, vocab_logits, task, support=None):
        h = apply_transform(params, h_mask)
        cosine = F.normalize(h, dim=-1) @ F.normalize(params["class_emb"], dim=-1).T
        return params["log_scale"].exp() * cosine


@VERBALIZERS.register("soft")
@dataclass(frozen=True)
class Soft(Scaled):
    """Class embeddings from the label words, tuned per task; ``scale``: initial temperature;
    ``learn_transform``: a learned linear map of the ``[MASK]`` state (identity init)."""

    verbalizer = SoftVerbalizer
    title = "learned class embeddings (cosine)"

    learn_transform: bool = False

    @classmethod
    def card(cls, facts):
        extra = (" A learned linear map (`transform`, `bias` in `verbalizer.safetensors`) is applied to h first."
                 if facts.get("learned_transform") else "")
        return ("Soft verbalizer: score_c = T · cos(h, e_c), where h is the [MASK] state, e_c starts at the mean "
                "input embedding of class c's label words (each word: the mean of its word pieces' embeddings; "
                f"then the mean over the words) and is tuned per task, and T = exp(`log_scale`) = "
                f"{facts.get('temperature', float('nan')):.6g} (meta-learned).{extra}")
