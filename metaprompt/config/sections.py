"""The sections of a run configuration (``data``, ``model``, ``prompt``, ...), each a dataclass
that checks its values when it is built (the message names the key).

Choices that name components (``prompt.kind``, ``verbalizer.kind``, ``meta.algorithm``,
``meta.engine``, ``peft.method``, ``data.dataset``) come from the components' registries, which
are imported when a section is first built: ``import metaprompt.config`` stays light.
"""
from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field

from metaprompt.checks import check as _check
from metaprompt.checks import choice as _choice
from metaprompt.checks import positive as _positive
from metaprompt.checks import text as _text
from metaprompt.errors import ConfigError

if typing.TYPE_CHECKING:
    from metaprompt.prompts import PromptSpec
    from metaprompt.verbalizers import VerbalizerSpec

LEARNABLE_GROUPS = ("prompt", "verbalizer")
ADAPT_MODES = ("sgd", "adamw")


#: Seeds feed torch generators (unsigned 64-bit) and numpy seed sequences.
SEED_MAX = 2**64 - 1
#: model.device: auto, cpu, cuda, cuda:N or mps (whether the device exists is checked when the run starts).
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def check_seed(value: int, key: str) -> None:
    _check(0 <= value <= SEED_MAX, key, f"must be an integer from 0 to 2**64 - 1, got {value}")


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
        _check(self.template.count("[MASK]") <= 1, "prompt.template",
               f"must contain one [MASK] (or none: a mean-pooled readout), got {self.template!r}")
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
    label_word_share: float = 0.0  # proto / ridge: initial share of the label words' state in each class (learned)
    ridge_lambda: float = 0.1  # ridge: initial regularisation of the closed-form head (learned)

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
        check_seed(self.val_seed, "train.val_seed")
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
        check_seed(self.seed, "eval.seed")
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
class BaselineConfig:
    """``metaprompt baseline --method centroid | linear_probe | ridge | setfit`` (metaprompt.baselines)."""

    label_words: bool = True  # each class's label words as one more support example (what the verbalizer gets)
    C: float | None = None  # linear_probe: inverse regularisation; null: chosen on validation episodes
    ridge_lambda: float | None = None  # ridge: regularisation; null: chosen on validation episodes
    val_episodes: int = 100  # validation-class episodes (seed train.val_seed) that choose C / ridge_lambda

    def __post_init__(self) -> None:
        for key in ("C", "ridge_lambda"):
            if getattr(self, key) is not None:
                _positive(getattr(self, key), f"baseline.{key}")
        _check(self.val_episodes >= 1, "baseline.val_episodes", f"must be ≥ 1, got {self.val_episodes}")


@dataclass
class LogConfig:
    wandb: bool = False  # log to Weights & Biases (mode from $WANDB_MODE; offline unless set)
    wandb_project: str = "metaprompt"
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        _text(self.wandb_project, "log.wandb_project")
