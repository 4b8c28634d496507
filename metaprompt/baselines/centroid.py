"""``centroid``: nearest class centroid of frozen mean-pooled embeddings, by cosine; no training."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprompt.baselines.base import BASELINES, BaselineSpec


@BASELINES.register("centroid")
@dataclass(frozen=True)
class Centroid(BaselineSpec):
    title = "nearest centroid of frozen mean-pooled embeddings"

    def predict(self, episode, embed):
        support = F.normalize(embed(episode.support), dim=-1)
        labels = torch.as_tensor(episode.labels)
        centroids = torch.stack([support[labels == c].mean(0) for c in range(episode.n_classes)])
        return (F.normalize(embed(episode.query), dim=-1) @ F.normalize(centroids, dim=-1).T).argmax(-1)
