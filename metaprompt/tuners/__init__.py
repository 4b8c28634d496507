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

Each method is one module of this package, registered in :data:`TUNERS` (see
:mod:`metaprompt.tuners.base`); the package imports them all, so a new method is a new file.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metaprompt.errors import ConfigError
from metaprompt.registry import import_members
from metaprompt.tuners.base import TUNERS, Method, Predicate, used_names

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone

import_members(__name__, __path__, first=("base", "full", "lora", "ia3", "bitfit", "adapter", "prompt_tuning",
                                          "ptuning", "prefix", "ptuning_v2"))

__all__ = ["TUNERS", "Method", "Predicate", "apply_tuner", "baseline_overrides", "get_method", "method_label",
           "validate_settings"]


def get_method(name: str) -> Method:
    if name not in TUNERS:
        raise ConfigError(str(TUNERS.unknown(name)))
    return TUNERS.get(name)


def validate_settings(section: Any) -> None:
    """Build (and so validate) every method's settings from a ``peft`` section (any object with
    the attributes the settings read)."""
    for _, method in TUNERS.items():
        method.settings.from_peft(section)


def apply_tuner(backbone: "Backbone", method_name: str, section: Any, seed: int, needs_vocab: bool) -> Predicate | None:
    """Inject method ``method_name`` (``none``: nothing) into ``backbone``, in place, seeded by
    ``seed``, with its settings read from ``section`` (the config's ``peft`` section).

    Returns the predicate of the backbone tensors to adapt and meta-learn, narrowed to those
    that reach the classifier's output, or None when the method trains no backbone tensor
    (``none`` and the prompt-side methods; ``model.freeze_backbone`` then decides)."""
    if method_name == "none":
        return None
    method = get_method(method_name)
    encoder = backbone.encoder
    if getattr(encoder, "peft_method", None):
        raise RuntimeError(f"this backbone already has {encoder.peft_method} injected; load a fresh one")
    predicate = method.apply(backbone, method.settings.from_peft(section), seed)
    encoder.peft_method = method.name
    if predicate is None:
        return None
    used = used_names(backbone, needs_vocab)
    names = frozenset(n for n, _ in encoder.named_parameters() if n in used and predicate(n))
    if not names:
        raise ConfigError(f"peft.method={method.name} selected no backbone tensor of '{backbone.name}'")
    return names.__contains__


def method_label(cfg: Any) -> str:
    """The method's name in results: the PEFT method (``cfg.peft.method``), or ``metaprompting``
    for the soft prompt alone."""
    return "metaprompting" if cfg.peft.method == "none" else cfg.peft.method


def baseline_overrides(name: str) -> list[str]:
    """``key=value`` strings that select method ``name`` with its baseline defaults."""
    method = get_method(name)
    items = {**method.defaults, "peft.method": name}
    return [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in items.items()]
