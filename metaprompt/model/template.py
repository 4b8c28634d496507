"""Prompt templates: ``"{text} . [P] topic is [MASK] ."`` → token ids, soft-prompt slots, mask position.

``{text}`` is the example, ``[P]`` marks soft-prompt slots (``prompt.length`` tokens shared
out over the markers) and ``[MASK]`` is where the verbalizer reads the model. A template
without ``[MASK]`` (``"[P] {text}"``) is read out by mean pooling: the mean of the last hidden
states over the real tokens but the prompt slots, the sentence embedding that encoders such as
MiniLM were trained to produce (hidden-state verbalizers only). Texts are
tokenised once per data set (:meth:`TemplateEncoder.tokenize_texts`); an episode only assembles
already tokenised pieces and pads them to the longest example of its batch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from metaprompt.errors import UserError

_MARKERS = re.compile(r"(\{text\}|\[P\]|\[MASK\])")


_TENSORS = ("input_ids", "attention_mask", "mask_positions", "prompt_positions", "labels")


@dataclass
class Batch:
    """Padded model inputs for a list of examples (tensors on one device).

    ``full``, ``chunks``, ``chunk_rows`` and ``order`` are facts known on the host when the
    batch is built, so a forward pass never reads the device to learn them (no host-device
    synchronisation): ``full`` says that no row is padded; with length bucketing
    (``model.length_buckets``) ``chunks`` holds the rows sorted by length and cut into
    sub-batches, each padded only to its own longest row, ``chunk_rows`` their row indices,
    and ``order`` puts the chunks' concatenated outputs back in row order."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    mask_positions: torch.Tensor  # [B]
    prompt_positions: torch.Tensor  # [B, L] (L may be 0)
    labels: torch.Tensor | None = None  # [B] local class indices
    full: bool | None = None  # True: no padding; None: unknown
    chunks: tuple["Batch", ...] | None = None
    chunk_rows: tuple[torch.Tensor, ...] | None = None
    order: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def _map(self, fn) -> "Batch":
        """A copy with ``fn`` applied to every tensor, the chunks' included."""
        apply = lambda t: None if t is None else fn(t)  # noqa: E731
        return Batch(**{name: apply(getattr(self, name)) for name in _TENSORS}, full=self.full,
                     chunks=None if self.chunks is None else tuple(c._map(fn) for c in self.chunks),
                     chunk_rows=None if self.chunk_rows is None else tuple(apply(r) for r in self.chunk_rows),
                     order=apply(self.order))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """A copy in page-locked memory (host-to-device copies from it need not wait for the device)."""
        return self._map(lambda t: t.pin_memory())

    def select(self, rows: torch.Tensor | Sequence[int]) -> "Batch":
        """A sub-batch (rows keep their padding, and the sub-batch has no length buckets; used for mini-batches)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        return Batch(**{name: (None if getattr(self, name) is None else getattr(self, name)[rows])
                        for name in _TENSORS}, full=self.full)


class TemplateError(UserError, ValueError):
    pass


def _special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one sequence ([CLS] ... [SEP], <s> ... </s>)."""
    plain = list(tokenizer.encode("hello", add_special_tokens=False))
    full = list(tokenizer.encode("hello", add_special_tokens=True))
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise TemplateError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens")


def _pieces(template: str) -> list[str]:
    if not isinstance(template, str):
        raise TemplateError(f"a template is a string with {{text}}, [MASK] and [P] markers, got {template!r}")
    pieces = [p for p in _MARKERS.split(template) if p != ""]
    if pieces.count("{text}") != 1 or pieces.count("[MASK]") > 1:
        raise TemplateError(f"template needs exactly one {{text}} and at most one [MASK]: {template!r}")
    return pieces


