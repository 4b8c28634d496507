"""``ridge``: a linear classifier fitted to the support states in closed form (ridge regression),
differentiable, so that the prompt is meta-learned for the head it is scored with.

This is R2-D2 (Bertinetto et al., "Meta-learning with differentiable closed-form solvers", ICLR
2019) on the prompted states. Written here because no library solves a weighted ridge problem
inside an autograd graph on the episode's own states; it is a few lines of ``torch.linalg``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaprompt import checks
from metaprompt.verbalizers.base import VERBALIZERS, LabelWordShare, SharesWithLabelWords, support_states


class RidgeVerbalizer(SharesWithLabelWords):
    """Closed-form ridge regression from the L2-normalised support states to one-hot labels.

    With the support states X [S, H] (rows normalised), one-hot targets Y [S, N] and row weights
    d, the head is W = argmin Σ_i d_i ‖x_i W − y_i‖² + λ‖W‖², solved in the S × S dual
    (S ≪ H): W = X̃ᵀ (X̃ X̃ᵀ + λ I)⁻¹ Ỹ with X̃ = √d X, Ỹ = √d Y. A query h scores
    ``s · n(h) W``. λ and the temperature s are meta-learned (``log_lambda``, ``log_scale``).

    ``label_word_share`` > 0: each class's label words, read as an input of the template under
    the same fast weights, are one more row of the regression, weighted so that they hold that
    share of the class's weight: a label-word row weighs k·a / (1 − a) against k support rows of
    weight 1 (a = 1 / (k + 1): one more support example, the linear probe with label words).
    a = sigmoid(``label_word_logit``) is meta-learned.
    """

    def init_params(self, generator):
        return {"log_scale": torch.tensor(math.log(self.spec.scale)),
                "log_lambda": torch.tensor(math.log(self.spec.ridge_lambda)), **self.share_params()}

    def logits(self, params, h_mask, vocab_logits, task, support=None, label_states=None):
        states = F.normalize(support_states(self, support, task), dim=-1)
        labels = task.support.labels
        n = len(task.classes)
        targets = (labels.unsqueeze(1) == torch.arange(n, device=labels.device)).to(states.dtype)
        weights = torch.ones(len(states), dtype=states.dtype, device=states.device)
        share = self.learned_share(params, label_states)
        if share is not None:
            shots = targets.sum(0).mean()  # k of the episode
            states = torch.cat([states, F.normalize(label_states, dim=-1)])
            targets = torch.cat([targets, torch.eye(n, dtype=states.dtype, device=states.device)])
            weights = torch.cat([weights, (shots * share / (1 - share)).expand(n)])
        root = weights.sqrt().unsqueeze(1)
        x, y = root * states, root * targets
        gram = x @ x.T + params["log_lambda"].exp() * torch.eye(len(x), dtype=x.dtype, device=x.device)
        head = x.T @ torch.linalg.solve(gram, y)  # [H, N]
        return params["log_scale"].exp() * (F.normalize(h_mask, dim=-1) @ head)


@VERBALIZERS.register("ridge")
@dataclass(frozen=True)
class Ridge(LabelWordShare):
    """Closed-form ridge regression on the support states (R2-D2); ``ridge_lambda``: initial
    regularisation λ (meta-learned); ``label_word_share``: the label words as one more weighted
    row per class (0: none); ``scale``: initial temperature."""

    verbalizer = RidgeVerbalizer
    title = "ridge regression fitted to the support examples in closed form"

    ridge_lambda: float = 0.1

    label_words_phrase = (", with each class's label words as one more row holding a learned share {share:.4g} "
                          "of its weight")

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.positive(self.ridge_lambda, "verbalizer.ridge_lambda")

    @classmethod
    def head_words(cls, facts) -> str:
        lam = facts.get("ridge_lambda")
        lam = "?" if lam is None else format(lam, ".4g")
        return f"a ridge-regression head (learned λ {lam}) fitted in closed form to"
