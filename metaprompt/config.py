"""Typed run configuration: dataclasses, YAML files and ``--set key=value`` overrides.

Every value is checked where it is built, so a bad config fails before any model is
loaded, with a message that names the key (and the file), and suggests the nearest
key when one does not exist.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from metaprompt.errors import ConfigError

if typing.TYPE_CHECKING:
    from metaprompt.prompts import PromptSpec
    from metaprompt.verbalizers import VerbalizerSpec

LEARNABLE_GROUPS = ("prompt", "verbalizer")
ADAPT_MODES = ("sgd", "adamw")




def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {message}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    bound = "≥ 0" if allow_zero else "> 0"
    _check(ok and math.isfinite(value), key, f"must be a finite number {bound}, got {value!r}")


#: Seeds feed torch generators (unsigned 64-bit) and numpy seed sequences.
SEED_MAX = 2**64 - 1
#: model.device: auto, cpu, cuda, cuda:N or mps (whether the device exists is checked when the run starts).
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def _seed(value: int, key: str) -> None:
    _check(0 <= value <= SEED_MAX, key, f"must be an integer from 0 to 2**64 - 1, got {value}")


def _text(value: str, key: str) -> None:
    _check(bool(value.strip()), key, f"must not be empty, got {value!r}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"config key '{key}': unknown value {value!r}; choose one of {', '.join(choices)}.{hint}")


@dataclass
class DataConfig:
    dataset: str = "huffpost"
    path: str | None = None  # data file of a custom data set
    splits: str | None = None  # class-split file of a custom data set
    dir: str | None = None  # data directory (else $METAPROMPT_DATA, ./data, the download cache)
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15
    max_text_tokens: int = 64  # word pieces kept per text (before the template is added)
    test_episodes_file: str | None = None  # fixed episode file scored by `eval` (else generated)

    def __post_init__(self) -> None:
        from episodes.data import DATASETS

        _choice(self.dataset, "data.dataset", (*DATASETS.names(), "custom"))
        if self.dataset == "custom":
            _check(bool(self.path) and bool(self.splits), "data.path",
                   "a custom data set needs both data.path (JSON lines) and data.splits (class-split JSON)")
        _check(self.n_way >= 2, "data.n_way", f"must be ≥ 2, got {self.n_way}")
        _check(self.k_shot >= 1, "data.k_shot", f"must be ≥ 1, got {self.k_shot}")
        _check(self.n_query >= 1, "data.n_query", f"must be ≥ 1, got {self.n_query}")
        _check(self.max_text_tokens >= 1, "data.max_text_tokens", f"must be ≥ 1, got {self.max_text_tokens}")
        for key in ("path", "splits", "dir", "test_episodes_file"):
            value = getattr(self, key)
            if value is not None:
                _text(value, f"data.{key}")


@dataclass
class ModelConfig:
    name: str = "minilm-offline"  # hub id, local directory, or the alias of the offline package
    freeze_backbone: bool = True
    mlm_head: str = "auto"  # auto | yes | no: whether to load/use a masked-LM head
    max_length: int = 128  # whole input (template + prompt + text) in tokens
    trust_remote_code: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16: autocast of the forward passes (GPU); weights stay float32
    tf32: bool = True  # CUDA: float32 matmuls on TF32 tensor cores (set_float32_matmul_precision "high")
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward (docs/scale.md)
    length_buckets: int = 1  # run each batch as up to N chunks of similar length (1: one padded batch)

    def __post_init__(self) -> None:
        _text(self.name, "model.name")
        if not _DEVICE.fullmatch(self.device):
            near = difflib.get_close_matches(self.device, ("auto", "cpu", "cuda", "mps"), n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"config key 'model.device': unknown device {self.device!r}; use auto, cpu, cuda, "
                              f"cuda:N (N: the GPU's index) or mps.{hint}")
        _choice(self.mlm_head, "model.mlm_head", ("auto", "yes", "no"))
        _choice(self.dtype, "model.dtype", ("float32", "bfloat16"))
        _check(self.length_buckets >= 1, "model.length_buckets", f"must be ≥ 1, got {self.length_buckets}")
        _check(self.max_length >= 8, "model.max_length", f"must be ≥ 8, got {self.max_length}")


@dataclass
class PromptConfig:
    kind: str = "embedding"
    length: int = 4  # soft tokens
    template: str = "{text} . [P] topic is [MASK] ."
    template_id: int | None = None  # when set: template N of the data set's file (configs/templates/), replacing `template`
    init: str = "text"  # random | vocab | label_words | text
    init_text: str = "the news article"  # used by init=text (cut to `length` tokens, or filled up with random words)
    # ptuning / prefix reparameterisation and pool sizes (prompt zoo)
    hidden_size: int = 128
    pool_size: int = 8
    prefix_projection: bool = False  # prefix: reparameterise the per-layer prefixes by an MLP

    def __post_init__(self) -> None:
        # The component packages are imported on first use: `import metaprompt.config` stays light.
        from metaprompt.prompts import INITS, PROMPTS

        _choice(self.kind, "prompt.kind", PROMPTS.names())
        _choice(self.init, "prompt.init", INITS)
        _check(self.length >= 0, "prompt.length", f"must be ≥ 0, got {self.length}")
        kind = PROMPTS.get(self.kind)
        _check(self.template_id is None or self.template_id >= 0, "prompt.template_id",
               f"must be ≥ 0, got {self.template_id}")
        _check(self.template.count("[MASK]") == 1, "prompt.template",
               f"must contain exactly one [MASK], got {self.template!r}")
        _check(self.template.count("{text}") == 1, "prompt.template",
               f"must contain exactly one {{text}}, got {self.template!r}")
        # Deep prompts (prefix) sit in front of every layer, not in [P] slots of the input.
        _check(self.length == 0 or kind.deep or "[P]" in self.template, "prompt.template",
               f"prompt.length is {self.length} but the template has no [P] slot: {self.template!r}")
        _check(self.hidden_size >= 1, "prompt.hidden_size", "must be ≥ 1")
        _check(self.pool_size >= 1, "prompt.pool_size", "must be ≥ 1")
        if self.init == "text":
            _text(self.init_text, "prompt.init_text")
        self.spec()  # the kind's own checks

    def spec(self) -> "PromptSpec":
        """The prompt kind's spec, built from this section (``prompt.kind`` picks it in ``PROMPTS``)."""
        from metaprompt.prompts import PROMPTS

        return PROMPTS.get(self.kind).from_settings(self)


