"""Everything a run needs, built from a :class:`Config`: data, tokens, backbone, classifier.

All user input is checked here, before a run directory is created, so a bad config, data
file or model leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from episodes import Episode, EpisodeSampler, TextDataset, load_custom_dataset, load_dataset
from episodes.data import default_cache_dir
from metaprompt.config import Config
from metaprompt.errors import ConfigError
from metaprompt.model.backbone import Backbone, load_backbone
from metaprompt.model.classifier import PromptClassifier, Task
from metaprompt.model.template import Template, TemplateEncoder
from metaprompt.tuners import apply_tuner
from metaprompt.tuners.base import used_names

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when there is a GPU; a bare ``cuda`` (or ``auto``) in a distributed launch
    is this process's GPU (``LOCAL_RANK``, see :mod:`metaprompt.run.distributed`)."""
    from metaprompt.run.distributed import local_cuda_index

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'model.device': unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'model.device': {name!r}, but this machine has no usable CUDA device "
                          "(torch.cuda.is_available() is False); use model.device=cpu, or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"config key 'model.device': {name!r}, but this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s), numbered from 0")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"config key 'model.device': {name!r}, but this machine has no usable MPS device; "
                          "use model.device=cpu, or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_cuda_index())
    return device


def load_data(cfg: Config) -> TextDataset:
    if cfg.data.dataset == "custom":
        return load_custom_dataset(cfg.data.path, cfg.data.splits)
    return load_dataset(cfg.data.dataset, cfg.data.dir, cfg.verbalizer.label_words)


def tokenize_dataset(dataset: TextDataset, template: TemplateEncoder, cache: bool = True) -> list[list[int]]:
    """Token ids of every text of the data set, computed once and cached on disk.

    The cache key covers the data file, the tokenizer and the template's text budget, so a
    change to any of them re-tokenises.
    """
    tok = template.tokenizer
    key = json.dumps([dataset.sha256, type(tok).__name__, getattr(tok, "name_or_path", ""), len(tok),
                      template.text_budget, template.text_leading_space], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]

    def encode(batch):
        return {"ids": template.tokenize_texts(batch["text"])}

    cache_file = None
    if cache:
        folder = default_cache_dir() / "tokens"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            cache_file = str(folder / f"{dataset.name}-{digest}.arrow")
        except OSError:
            cache_file = None  # an unwritable cache only costs time
    # new_fingerprint: our key already identifies the result (datasets would hash the tokenizer).
    table = dataset.table.map(encode, batched=True, batch_size=2000, cache_file_name=cache_file,
                              new_fingerprint=digest,
                              remove_columns=[c for c in dataset.table.column_names if c != "label"],
                              desc=f"tokenizing {dataset.name}")
    tokens = [list(ids) for ids in table["ids"]]
    empty = [i for i, ids in enumerate(tokens) if not ids]
    if empty:
        _refuse_empty_texts(dataset, empty, getattr(tok, "name_or_path", type(tok).__name__))
    return tokens


def _refuse_empty_texts(dataset: TextDataset, empty: list[int], tokenizer: str) -> None:
    """Texts that give no tokens at all (e.g. only accents or symbols the tokenizer drops): an error
    naming the lines, found once per data file and tokenizer (``data check`` finds the texts of
    only invisible characters without a model)."""
    from episodes import DataError
    from episodes.jsonl import scan_data_file

    lines = scan_data_file(dataset.path, keep_texts=False).lines  # example id -> line (the error path only)
    where = [str(lines[i]) if i < len(lines) else f"example {i}" for i in empty]
    raise DataError(f"{dataset.path}:{where[0]}: field 'text': {ascii(dataset.texts[empty[0]][:40])} tokenizes to nothing with "
                    f"the tokenizer of {tokenizer} ({len(empty)} such text(s), on line(s) "
                    f"{', '.join(where[:10])}{' …' if len(where) > 10 else ''}); remove them or give them words")


@dataclass
class Setup:
    cfg: Config
    dataset: TextDataset
    tokens: list[list[int]]
    backbone: Backbone
    template: TemplateEncoder
    classifier: PromptClassifier
    device: torch.device

    def sampler(self, split: str, seed: int) -> EpisodeSampler:
        d = self.cfg.data
        return EpisodeSampler(self.dataset.labels, self.dataset.splits.classes(split), d.n_way, d.k_shot,
                              d.n_query, seed, label_names=self.dataset.splits.label_names,
                              source=f"{self.dataset.name} ({split} classes)")

    def task(self, episode: Episode, index: int = 0) -> Task:
        buckets = self.cfg.model.length_buckets
        support = self.template.batch([self.tokens[i] for i in episode.support], episode.support_labels(), buckets)
        query = self.template.batch([self.tokens[i] for i in episode.query], episode.query_labels(), buckets)
        if self.device.type == "cuda":  # copies from page-locked memory: the host need not wait for the GPU
            support, query = (b.pin_memory().to(self.device, non_blocking=True) for b in (support, query))
            return Task(tuple(int(c) for c in episode.classes), support, query, index)
        return Task(tuple(int(c) for c in episode.classes), support, query, index).to(self.device)

    def tasks(self, episodes: Sequence[Episode]):
        for index, episode in enumerate(episodes):
            yield self.task(episode, index)


def build_setup(cfg: Config) -> Setup:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.model.device)
    if device.type == "cuda":  # TF32 tensor cores for float32 matmuls (model.tf32=false: full float32)
        torch.set_float32_matmul_precision("high" if cfg.model.tf32 else "highest")
    dataset = load_data(cfg)
    backbone = load_backbone(cfg.model.name, mlm_head=cfg.model.mlm_head,
                             trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.gradient_checkpointing:
        backbone.encoder.enable_checkpointing()
    # [P] slots hold the shallow prompt (none for deep prompts: prefix sits in every layer).
    prompt_spec = cfg.prompt.spec()
    template = Template(cfg.prompt.template, cfg.model.max_length, cfg.data.max_text_tokens).bind(
        backbone.tokenizer, prompt_spec.shallow_length, backbone.max_positions)
    verbalizer_spec = cfg.verbalizer.spec()
    needs_vocab = verbalizer_spec.needs_vocab()
    autocast = torch.bfloat16 if cfg.model.dtype == "bfloat16" else None
    # peft.method: inject LoRA/IA3/adapters in place; the predicate names the tensors to adapt.
    trainable = apply_tuner(backbone, cfg.peft.method, cfg.peft, cfg.seed, needs_vocab=needs_vocab)
    if trainable is None and not cfg.model.freeze_backbone:  # every weight that reaches the output
        trainable = used_names(backbone, needs_vocab).__contains__
    # The specs (not the bound parts) go to the classifier with the data set's label words, so that
    # it can take tasks of classes with other label words later (a notebook after load_init).
    classifier = PromptClassifier(backbone, template, prompt_spec, verbalizer_spec, learn=cfg.meta.learn,
                                  train_backbone=trainable or False, seed=cfg.seed,
                                  device=device, autocast_dtype=autocast, label_words=dataset.label_words,
                                  train_classes=dataset.splits.train)
    tokens = tokenize_dataset(dataset, template)
    return Setup(cfg, dataset, tokens, backbone, template, classifier, device)


def fixed_episodes(setup: Setup, split: str, count: int, seed: int) -> tuple[dict, list[Episode]]:
    """The seeded episodes of a split (the same for every init and every method)."""
    from episodes import make_episode_file

    d = setup.cfg.data
    return make_episode_file(setup.dataset, split, d.n_way, d.k_shot, d.n_query, count, seed)

