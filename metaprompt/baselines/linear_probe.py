"""``linear_probe``: multinomial logistic regression (scikit-learn) on frozen, L2-normalised
mean-pooled embeddings. ``C`` (inverse regularisation) is a setting; choose it on validation
classes (``metaprompt baseline`` does when ``baseline.C`` is not given)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprompt.baselines.base import BASELINES, BaselineSpec

C_GRID = (0.1, 1.0, 10.0, 100.0)


@BASELINES.register("linear_probe")
@dataclass(frozen=True)
class LinearProbe(BaselineSpec):
    title = "logistic regression on frozen mean-pooled embeddings"
    tuned = ("C", C_GRID)
    C: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if not self.C > 0:
            raise ValueError(f"linear_probe C must be > 0, got {self.C}")

    def predict(self, episode, embed):
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        model.fit(F.normalize(embed(episode.support), dim=-1).numpy(), episode.labels)
        return torch.as_tensor(model.predict(F.normalize(embed(episode.query), dim=-1).numpy()))

