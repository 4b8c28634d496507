"""Typed run configuration: dataclasses, YAML files and ``--set key=value`` overrides.

Every value is checked where it is built, so a bad config fails before any model is
loaded, with a message that names the key (and the file), and suggests the nearest
key when one does not exist.

This is the config layer: components take plain arguments, and the config converts its
sections into them (``cfg.prompt.spec()``, ``cfg.verbalizer.spec()``, the ``peft`` section
for ``metaprompt.tuners``); no component imports this package. The sections are in
:mod:`~metaprompt.config.sections`, the typing of YAML and ``--set`` values in
:mod:`~metaprompt.config.parsing`, dotted-key helpers in :mod:`~metaprompt.config.keys`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metaprompt.checks import check as _check
from metaprompt.config import parsing
from metaprompt.config.keys import RUNTIME_KEYS, changed_keys, flat, without_runtime_keys
from metaprompt.config.parsing import build
from metaprompt.config.sections import (ADAPT_MODES, LEARNABLE_GROUPS, SEED_MAX, BaselineConfig, DataConfig,
                                        EvalConfig, LogConfig, MetaConfig, ModelConfig, PeftConfig, PromptConfig, TrainConfig,
                                        VerbalizerConfig, check_seed)
from metaprompt.errors import ConfigError


@dataclass
class Config:
    label: str = ""  # free name of the run's study or group (copied into results.json; `metaprompt report` groups by it)
    seed: int = 1999
    threads: int = 0  # torch CPU threads; 0 = torch's default
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    verbalizer: VerbalizerConfig = field(default_factory=VerbalizerConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    log: LogConfig = field(default_factory=LogConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        _check(0 <= self.threads <= 256, "threads", f"must be from 0 (torch's default) to 256, got {self.threads}")
        check_seed(self.seed, "seed")
        _check(len(self.label) <= 120 and not any(ch in self.label for ch in "|\n\r\t`"), "label",
               f"must be at most 120 characters without '|', backticks, tabs or line breaks, got {self.label!r}")
        if self.prompt.template_id is not None:
            self.prompt.template = _builtin_template(self.data.dataset, self.prompt.template_id)
        # Deep prompts enter every layer as a key/value cache that a recomputed layer would extend twice.
        from metaprompt.prompts import PROMPTS
        from metaprompt.verbalizers import VERBALIZERS

        shallow = ", ".join(name for name, kind in PROMPTS.items() if not kind.deep)
        _check(not (self.model.gradient_checkpointing and PROMPTS.get(self.prompt.kind).deep),
               "model.gradient_checkpointing",
               f"does not work with prompt.kind={self.prompt.kind} (the per-layer prefixes live in a cache that "
               f"recomputing a layer would extend a second time); use prompt.kind={shallow}, or switch it off")
        _check(self.data.dataset != "custom" or self.verbalizer.label_words == "label_name", "verbalizer.label_words",
               f"picks a section of a built-in data set's verbalizers.json, got {self.verbalizer.label_words!r}; a "
               "custom data set's label words come from its split file ('label_words', else the class names)")
        if VERBALIZERS.get(self.verbalizer.kind).needs_vocab():
            _check(self.model.mlm_head != "no", "verbalizer.kind",
                   f"'{self.verbalizer.kind}' scores label words with a masked-LM head, but model.mlm_head is 'no'")
            _check("[MASK]" in self.prompt.template, "verbalizer.kind",
                   f"'{self.verbalizer.kind}' scores the [MASK] position, but prompt.template has no [MASK] "
                   f"(a mean-pooled readout): {self.prompt.template!r}")
        _check(bool(self.meta.learn) or not (self.model.freeze_backbone and self.peft.method == "none"), "meta.learn",
               "is empty and the backbone is frozen (model.freeze_backbone=true, peft.method=none): nothing would be "
               "meta-learned; list prompt and/or verbalizer")
        if self.eval.select_backbone_lr:
            learned = self.meta.algorithm == "maml++" and self.meta.learn_inner_lr
            _check(self.eval.adapt == "sgd" and self.eval.lr is None and not learned,
                   "eval.select_backbone_lr", "chooses the sgd step of the backbone: it needs eval.adapt=sgd, "
                   "no eval.lr (which sets every step) and no learned steps (maml++ with meta.learn_inner_lr=true)")
            _check(not (self.model.freeze_backbone and self.peft.method == "none"), "eval.select_backbone_lr",
                   "has nothing to choose: the backbone is frozen (model.freeze_backbone=true, peft.method=none)")
        self._check_tuner()

    def _check_tuner(self) -> None:
        """The PEFT method against the prompt and model settings."""
        from metaprompt.tuners import get_method

        if self.peft.method == "none":
            return
        method = get_method(self.peft.method)
        _check(method.side != "backbone" or method.name == "full" or self.model.freeze_backbone,
               "model.freeze_backbone", f"false trains every backbone weight, which peft.method={method.name} "
               "replaces by its own; keep it true (or use peft.method=full)")
        for key, value in method.prompt.items():
            got = getattr(self.prompt, key)
            _check(got == value, f"prompt.{key}", f"peft.method={method.name} needs prompt.{key}={value}, got "
                   f"{got!r} (`metaprompt baseline --method {method.name}` sets it)")
        _check(method.side != "prompt" or self.prompt.length >= 1, "prompt.length",
               f"peft.method={method.name} is a soft prompt and needs prompt.length ≥ 1")

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str = "config") -> "Config":
        return build(cls, data or {}, prefix="", source=source, keys=all_keys(cls))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> "Config":
        """Read a YAML file (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
        data: dict[str, Any] = {}
        source = "defaults"
        if path is not None:
            path = Path(path)
            source = str(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML: {err}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
        keys = all_keys(cls)
        for item in overrides:
            parsing.apply_override(data, item, keys)
        return cls.from_dict(data, source=source)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (used for suggestions and documentation)."""
    return parsing.all_keys(cls, prefix)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` string to a nested dict (the value is typed later)."""
    parsing.apply_override(data, item, all_keys())


def _builtin_template(dataset: str, index: int) -> str:
    """Template ``index`` of a built-in data set (metaprompt/resources/templates_<dataset>.yaml)."""
    from metaprompt.model.template import TemplateError, builtin_templates

    _check(dataset != "custom", "prompt.template_id",
           "picks a built-in data set's template; with data.dataset=custom write prompt.template instead")
    try:
        templates = builtin_templates(dataset)
    except TemplateError as err:
        raise ConfigError(f"config key 'prompt.template_id': {err}") from None
    _check(index < len(templates), "prompt.template_id",
           f"{dataset} has templates 0..{len(templates) - 1}, got {index}")
    return templates[index]


__all__ = ["ADAPT_MODES", "LEARNABLE_GROUPS", "RUNTIME_KEYS", "SEED_MAX", "BaselineConfig", "Config", "ConfigError",
           "DataConfig",
           "EvalConfig", "LogConfig", "MetaConfig", "ModelConfig", "PeftConfig", "PromptConfig", "TrainConfig",
           "VerbalizerConfig", "all_keys", "apply_override", "changed_keys", "flat", "without_runtime_keys"]