class Template:
    """A prompt template, e.g. ``"{text} . [P] topic is [MASK] ."``, and its length budget.

    ``max_length``: tokens of the whole input (template, prompt and text); ``max_text_tokens``:
    word pieces kept per text. The text is checked here; :meth:`bind` ties it to a tokenizer and
    a prompt length (the classifier does that)."""

    def __init__(self, text: str, max_length: int = 128, max_text_tokens: int = 64):
        _pieces(text)
        if max_length < 8 or max_text_tokens < 1:
            raise TemplateError(f"template budget: max_length must be ≥ 8 and max_text_tokens ≥ 1, got "
                                f"{max_length} and {max_text_tokens}")
        self.text = text
        self.max_length = max_length
        self.max_text_tokens = max_text_tokens

    def __repr__(self) -> str:
        return f"Template({self.text!r}, max_length={self.max_length}, max_text_tokens={self.max_text_tokens})"

    def bind(self, tokenizer, prompt_length: int, max_positions: int | None = None) -> "TemplateEncoder":
        """The template for ``tokenizer`` with ``prompt_length`` soft tokens in its ``[P]`` slots
        (``max_positions``: the model's limit, when lower than ``max_length``)."""
        max_length = self.max_length if max_positions is None else min(self.max_length, max_positions)
        return TemplateEncoder(self.text, tokenizer, prompt_length, max_length, self.max_text_tokens)


