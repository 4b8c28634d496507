"""``ridge``: a ridge-regression classifier (scikit-learn ``RidgeClassifier``) on frozen,
L2-normalised mean-pooled embeddings: the control for the ``ridge`` verbalizer (the same head
without meta-learning). ``ridge_lambda`` (the regularisation λ, scikit-learn's ``alpha``) is chosen on validation
classes unless ``baseline.ridge_lambda`` is set."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprompt.baselines.base import BASELINES, BaselineSpec


@BASELINES.register("ridge")
@dataclass(frozen=True)
class RidgeProbe(BaselineSpec):
    title = "ridge-regression classifier on frozen mean-pooled embeddings"
    tuned = ("ridge_lambda", (0.01, 0.1, 1.0, 10.0))
    ridge_lambda: float = 1.0

    def __post_init__(self) -> None:
        if not self.ridge_lambda > 0:
            raise ValueError(f"ridge ridge_lambda must be > 0, got {self.ridge_lambda}")

    def predict(self, episode, embed):
        from sklearn.linear_model import RidgeClassifier

        model = RidgeClassifier(alpha=self.ridge_lambda)
        model.fit(F.normalize(embed(episode.support), dim=-1).numpy(), episode.labels)
        return torch.as_tensor(model.predict(F.normalize(embed(episode.query), dim=-1).numpy()))
