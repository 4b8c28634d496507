"""What every baseline shares: the registry, the frozen mean-pooling embedder, episode texts, scoring.

A baseline is a frozen dataclass of plain settings registered with ``@BASELINES.register(name)``;
``spec.predict(episode, embed)`` returns the predicted local label of each query text.
``embed`` is one :class:`MeanPooledEmbedder` per backbone and truncation, shared by all
baselines and episodes (each text is embedded once).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from episodes import Episode
from metaprompt.registry import Registry

BASELINES: Registry[type["BaselineSpec"]] = Registry("baseline method", attribute="method")


@dataclass
class MeanPooledEmbedder:
    """Mean-pooled last hidden states of ``backbone`` for texts, computed once per text (what
    sentence encoders such as MiniLM were trained to produce: the mean over the real tokens).

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
        model = self.backbone.encoder.transformer  # the transformer without any task head
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            enc = tokenizer(list(chunk), truncation=True, max_length=self.max_length, padding=True,
                            return_tensors="pt").to(self.device)
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0].float()
            weights = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            for text, vector in zip(chunk, pooled):
                self._cache[text] = vector.cpu()
        return torch.stack([self._cache[t] for t in texts])


def label_word_text(words: Sequence[str]) -> str:
    """One class's label words as the short text that stands for the class."""
    return " ".join(words)


@dataclass(frozen=True)
class EpisodeTexts:
    """One episode as texts: support (label words appended when given), its local labels, query."""

    support: list[str]
    labels: list[int]
    query: list[str]
    query_labels: list[int]
    n_classes: int


def episode_texts(texts: Sequence[str], episode: Episode,
                  label_words: dict[int, list[str]] | None = None) -> EpisodeTexts:
    support = [texts[i] for i in episode.support]
    labels = list(episode.support_labels())
    if label_words is not None:
        support += [label_word_text(label_words[c]) for c in episode.classes]
        labels += list(range(len(episode.classes)))
    return EpisodeTexts(support, labels, [texts[i] for i in episode.query], list(episode.query_labels()),
                        len(episode.classes))


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline's settings; subclasses implement :meth:`predict`."""

    method: ClassVar[str]
    title: ClassVar[str] = ""
    #: (setting, candidates): the setting chosen on validation-class episodes when not given
    tuned: ClassVar[tuple[str, tuple] | None] = None

    def predict(self, episode: EpisodeTexts, embed: MeanPooledEmbedder) -> torch.Tensor:
        raise NotImplementedError

    def settings(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


def score(spec: BaselineSpec, embed: MeanPooledEmbedder, texts: Sequence[str], episodes: Sequence[Episode],
          label_words: dict[int, list[str]] | None = None, progress: bool = False,
          done: Sequence[tuple[float, float]] = (), record: Callable[[int, float, float], None] | None = None,
          ) -> tuple[list[float], float]:
    """Per-episode query accuracies of ``spec`` and the seconds they took (embedding included).

    ``done``: (accuracy, seconds) of the first episodes, scored by an earlier, killed run; they are
    not scored again. ``record(index, accuracy, seconds)`` is called after each newly scored episode
    (to keep it on disk: SetFit takes minutes per episode on a CPU)."""
    from tqdm.auto import tqdm

    accuracies, seconds = [a for a, _ in done], sum(s for _, s in done)
    todo = list(enumerate(episodes))[len(done):]
    for index, episode in tqdm(todo, desc=spec.method, initial=len(done), total=len(episodes),
                               disable=not progress, leave=False):
        started = time.perf_counter()
        ep = episode_texts(texts, episode, label_words)
        preds = spec.predict(ep, embed)
        accuracy = float((preds == torch.as_tensor(ep.query_labels)).float().mean())
        took = time.perf_counter() - started
        accuracies.append(accuracy)
        seconds += took
        if record is not None:
            record(index, accuracy, took)
    return accuracies, seconds


def choose_setting(spec_class: type[BaselineSpec], embed: MeanPooledEmbedder, texts: Sequence[str],
                   episodes: Sequence[Episode], label_words: dict[int, list[str]] | None = None
                   ) -> tuple[object, dict[object, float]]:
    """The candidate of ``spec_class.tuned`` with the best mean accuracy on ``episodes``
    (validation-class episodes, never test ones), and every candidate's accuracy."""
    name, candidates = spec_class.tuned
    tried = {}
    for value in candidates:
        accs, _ = score(spec_class(**{name: value}), embed, texts, episodes, label_words)
        tried[value] = sum(accs) / len(accs)
    return max(tried, key=tried.get), tried