class TemplateEncoder:
    """A template bound to a tokenizer, a prompt length and a length budget: texts to :class:`Batch` es."""

    def __init__(self, template: str, tokenizer, prompt_length: int, max_length: int, max_text_tokens: int):
        self.template = template
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.max_length = max_length
        self.max_text_tokens = max_text_tokens
        pieces = _pieces(template)
        n_slots = pieces.count("[P]")
        if prompt_length > 0 and n_slots == 0:
            raise TemplateError(f"prompt length {prompt_length} but no [P] in template {template!r}")
        # Share the prompt tokens out over the [P] markers, earlier markers first.
        sizes = [prompt_length // n_slots + (1 if i < prompt_length % n_slots else 0) for i in range(n_slots)]
        self._segments: list[tuple[str, object]] = []  # ("ids", [..]) | ("text", None) | ("mask", None) | ("prompt", n)
        slot = 0
        for index, piece in enumerate(pieces):
            if piece == "{text}":
                self._segments.append(("text", None))
            elif piece == "[MASK]":
                self._segments.append(("mask", None))
            elif piece == "[P]":
                self._segments.append(("prompt", sizes[slot]))
                slot += 1
            else:
                ids = self._literal_ids(piece, at_start=index == 0)
                if ids:
                    self._segments.append(("ids", ids))
        self.text_leading_space = pieces.index("{text}") > 0
        self._prefix, self._suffix = _special_tokens_around(tokenizer)
        self.reads_mask = "[MASK]" in pieces  # else: mean-pooled readout
        overhead = len(self._prefix) + len(self._suffix) + int(self.reads_mask) + prompt_length
        overhead += sum(len(v) for k, v in self._segments if k == "ids")
        self.text_budget = min(max_text_tokens, max_length - overhead)
        if self.text_budget < 1:
            raise TemplateError(
                f"template {template!r} with {prompt_length} prompt tokens needs {overhead} tokens, "
                f"leaving no room for text within model.max_length={max_length}"
            )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.mask_id = tokenizer.mask_token_id
        # Prompt slots carry a real token id (its embedding is overwritten by the soft prompt).
        self.slot_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else self.pad_id

    def _literal_ids(self, piece: str, at_start: bool) -> list[int]:
        text = piece.rstrip()
        if not text.strip():
            return []
        # Byte-level BPE (RoBERTa) encodes a leading space into the token; WordPiece ignores it.
        text = text.lstrip()
        if not at_start:
            text = " " + text
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def tokenize_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, cut to the template's text budget (no special tokens)."""
        if self.text_leading_space:
            texts = [" " + t.lstrip() for t in texts]
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                                 max_length=self.text_budget)["input_ids"]
        return [list(ids) for ids in encoded]

    def encode(self, text_ids: Sequence[int]) -> tuple[list[int], int, list[int]]:
        """One example: (input ids, [MASK] position (0 when the template has none), prompt-slot positions)."""
        ids = list(self._prefix)
        mask_pos = 0
        prompt_pos: list[int] = []
        for kind, value in self._segments:
            if kind == "text":
                ids.extend(text_ids[: self.text_budget])
            elif kind == "mask":
                mask_pos = len(ids)
                ids.append(self.mask_id)
            elif kind == "prompt":
                prompt_pos.extend(range(len(ids), len(ids) + value))
                ids.extend([self.slot_id] * value)
            else:
                ids.extend(value)
        ids.extend(self._suffix)
        return ids, mask_pos, prompt_pos

    def batch(self, token_lists: Sequence[Sequence[int]], labels: Sequence[int] | None = None,
              buckets: int = 1) -> Batch:
        """Encode and pad examples to the longest one (dynamic padding).

        ``buckets`` > 1: also sort the rows by length and cut them into up to that many chunks of
        (nearly) equal size, each padded to its own longest row; the classifier runs the chunks
        and puts the outputs back in row order, so results are those of the padded batch (up to
        float rounding) with fewer padded tokens computed."""
        encoded = [self.encode(ids) for ids in token_lists]
        batch = self._pad(encoded, labels)
        lengths = [len(ids) for ids, _, _ in encoded]
        n = len(encoded)
        if buckets > 1 and n > 1 and min(lengths) < max(lengths):
            ranked = sorted(range(n), key=lambda i: lengths[i])  # stable: ties keep row order
            parts = min(buckets, n)
            bounds = [round(k * n / parts) for k in range(parts + 1)]
            groups = [ranked[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
            batch.chunks = tuple(self._pad([encoded[i] for i in rows],
                                           None if labels is None else [labels[i] for i in rows]) for rows in groups)
            batch.chunk_rows = tuple(torch.tensor(rows, dtype=torch.long) for rows in groups)
            order = torch.empty(n, dtype=torch.long)
            order[torch.tensor(ranked, dtype=torch.long)] = torch.arange(n)
            batch.order = order
        return batch

    def _pad(self, encoded: Sequence[tuple[list[int], int, list[int]]], labels: Sequence[int] | None) -> Batch:
        width = max(len(ids) for ids, _, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _, _) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        return Batch(
            input_ids=input_ids,
            attention_mask=attention,
            mask_positions=torch.tensor([m for _, m, _ in encoded], dtype=torch.long),
            prompt_positions=torch.tensor([p for _, _, p in encoded], dtype=torch.long).reshape(len(encoded), -1),
            labels=None if labels is None else torch.as_tensor(labels, dtype=torch.long),
            full=min(len(ids) for ids, _, _ in encoded) == width,
        )


def label_word_ids(tokenizer, label_words: dict[int, list[str]]) -> dict[int, list[list[int]]]:
    """Word-piece ids of every label word (with a leading space, as words follow a space)."""
    return {int(c): [list(tokenizer.encode(" " + w, add_special_tokens=False)) for w in words]
            for c, words in label_words.items()}


def builtin_templates(dataset: str) -> list[str]:
    """The MetaPrompting templates of a built-in data set, in order (T0, T1, T2).

    Read from ``metaprompt/resources/templates_<dataset>.yaml`` (shipped with the package;
    ``configs/templates/<dataset>.yaml`` is the same file for reading and copying)."""
    from importlib import resources

    import yaml

    path = resources.files("metaprompt") / "resources" / f"templates_{dataset}.yaml"
    if not path.is_file():
        raise TemplateError(f"no built-in templates for data set '{dataset}'")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    templates = data.get("templates")
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise TemplateError(f"{path}: expected a list of template strings under 'templates'")
    return templates
