"""Verbalizers: from the model's ``[MASK]`` output to one score per class of the episode.

===============  ==========  ================================================================
``kind``         spec        what scores a class
===============  ==========  ================================================================
``label_words``  LabelWords  MLM-head logits of the label words (MetaPrompting; needs an MLM head)
``soft``         Soft        learned class embeddings, label-word init, cosine (WARP-style)
``proto``        Proto       class prototypes of the support ``[MASK]`` states, cosine or Euclidean
``repverb``      Rep         MetaPrompter's RepVerb: centred, normalised support prototypes, cosine
``hybrid``       Hybrid      MetaPrompter's mixture of RepVerb and label words (needs an MLM head)
``ridge``        Ridge       ridge regression fitted to the support states in closed form (R2-D2)
===============  ==========  ================================================================

Every module of this package is imported here, and registers its kind in :data:`VERBALIZERS`: a
new kind is a new file (see :mod:`metaprompt.verbalizers.base`).
"""
from __future__ import annotations

from metaprompt.registry import import_members
from metaprompt.verbalizers.base import VERBALIZERS, Params, Verbalizer, VerbalizerSpec, class_means

import_members(__name__, __path__, first=("base", "label_words", "soft", "proto", "rep", "hybrid", "ridge"))

from metaprompt.verbalizers.hybrid import Hybrid, HybridVerbalizer  # noqa: E402  (after the registry is filled)
from metaprompt.verbalizers.label_words import LabelWords, LabelWordVerbalizer  # noqa: E402
from metaprompt.verbalizers.proto import DISTANCES, Proto, ProtoVerbalizer  # noqa: E402
from metaprompt.verbalizers.rep import Rep, RepVerbalizer  # noqa: E402
from metaprompt.verbalizers.ridge import Ridge, RidgeVerbalizer  # noqa: E402
from metaprompt.verbalizers.soft import Soft, SoftVerbalizer  # noqa: E402

__all__ = ["DISTANCES", "VERBALIZERS", "Hybrid", "HybridVerbalizer", "LabelWordVerbalizer", "LabelWords", "Params",
           "Proto", "ProtoVerbalizer", "Rep", "RepVerbalizer", "Ridge", "RidgeVerbalizer", "Soft", "SoftVerbalizer", "Verbalizer",
           "VerbalizerSpec", "class_means"]