@dataclass
class VerbalizerConfig:
    kind: str = "soft"
    label_words: str = "label_name"  # section of verbalizers.json (built-in data sets)
    scale: float = 10.0  # initial temperature of the scores (soft / proto / repverb / hybrid)
    learn_transform: bool = False  # soft / proto: a learned linear map of the [MASK] state (identity init)
    hybrid_weight: float = 0.5  # hybrid: weight of the representative verbalizer
    distance: str = "cosine"  # proto: cosine | euclidean

    def __post_init__(self) -> None:
        from metaprompt.verbalizers import DISTANCES, VERBALIZERS

        _choice(self.kind, "verbalizer.kind", VERBALIZERS.names())
        _choice(self.distance, "verbalizer.distance", DISTANCES)
        _positive(self.scale, "verbalizer.scale")
        _check(0.0 <= self.hybrid_weight <= 1.0, "verbalizer.hybrid_weight",
               f"must be a number in [0, 1], got {self.hybrid_weight!r}")
        _text(self.label_words, "verbalizer.label_words")
        self.spec()  # the kind's own checks

    def spec(self) -> "VerbalizerSpec":
        """The verbalizer kind's spec, built from this section (``verbalizer.kind`` picks it in ``VERBALIZERS``)."""
        from metaprompt.verbalizers import VERBALIZERS

        return VERBALIZERS.get(self.kind).from_settings(self)


