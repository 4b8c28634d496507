"""The baselines a practitioner tries first: classifiers on frozen mean-pooled embeddings.

No prompt, no template, no meta-learning: each text is embedded once by the backbone (the mean
of its last hidden states over the real tokens, what sentence encoders such as MiniLM were
trained to produce), and each episode is solved from its support embeddings alone:

``centroid``      nearest class centroid by cosine similarity (no training);
``linear_probe``  multinomial logistic regression (scikit-learn) on L2-normalised embeddings.

With ``label_words=True`` each class's label words (the words a verbalizer starts from, joined
into one short text) are embedded too and count as one more support example of that class, so
these baselines get the same information as a meta-learned verbalizer initialised from them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from episodes import Episode

METHODS = ("centroid", "linear_probe")


@dataclass
class MeanPooledEmbedder:
    """Mean-pooled last hidden states of ``backbone`` for texts, computed once per text.

    ``max_length``: word pieces per text, special tokens included (the truncation stated with
    every result)."""

    backbone: object
    max_length: int
    device: torch.device | str = "cpu"
    batch_size: int = 64
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        tokenizer = self.backbone.tokenizer
        encoder = self.backbone.encoder.encoder
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            enc = tokenizer(list(chunk), truncation=True, max_length=self.max_length, padding=True,
                            return_tensors="pt").to(self.device)
            hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0].float()
            weights = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            for text, vector in zip(chunk, pooled):
                self._cache[text] = vector.cpu()
        return torch.stack([self._cache[t] for t in texts])


def label_word_text(words: Sequence[str]) -> str:
    """One class's label words as the short text that is embedded for it."""
    return " ".join(words)


def _centroid(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n: int, **_) -> torch.Tensor:
    support = F.normalize(support, dim=-1)
    centroids = torch.stack([support[labels == c].mean(0) for c in range(n)])
    return (F.normalize(query, dim=-1) @ F.normalize(centroids, dim=-1).T).argmax(-1)


def _linear_probe(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n: int,
                  C: float = 1.0, **_) -> torch.Tensor:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=1000)
    model.fit(F.normalize(support, dim=-1).numpy(), labels.numpy())
    return torch.as_tensor(model.predict(F.normalize(query, dim=-1).numpy()))


CLASSIFIERS: dict[str, Callable[..., torch.Tensor]] = {"centroid": _centroid, "linear_probe": _linear_probe}


def episode_accuracy(method: str, embed: MeanPooledEmbedder, texts: Sequence[str], episode: Episode,
                     label_words: dict[int, list[str]] | None = None, **settings) -> float:
    """Query accuracy of ``method`` on one episode; ``label_words``: class id → words, added as
    one support example per class."""
    if method not in CLASSIFIERS:
        raise ValueError(f"baseline method '{method}' is not one of {', '.join(CLASSIFIERS)}")
    support = embed([texts[i] for i in episode.support])
    labels = torch.as_tensor(episode.support_labels())
    if label_words is not None:
        words = embed([label_word_text(label_words[c]) for c in episode.classes])
        support = torch.cat([support, words])
        labels = torch.cat([labels, torch.arange(len(episode.classes))])
    query = embed([texts[i] for i in episode.query])
    preds = CLASSIFIERS[method](support, labels, query, len(episode.classes), **settings)
    return float((preds == torch.as_tensor(episode.query_labels())).float().mean())


def score(method: str, embed: MeanPooledEmbedder, texts: Sequence[str], episodes: Sequence[Episode],
          label_words: dict[int, list[str]] | None = None, progress: bool = False,
          **settings) -> tuple[list[float], float]:
    """Per-episode accuracies of ``method`` and the seconds they took (embedding included)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    accuracies = [episode_accuracy(method, embed, texts, e, label_words, **settings)
                  for e in tqdm(episodes, desc=method, disable=not progress, leave=False)]
    return accuracies, time.perf_counter() - started
