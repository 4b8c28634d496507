"""The functional prompt classifier: ``logits = classifier(params, batch, task)``.

Every algorithm, engine and PEFT variant goes through this one call. ``params`` is a flat
dict of tensors whose names start with their group (``prompt.``, ``verbalizer.``,
``backbone.``); whatever is not in it is a constant (the frozen backbone, groups that are not
learned). Nothing trainable is stored on the classifier.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaprompt.model.backbone import Backbone
from metaprompt.model.template import Batch, Template, TemplateEncoder, TemplateError, label_word_ids
from metaprompt.prompts import PromptEncoder
from metaprompt.verbalizers import Verbalizer

Params = dict[str, torch.Tensor]
GROUPS = ("prompt", "verbalizer", "backbone")


@dataclass
class Task:
    """One episode ready for the model: its classes (global ids, in local-label order) and batches."""

    classes: tuple[int, ...]
    support: Batch
    query: Batch
    index: int = 0  # episode index (seeds any per-task randomness)

    def to(self, device) -> "Task":
        return Task(self.classes, self.support.to(device), self.query.to(device), self.index)


def split_params(params: Params) -> dict[str, Params]:
    """{"prompt": {...}, "verbalizer": {...}, "backbone": {...}} with the group prefix removed."""
    out: dict[str, Params] = {g: {} for g in GROUPS}
    for name, value in params.items():
        group, _, rest = name.partition(".")
        out.setdefault(group, {})[rest] = value
    return out


def prefixed(group: str, params: Params) -> Params:
    return {f"{group}.{k}": v for k, v in params.items()}


class PromptClassifier:
    """Template + soft prompt + backbone + verbalizer, with parameters passed explicitly.

    ``prompt`` and ``verbalizer`` are specs (``metaprompt.prompts.SoftPrompt(...)``,
    ``metaprompt.verbalizers.Soft()``: anything with ``bind(backbone, label_word_ids,
    train_classes)``) or components already bound; ``template`` a :class:`Template`, its text,
    or a bound :class:`TemplateEncoder`. Label words of classes come with the tasks
    (:meth:`task`); ``label_words`` and ``train_classes`` give them up front (a prompt
    initialised from the meta-training classes' label words needs them before any task).

    >>> clf = PromptClassifier(backbone, Template("{text} . [P] topic is [MASK] ."),
    ...                        prompts.SoftPrompt(length=8), verbalizers.Soft())      # doctest: +SKIP
    >>> task = clf.task(text_task)                                                    # doctest: +SKIP
    >>> logits = clf(clf.init_params(), task.query, task)                              # doctest: +SKIP
    """

    def __init__(self, backbone: Backbone, template: Template | TemplateEncoder | str, prompt, verbalizer,
                 tuner=None, learn: Iterable[str] = ("prompt", "verbalizer"),
                 train_backbone: bool | Callable[[str], bool] = False, seed: int = 0,
                 device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
                 label_words: Mapping[int, Sequence[str]] | None = None, train_classes: Sequence[int] = (),
                 length_buckets: int = 1):
        """``train_backbone``: False (frozen), True (every weight), or a predicate on the backbone's
        parameter names (PEFT methods: LoRA matrices, adapters, biases...). ``tuner``: a PEFT
        method of :mod:`metaprompt.tuners`, by name or settings (``LoraSettings(r=4)``)."""
        self.backbone = backbone
        self.encoder = backbone.encoder
        self.label_words: dict[int, list[str]] = {int(c): list(w) for c, w in (label_words or {}).items()}
        self.train_classes = tuple(int(c) for c in train_classes)
        self._prompt_spec = prompt if hasattr(prompt, "bind") else None
        self._verbalizer_spec = verbalizer if hasattr(verbalizer, "bind") else None
        self.prompt: PromptEncoder = self._bind(prompt)
        self.verbalizer: Verbalizer = self._bind(verbalizer)
        if isinstance(template, str):
            template = Template(template)
        if isinstance(template, Template):
            template = template.bind(backbone.tokenizer, _slot_count(self.prompt), backbone.max_positions)
        self.template = template
        self.length_buckets = length_buckets
        self.tuner = tuner
        if tuner is not None:
            train_backbone = _apply_tuner(tuner, backbone, self.verbalizer.needs_vocab, seed) or train_backbone
        self.learn = tuple(g for g in ("prompt", "verbalizer") if g in set(learn))
        if isinstance(train_backbone, bool):
            self.backbone_trainable: Callable[[str], bool] | None = (lambda name: True) if train_backbone else None
        else:
            self.backbone_trainable = train_backbone
        self.seed = seed
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.encoder.to(self.device)
        # Parameters and outputs use the backbone's dtype (float32; float64 in gradient checks);
        # bf16 is an autocast of the forward only.
        self.dtype = next(self.encoder.parameters()).dtype
        self._pretrained = self._fresh_init()
        # Groups that are not learned keep their initial values as constants.
        self.fixed: Params = {k: v for k, v in self._pretrained.items() if k.split(".")[0] not in self.learn}
        self._tokens: dict[str, list[int]] = {}
        self._label_batches: dict[tuple[int, ...], Batch] = {}
        self._tasks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _bind(self, part):
        if not hasattr(part, "bind"):
            return part
        return part.bind(self.backbone, label_word_ids(self.backbone.tokenizer, self.label_words), self.train_classes)

    # -- tasks of texts -----------------------------------------------------------------------------
    def task(self, text_task) -> Task:
        """The model inputs of a task of texts (:class:`episodes.TextTask`): tokenised once per text,
        on the classifier's device; the same object for the same task."""
        cached = self._tasks.get(text_task)
        if cached is not None:
            return cached
        self._learn_label_words(text_task.label_words)
        support, query = (self.batch(side.texts, side.labels) for side in (text_task.support, text_task.query))
        task = Task(tuple(int(c) for c in text_task.classes), support, query, text_task.index)
        self._tasks[text_task] = task
        return task

    def batch(self, texts: Sequence[str], labels: Sequence[int] | None = None) -> Batch:
        """Texts (and local labels) as a padded :class:`Batch` on the classifier's device."""
        new = list(dict.fromkeys(t for t in texts if t not in self._tokens))
        if new:
            self._tokens.update(zip(new, self.template.tokenize_texts(new)))
        empty = [t for t in texts if not self._tokens[t]]
        if empty:
            raise TemplateError(f"text {empty[0][:40]!r} tokenizes to nothing; remove it or give it words")
        return self.template.batch([self._tokens[t] for t in texts], labels, self.length_buckets).to(self.device)

    def _learn_label_words(self, label_words: Mapping[int, Sequence[str]]) -> None:
        """Take in the label words of a task's classes (a verbalizer spec is bound again when they
        are new: bound verbalizers hold per-class tables, never parameters)."""
        changed = {int(c): list(w) for c, w in label_words.items() if self.label_words.get(int(c)) != list(w)}
        if not changed:
            return
        if self._verbalizer_spec is None:
            raise ValueError(f"classes {sorted(changed)[:5]} are new to this classifier's verbalizer, which was "
                             "bound to other label words; build the classifier from a verbalizer spec")
        self.label_words.update(changed)
        self.verbalizer = self._bind(self._verbalizer_spec)
        self._label_batches.clear()

    # -- parameters -------------------------------------------------------------------------------
    def _fresh_init(self) -> Params:
        generator = torch.Generator().manual_seed(self.seed)
        params = {}
        params.update(prefixed("prompt", self.prompt.init_params(generator)))
        params.update(prefixed("verbalizer", self.verbalizer.init_params(generator)))
        return {k: v.detach().to(self.device, self.dtype) for k, v in params.items()}

    def init_params(self) -> Params:
        """The pretrained init: fresh leaf tensors (deterministic for the seed) + the backbone's weights."""
        params = {k: v.clone().requires_grad_(True) for k, v in self._pretrained.items()
                  if k.split(".")[0] in self.learn}
        if self.backbone_trainable is not None:
            for name, weight in self.encoder.named_parameters():
                if self.backbone_trainable(name):
                    params[f"backbone.{name}"] = weight.detach().clone().requires_grad_(True)
        return params

    def task_params(self, params: Params, task: Task) -> Params:
        """Fast weights at the start of the inner loop (a differentiable function of ``params``)."""
        groups = split_params(params)
        out = dict(params)
        if "verbalizer" in self.learn:
            for k in [k for k in out if k.startswith("verbalizer.")]:
                del out[k]
            out.update(prefixed("verbalizer", self.verbalizer.task_params(groups["verbalizer"], task)))
        return out

    def count(self, params: Params) -> dict[str, int]:
        counts = {g: 0 for g in GROUPS}
        for name, value in params.items():
            counts[name.split(".")[0]] = counts.get(name.split(".")[0], 0) + value.numel()
        counts["total"] = sum(v.numel() for v in params.values())
        return counts

    # -- forward ----------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def encode(self, params: Params, batch: Batch, want_vocab: bool = False):
        """The backbone's ``[MASK]`` state (and MLM logits) with the prompt of ``params``.

        A batch with length buckets (``Batch.chunks``) runs chunk by chunk, each chunk padded
        only to its own longest row; the outputs come back in row order."""
        groups = split_params({**self.fixed, **params})
        prompt = self.prompt(groups["prompt"], batch, self.frozen_mask_states)
        if batch.chunks is None:
            return self._encode(groups["backbone"], batch, prompt.embeds, prompt.prefix, want_vocab)
        outputs = []
        for rows, chunk in zip(batch.chunk_rows, batch.chunks):
            embeds = prompt.embeds
            if embeds is not None and embeds.dim() == 3:  # one prompt per example
                embeds = embeds.index_select(0, rows)
            outputs.append(self._encode(groups["backbone"], chunk, embeds, prompt.prefix, want_vocab))
        h_mask = torch.cat([h for h, _ in outputs]).index_select(0, batch.order)
        vocab = None if outputs[0][1] is None else torch.cat([v for _, v in outputs]).index_select(0, batch.order)
        return h_mask, vocab

    def _encode(self, backbone: Params, batch: Batch, prompt_embeds, prefix, want_vocab: bool):
        kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      mask_positions=batch.mask_positions, prompt_positions=batch.prompt_positions,
                      prompt_embeds=prompt_embeds, prefix=prefix, want_vocab=want_vocab, full=batch.full,
                      pool=not self.template.reads_mask)
        with self._autocast():
            if backbone:
                h_mask, vocab = functional_call(self.encoder, backbone, (), kwargs, strict=False)
            else:
                h_mask, vocab = self.encoder(**kwargs)
        return h_mask.to(self.dtype), (None if vocab is None else vocab.to(self.dtype))

    def frozen_mask_states(self, batch: Batch) -> torch.Tensor:
        """``[MASK]`` states of the frozen pretrained model with no soft prompt (prompt pools use them)."""
        with torch.no_grad():
            if batch.chunks is None:
                return self._encode({}, batch, None, None, False)[0]
            states = [self._encode({}, chunk, None, None, False)[0] for chunk in batch.chunks]
            return torch.cat(states).index_select(0, batch.order)

    def __call__(self, params: Params, batch: Batch, task: Task) -> torch.Tensor:
        h_mask, vocab = self.encode(params, batch, want_vocab=self.verbalizer.needs_vocab)
        support = None
        if self.verbalizer.needs_support:  # prototype verbalizers: the support states under these params
            support = h_mask if batch is task.support else self.encode(params, task.support)[0]
        extra = {}
        if getattr(self.verbalizer, "needs_label_states", False):  # the label words read under these params
            extra["label_states"] = self.encode(params, self.label_batch(task))[0]
        verbalizer_params = split_params(params)["verbalizer"]
        if "verbalizer" not in self.learn:
            verbalizer_params = self.verbalizer.task_params(split_params(self.fixed)["verbalizer"], task)
        elif not self.verbalizer.task_keys <= verbalizer_params.keys():  # meta-level params: derive the task's
            verbalizer_params = self.verbalizer.task_params(verbalizer_params, task)
        return self.verbalizer.logits(verbalizer_params, h_mask, vocab, task, support=support, **extra)

    def label_batch(self, task: Task) -> Batch:
        """Each class's label words (all of them, one after another) as one input of the template,
        in the task's class order: how a verbalizer reads a class's name through the same prompt."""
        key = tuple(task.classes)
        if key not in self._label_batches:
            words = self.verbalizer.label_word_ids
            ids = [[piece for word in words[c] for piece in word][: self.template.text_budget] for c in key]
            self._label_batches[key] = self.template.batch(ids).to(self.device)
        return self._label_batches[key]

    def loss(self, params: Params, batch: Batch, task: Task) -> torch.Tensor:
        return F.cross_entropy(self(params, batch, task), batch.labels)

    @torch.no_grad()
    def predict(self, params: Params, batch: Batch, task: Task, batch_size: int = 128) -> torch.Tensor:
        """Predicted local labels, in chunks of ``batch_size`` examples."""
        preds = []
        for start in range(0, len(batch), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(batch)))
            preds.append(self(params, batch.select(rows), task).argmax(-1))
        return torch.cat(preds)


