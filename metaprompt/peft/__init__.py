"""Parameter-efficient methods as functional parameter sets: baselines, and meta-learned too.

Every method reduces to (1) an in-place change of the backbone module, or of the prompt
settings, and (2) a predicate on backbone parameter names: the tensors the inner loop adapts
and the outer loop meta-learns. The classifier passes exactly those through
``torch.func.functional_call``, so every engine and algorithm (``maml``, ``fomaml``,
``maml++``, ``reptile``) works with every method: meta-LoRA, meta-adapters, meta-BitFit...

=============  =======  ====================================================================
method         side     what is adapted
=============  =======  ====================================================================
full           backbone all backbone weights (that reach the [MASK] state)
lora           backbone low-rank updates of query/value (peft, injected in place)
ia3            backbone rescaling vectors of key/value/feed-forward (peft, in place)
bitfit         backbone bias terms
adapter        backbone Houlsby bottleneck adapters after attention and feed-forward
prompt_tuning  prompt   soft input tokens (``prompt.kind=embedding``)
ptuning        prompt   soft tokens from a prompt-encoder network (``prompt.kind=ptuning``)
prefix         prompt   deep key/value prefixes with MLP reparameterisation (``prompt.kind=prefix``)
ptuning_v2     prompt   deep key/value prefixes without it (``prompt.kind=prefix``)
=============  =======  ====================================================================

The verbalizer (``verbalizer.*``) is the same for all methods, and is adapted with them.
Select a method with ``peft.method`` (``metaprompt train/eval/export`` honour it), or run
``metaprompt baseline --method NAME``, which also applies the method's defaults
(:attr:`Method.defaults`, mirrored in ``configs/baselines/<method>.yaml``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from metaprompt.config import ConfigError
from metaprompt.peft import adapter, bitfit, full, ia3, lora, prefix, prompt_tuning, ptuning, ptuning_v2
from metaprompt.peft.base import Method, Predicate, used_names

if TYPE_CHECKING:
    from metaprompt.config import Config, PeftConfig
    from metaprompt.model.backbone import Backbone

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (
    full, lora, ia3, bitfit, adapter, prompt_tuning, ptuning, prefix, ptuning_v2)}

__all__ = ["METHODS", "Method", "apply_peft", "baseline_overrides", "check_config", "get_method",
           "method_label", "validate_settings"]


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown PEFT method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def validate_settings(cfg: "PeftConfig") -> None:
    """Build (and so validate) every method's settings from the ``peft`` section."""
    for method in METHODS.values():
        method.settings.from_peft(cfg)


def check_config(cfg: "Config") -> None:
    """The chosen method against the rest of the config (called by ``Config`` itself)."""
    if cfg.peft.method == "none":
        return
    method = get_method(cfg.peft.method)
    if method.side == "backbone" and method.name != "full" and not cfg.model.freeze_backbone:
        raise ConfigError(f"config key 'model.freeze_backbone': false trains every backbone weight, which "
                          f"peft.method={method.name} replaces by its own; keep it true (or use peft.method=full)")
    for key, value in method.prompt.items():
        got = getattr(cfg.prompt, key)
        if got != value:
            raise ConfigError(f"config key 'prompt.{key}': peft.method={method.name} needs prompt.{key}={value}, "
                              f"got {got!r} (`metaprompt baseline --method {method.name}` sets it)")
    if method.side == "prompt" and cfg.prompt.length < 1:
        raise ConfigError(f"config key 'prompt.length': peft.method={method.name} is a soft prompt and needs "
                          f"prompt.length ≥ 1")


def apply_peft(cfg: "Config", backbone: "Backbone", needs_vocab: bool) -> Predicate | None:
    """Inject the configured method into ``backbone`` (in place, seeded by ``cfg.seed``).

    Returns the predicate of the backbone tensors to adapt and meta-learn, narrowed to those
    that reach the classifier's output, or None when the method trains no backbone tensor
    (``none`` and the prompt-side methods; ``model.freeze_backbone`` then decides)."""
    if cfg.peft.method == "none":
        return None
    method = get_method(cfg.peft.method)
    encoder = backbone.encoder
    if getattr(encoder, "peft_method", None):
        raise RuntimeError(f"this backbone already has {encoder.peft_method} injected; load a fresh one")
    predicate = method.apply(backbone, method.settings.from_peft(cfg.peft), cfg.seed)
    encoder.peft_method = method.name
    if predicate is None:
        return None
    used = used_names(backbone, needs_vocab)
    names = frozenset(n for n, _ in encoder.named_parameters() if n in used and predicate(n))
    if not names:
        raise ConfigError(f"peft.method={method.name} selected no backbone tensor of '{backbone.name}'")
    return names.__contains__


def method_label(cfg: "Config") -> str:
    """The method's name in results: the PEFT method, or ``metaprompting`` for the soft prompt alone."""
    return "metaprompting" if cfg.peft.method == "none" else cfg.peft.method


def baseline_overrides(name: str) -> list[str]:
    """``key=value`` strings that select method ``name`` with its baseline defaults."""
    method = get_method(name)
    items = {**method.defaults, "peft.method": name}
    return [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in items.items()]
