"""A training-free reference: nearest class centroid of mean-pooled sentence embeddings.

Against a verbalizer head that starts at chance, "pretrained init" alone flatters a
meta-learned init; this reference (no prompt, no template, no adaptation) says what the
frozen backbone already knows.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F

from episodes import Episode
from metaprompt.run.setup import Setup


@torch.no_grad()
def _embed(setup: Setup, ids: Sequence[int], cache: dict[int, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    todo = [i for i in dict.fromkeys(ids) if i not in cache]
    tokenizer = setup.backbone.tokenizer
    encoder = setup.backbone.encoder.encoder
    max_length = min(setup.cfg.model.max_length, setup.backbone.max_positions)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        enc = tokenizer([setup.dataset.texts[i] for i in chunk], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt").to(setup.device)
        hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0].float()
        weights = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        for i, vector in zip(chunk, pooled):
            cache[i] = vector
    return torch.stack([cache[i] for i in ids])


def centroid_reference(setup: Setup, episodes: Sequence[Episode]) -> tuple[list[float], float]:
    """Per-episode accuracies and the seconds they took."""
    started = time.perf_counter()
    cache: dict[int, torch.Tensor] = {}
    accuracies = []
    for episode in episodes:
        support = F.normalize(_embed(setup, episode.support, cache), dim=-1)
        query = F.normalize(_embed(setup, episode.query, cache), dim=-1)
        labels = torch.as_tensor(episode.support_labels(), device=support.device)
        centroids = torch.stack([support[labels == c].mean(0) for c in range(len(episode.classes))])
        preds = (query @ F.normalize(centroids, dim=-1).T).argmax(-1).cpu()
        truth = torch.as_tensor(episode.query_labels())
        accuracies.append(float((preds == truth).float().mean()))
    return accuracies, time.perf_counter() - started
