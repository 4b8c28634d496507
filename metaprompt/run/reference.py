"""A training-free reference: nearest class centroid of mean-pooled sentence embeddings.

Against a verbalizer head that starts at chance, "pretrained init" alone flatters a
meta-learned init; this reference (no prompt, no template, no adaptation) says what the
frozen backbone already knows. It is the ``centroid`` baseline of
:mod:`metaprompt.baselines` without label words, reading up to ``model.max_length``
word pieces of each text.
"""
from __future__ import annotations

from typing import Sequence

from episodes import Episode
from metaprompt.baselines import Centroid, MeanPooledEmbedder, score
from metaprompt.run.setup import Setup


def centroid_reference(setup: Setup, episodes: Sequence[Episode]) -> tuple[list[float], float]:
    """Per-episode accuracies and the seconds they took."""
    max_length = min(setup.cfg.model.max_length, setup.backbone.max_positions)
    embed = MeanPooledEmbedder(setup.backbone, max_length=max_length, device=setup.device)
    return score(Centroid(), embed, setup.dataset.texts, episodes)