@dataclass
class MetaConfig:
    algorithm: str = "fomaml"
    engine: str = "torch_func"
    inner_steps: int = 5
    inner_lr: float = 0.1
    inner_lr_backbone: float | None = None  # inner lr of backbone (PEFT) tensors; default meta.inner_lr
    meta_batch: int = 1
    learn: list[str] = field(default_factory=lambda: ["prompt", "verbalizer"])  # + backbone if not frozen
    # MAML++ (Antoniou et al. 2019); each trick can be switched off.
    multi_step_loss: bool = True
    multi_step_loss_episodes: int = 100  # outer steps over which per-step weights anneal to the last step
    learn_inner_lr: bool = True  # LSLR: per-step, per-group inner learning rates
    first_order_fraction: float = 0.3  # derivative-order annealing: first order for this part of training
    # Reptile: inner steps run on the whole episode (support + query), the outer step moves the
    # init toward the adapted weights with the outer optimiser (pseudo-gradient θ − φ).

    def __post_init__(self) -> None:
        from metaprompt.meta.algorithms import ALGORITHMS
        from metaprompt.meta.engines import ENGINES

        _choice(self.algorithm, "meta.algorithm", ALGORITHMS.names())
        _choice(self.engine, "meta.engine", ENGINES.names())
        _check(self.inner_steps >= 1, "meta.inner_steps", f"must be ≥ 1, got {self.inner_steps}")
        _positive(self.inner_lr, "meta.inner_lr")
        if self.inner_lr_backbone is not None:
            _positive(self.inner_lr_backbone, "meta.inner_lr_backbone")
        _check(self.meta_batch >= 1, "meta.meta_batch", f"must be ≥ 1, got {self.meta_batch}")
        for group in self.learn:
            _choice(group, "meta.learn", LEARNABLE_GROUPS)
        _check(len(set(self.learn)) == len(self.learn), "meta.learn", f"lists a group twice: {self.learn}")
        _check(self.multi_step_loss_episodes >= 1, "meta.multi_step_loss_episodes",
               f"must be ≥ 1, got {self.multi_step_loss_episodes}")
        _check(0.0 <= self.first_order_fraction <= 1.0, "meta.first_order_fraction",
               f"must be a number in [0, 1], got {self.first_order_fraction!r}")


@dataclass
class TrainConfig:
    episodes: int = 300  # meta-training tasks in all (outer steps = episodes / meta_batch)
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 2e-3  # outer learning rate of prompt and verbalizer
    backbone_lr: float = 1e-5
    inner_lr_lr: float = 1e-3  # outer learning rate of learned inner learning rates (LSLR)
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    grad_clip: float = 1.0  # 0 disables
    val_every: int = 50  # outer steps between validations
    val_episodes: int = 25
    val_seed: int = 999
    patience: int = 5  # validations without improvement before stopping; 0 disables
    checkpoint_every: int = 25  # outer steps between checkpoints
    on_nonfinite: str = "stop"  # stop | skip: a NaN/inf loss

    def __post_init__(self) -> None:
        _check(self.episodes >= 1, "train.episodes", f"must be ≥ 1, got {self.episodes}")
        _choice(self.optimizer, "train.optimizer", ("adam", "adamw", "sgd"))
        _positive(self.lr, "train.lr")
        _positive(self.backbone_lr, "train.backbone_lr")
        _positive(self.inner_lr_lr, "train.inner_lr_lr")
        _positive(self.weight_decay, "train.weight_decay", allow_zero=True)
        _choice(self.schedule, "train.schedule", ("constant", "cosine", "linear"))
        _check(self.warmup_steps >= 0, "train.warmup_steps", f"must be ≥ 0, got {self.warmup_steps}")
        _positive(self.grad_clip, "train.grad_clip", allow_zero=True)
        _check(self.val_every >= 1, "train.val_every", f"must be ≥ 1, got {self.val_every}")
        _check(self.val_episodes >= 1, "train.val_episodes", f"must be ≥ 1, got {self.val_episodes}")
        _seed(self.val_seed, "train.val_seed")
        _check(self.patience >= 0, "train.patience", f"must be ≥ 0, got {self.patience}")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", f"must be ≥ 1, got {self.checkpoint_every}")
        _choice(self.on_nonfinite, "train.on_nonfinite", ("stop", "skip"))