def _slot_count(prompt: PromptEncoder) -> int:
    """Soft tokens that go into the template's ``[P]`` slots (none for deep prompts, which sit
    in front of every layer)."""
    return prompt.spec.shallow_length


def _apply_tuner(tuner, backbone: Backbone, needs_vocab: bool, seed: int) -> Callable[[str], bool] | None:
    """Inject a backbone-side PEFT method (a name of :data:`metaprompt.tuners.TUNERS`, or the
    settings object of one, e.g. ``LoraSettings(r=4)``) into ``backbone``, seeded by ``seed``;
    the predicate of the tensors to adapt and meta-learn (None: the method adapts no backbone tensor)."""
    from metaprompt.tuners import TUNERS, used_names

    if isinstance(tuner, str):
        method = TUNERS.get(tuner)
        settings = method.settings()
    else:
        methods = [m for _, m in TUNERS.items() if type(tuner) is m.settings]
        if len(methods) != 1:
            raise TypeError(f"tuner: give a method's name ({', '.join(TUNERS.names())}) or the settings object of "
                            f"one method, not a {type(tuner).__name__}")
        method, settings = methods[0], tuner
    if method.side != "backbone":
        raise ValueError(f"tuner '{method.name}' is a prompt-side method: choose the prompt spec instead")
    if getattr(backbone.encoder, "peft_method", None):
        raise RuntimeError(f"this backbone already has {backbone.encoder.peft_method} injected; load a fresh one")
    predicate = method.apply(backbone, settings, seed)
    backbone.encoder.peft_method = method.name
    if predicate is None:
        return None
    used = used_names(backbone, needs_vocab)
    return frozenset(n for n, _ in backbone.encoder.named_parameters() if n in used and predicate(n)).__contains__
