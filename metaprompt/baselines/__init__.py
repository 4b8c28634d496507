"""The baselines a practitioner tries first, scored on the same fixed episodes as a meta-learned init.

==================  ==================================================================================
method              how an episode is solved
==================  ==================================================================================
``centroid``        nearest class centroid of frozen mean-pooled embeddings (cosine; no training)
``linear_probe``    logistic regression (scikit-learn) on frozen, L2-normalised mean-pooled embeddings
``ridge``           ridge-regression classifier (scikit-learn) on the same embeddings: the ``ridge``
                    verbalizer's head without meta-learning
``setfit``          SetFit (contrastive fine-tuning of the sentence encoder + logistic head), the
                    ``setfit`` library's defaults but the paper's 20 pair iterations per example;
                    optional extra ``metaprompt[setfit]``
==================  ==================================================================================

With ``label_words=True`` each class's label words (the words a verbalizer starts from), joined
into one short text, count as one more support example of that class, so a baseline gets the
same information as a meta-learned verbalizer initialised from them. Every module of this
package registers its method in :data:`BASELINES`; a new baseline is a new file.
"""
from __future__ import annotations

from metaprompt.baselines.base import (BASELINES, BaselineSpec, EpisodeTexts, MeanPooledEmbedder, episode_texts,
                                       choose_setting, label_word_text, score)
from metaprompt.registry import import_members

import_members(__name__, __path__, first=("base", "centroid", "linear_probe", "ridge", "setfit"))

from metaprompt.baselines.centroid import Centroid  # noqa: E402  (after the registry is filled)
from metaprompt.baselines.linear_probe import LinearProbe  # noqa: E402
from metaprompt.baselines.ridge import RidgeProbe  # noqa: E402
from metaprompt.baselines.setfit import SetFit  # noqa: E402

__all__ = ["BASELINES", "BaselineSpec", "Centroid", "EpisodeTexts", "LinearProbe", "MeanPooledEmbedder", "RidgeProbe",
           "SetFit", "choose_setting", "episode_texts", "label_word_text", "score"]