@dataclass
class EvalConfig:
    episodes: int = 300
    seed: int = 1234  # seed of the fixed test episodes
    adapt: str = "sgd"  # sgd: the inner loop of training | adamw: the paper's epochs of AdamW
    steps: int | None = None  # sgd steps (default meta.inner_steps)
    lr: float | None = None  # sgd lr (default meta.inner_lr; the learned LSLR rates when present)
    adamw_epochs: int = 15
    adamw_lr: float = 5e-5  # prompt and verbalizer
    adamw_backbone_lr: float = 1e-5
    adamw_weight_decay: float = 0.1
    adamw_batch_size: int = 16
    batch_size: int = 128  # query examples per forward pass
    reference: bool = True  # also score a training-free nearest-centroid reference
    # Candidates for the backbone's sgd step at meta-test, chosen per init on validation episodes
    # (a step that suits one init can make another diverge); empty: meta.inner_lr_backbone.
    select_backbone_lr: list[float] = field(default_factory=list)
    select_episodes: int = 50  # validation episodes per candidate

    def __post_init__(self) -> None:
        _check(self.episodes >= 1, "eval.episodes", f"must be ≥ 1, got {self.episodes}")
        _seed(self.seed, "eval.seed")
        for lr in self.select_backbone_lr:
            _positive(lr, "eval.select_backbone_lr")
        _check(self.select_episodes >= 1, "eval.select_episodes", f"must be ≥ 1, got {self.select_episodes}")
        _choice(self.adapt, "eval.adapt", ADAPT_MODES)
        if self.steps is not None:
            _check(self.steps >= 0, "eval.steps", f"must be ≥ 0, got {self.steps}")
        if self.lr is not None:
            _positive(self.lr, "eval.lr")
        _check(self.adamw_epochs >= 1, "eval.adamw_epochs", f"must be ≥ 1, got {self.adamw_epochs}")
        _positive(self.adamw_lr, "eval.adamw_lr")
        _positive(self.adamw_backbone_lr, "eval.adamw_backbone_lr")
        _positive(self.adamw_weight_decay, "eval.adamw_weight_decay", allow_zero=True)
        _check(self.adamw_batch_size >= 1, "eval.adamw_batch_size", f"must be ≥ 1, got {self.adamw_batch_size}")
        _check(self.batch_size >= 1, "eval.batch_size", f"must be ≥ 1, got {self.batch_size}")


@dataclass
class PeftConfig:
    """Which parameter-efficient method is adapted and meta-learned (``metaprompt.tuners``).

    ``none``: the soft prompt and verbalizer only (MetaPrompting). Each method's settings are
    validated by its own dataclass in ``metaprompt/tuners/<method>.py``."""

    method: str = "none"
    lora_r: int = 8
    lora_alpha: float = 16.0
    # Module-name suffixes of the layers to adapt; empty: peft's default for the model type.
    lora_targets: list[str] = field(default_factory=list)  # BERT: query, value
    ia3_targets: list[str] = field(default_factory=list)  # empty: peft's default (BERT: key, value, output.dense)
    ia3_feedforward: list[str] = field(default_factory=list)  # scaled at their input; empty: peft's default
    adapter_size: int = 32  # Houlsby bottleneck width
    adapter_activation: str = "gelu"
    adapter_init_std: float = 1e-2  # down-projection init N(0, std²) truncated at 2 std; up-projection 0
    adapter_targets: list[str] = field(default_factory=list)  # module-name suffixes; empty: known per family

    def __post_init__(self) -> None:
        from metaprompt.tuners import TUNERS, validate_settings

        _choice(self.method, "peft.method", ("none", *TUNERS.names()))
        validate_settings(self)  # each method validates its own settings


