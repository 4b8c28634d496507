"""``setfit``: SetFit (Tunstall et al. 2022) through the ``setfit`` library.

Per episode a fresh copy of the sentence encoder is fine-tuned contrastively on pairs of the
support texts, then the library's logistic-regression head is fitted on its embeddings. The
settings are the library's (setfit 1.x: one epoch, batch 16, body learning rate 2e-5) except the
number of pairs: ``num_iterations=20`` positive and 20 negative pairs per support example, the
SetFit paper's R = 20 and setfit 0.x's default. setfit 1.x's own default (``num_iterations=None``)
draws the unique pairs, the rarer kind repeated: 80 pairs for 5-way 1-shot with label words
instead of 400, 720 instead of 1200 at 5 shots. ``experiments/setfit_settings.py`` scores both on
validation-class episodes. Texts are cut to the same word pieces as every other method in the row
(``max_length``, set on the encoder). Needs the optional extra: ``pip install metaprompt[setfit]``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from metaprompt.baselines.base import BASELINES, BaselineSpec
from metaprompt.errors import UserError


@BASELINES.register("setfit")
@dataclass(frozen=True)
class SetFit(BaselineSpec):
    title = ("SetFit (contrastive fine-tuning + logistic head; setfit library defaults but 20 pair iterations "
             "per example, the paper's setting)")
    #: pairs of each kind per support example; None: setfit 1.x's default (oversampled unique pairs)
    num_iterations: int | None = 20
    epochs: int = 1
    batch_size: int = 16
    body_lr: float = 2e-5
    seed: int = 42

    def predict(self, episode, embed):
        model = copy.deepcopy(_pretrained(embed))
        from datasets import Dataset
        from setfit import Trainer, TrainingArguments

        args = TrainingArguments(batch_size=self.batch_size, num_epochs=self.epochs, num_iterations=self.num_iterations,
                                 body_learning_rate=self.body_lr, seed=self.seed, report_to="none",
                                 show_progress_bar=False, save_strategy="no", logging_strategy="no")
        train = Dataset.from_dict({"text": episode.support, "label": episode.labels})
        Trainer(model=model, args=args, train_dataset=train).train()
        return torch.as_tensor(model.predict(episode.query, show_progress_bar=False)).long()


_MODELS: dict[int, object] = {}


def _pretrained(embed):
    """The SetFit model of ``embed``'s backbone (loaded once, copied per episode)."""
    key = id(embed)
    if key not in _MODELS:
        try:
            from setfit import SetFitModel
        except ImportError as exc:
            raise UserError("baseline method 'setfit' needs the setfit library: pip install 'metaprompt[setfit]'") from exc
        path = getattr(embed.backbone, "path", None) or embed.backbone.name
        model = SetFitModel.from_pretrained(path, device=str(embed.device), trust_remote_code=False)
        model.model_body.max_seq_length = embed.max_length
        _MODELS[key] = model
    return _MODELS[key]