@dataclass
class LogConfig:
    wandb: bool = False  # log to Weights & Biases (mode from $WANDB_MODE; offline unless set)
    wandb_project: str = "metaprompt"
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        _text(self.wandb_project, "log.wandb_project")


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

    def __post_init__(self) -> None:
        _check(0 <= self.threads <= 256, "threads", f"must be from 0 (torch's default) to 256, got {self.threads}")
        _seed(self.seed, "seed")
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
        return _build(cls, data or {}, prefix="", source=source)

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
        for item in overrides:
            apply_override(data, item)
        return cls.from_dict(data, source=source)


#: Keys that change how a run goes, not what it computes: CPU threads, progress bars and the
#: Weights & Biases mirror of the metrics. They are the only keys ``train --resume`` accepts
#: with a new value (recorded in run.json; config.yaml stays what trained the run), and the
#: only ones an interrupted evaluation ignores when it decides whether saved scores still count.
#: Everything else (model.device too: model.tf32 and the kernels differ per device) decides a result.
RUNTIME_KEYS = ("threads", "log.progress", "log.wandb", "log.wandb_project")


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def changed_keys(before: "Config | dict[str, Any]", after: "Config | dict[str, Any]") -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every dotted key whose value differs between two configs."""
    old = flat(before.to_dict() if isinstance(before, Config) else before)
    new = flat(after.to_dict() if isinstance(after, Config) else after)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def without_runtime_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without :data:`RUNTIME_KEYS` (sections they leave empty are dropped)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            kept = {k: v for k, v in value.items() if f"{key}.{k}" not in RUNTIME_KEYS}
            if kept:
                out[key] = kept
        elif key not in RUNTIME_KEYS:
            out[key] = value
    return out


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


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (used for suggestions and documentation)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


#: Names from other tools, mapped to ours (a suggestion spelling-distance does not find).
_SYNONYMS = {"learning_rate": "lr", "num_episodes": "episodes", "epochs": "episodes", "steps": "inner_steps",
             "shots": "k_shot", "ways": "n_way", "queries": "n_query", "model_name": "name"}


def _unknown_key(key: str, source: str) -> ConfigError:
    section, _, leaf = key.rpartition(".")
    keys = all_keys()
    alias = [k for k in keys if k.rpartition(".")[2] == _SYNONYMS.get(leaf) and k.startswith(section)]
    near = alias[:1] or difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"{source}: unknown config key '{key}'.{hint}")


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` string to a nested dict (the value is typed later)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    key = key.strip()
    if key not in all_keys():
        raise _unknown_key(key, "--set")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = _RawString(value)


class _RawString(str):
    """A value typed on the command line: parsed by the field's type, not by YAML rules."""


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            return None
        return _coerce(value, args[0], key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, _RawString):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_tp, key, source) for v in value]
    where = "--set" if isinstance(value, _RawString) else source  # where the user typed the value
    bad = ConfigError(f"{where}: config key '{key}': expected {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))  # exact: float() would round a seed above 2**53
            except ValueError:
                pass
            try:
                number = float(value)
            except ValueError:
                raise bad from None
            if number.is_integer() and abs(number) < 2**53:  # "1e3", "3.0"; beyond 2**53 a float is not exact
                return int(number)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise bad


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: section '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise _unknown_key(prefix + str(key), source)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name] or {}, prefix + f.name + ".", source)
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, prefix + f.name, source)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if source not in ("config", "defaults") and not str(err).startswith(source):
            raise ConfigError(f"{source}: {err}") from None
        raise
