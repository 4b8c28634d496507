"""What every PEFT method shares: its registry record, seeded injection, the used-weights filter.

A method is one module of this package that ends with ``METHOD = register(Method(...))``; the
package imports every module, so adding a method is adding a file. Its settings dataclass is
built from the config's ``peft`` section by ``from_peft`` (any object with the attributes).

A *backbone-side* method changes the backbone module in place (or not at all) and returns a
predicate on the backbone's parameter names: the tensors it adapts and meta-learns. The
classifier passes exactly those tensors through ``torch.func.functional_call``; every other
weight stays in the module and is never written. A *prompt-side* method is a setting of the
prompt encoders (``prompt.kind`` and friends) and touches no backbone weight.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from metaprompt.registry import Registry

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone

Predicate = Callable[[str], bool]


@dataclass(frozen=True)
class Method:
    """One PEFT method.

    ``settings``: its config dataclass, built from the ``peft`` section by ``from_peft`` and
    validated in ``__post_init__``. ``apply(backbone, settings, seed)``: injects what the method
    needs (deterministically for ``seed``) and returns the predicate of its trainable backbone
    tensors, or None for a prompt-side method. ``prompt``: the prompt settings a prompt-side
    method requires (``{"kind": "prefix", ...}``). ``defaults``: the dotted config values of
    its baseline (``configs/baselines/<name>.yaml`` holds the same values, with the reasons).
    ``title``, ``export``, ``peft_config``, ``no_peft_reason``: how ``metaprompt export`` writes
    and describes it (see :mod:`metaprompt.run.export`).
    """

    name: str
    side: str  # "backbone" | "prompt"
    summary: str
    settings: type
    apply: Callable[["Backbone", Any, int], Predicate | None]
    defaults: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    # -- what export and the model card need --------------------------------------------------
    title: str | None = None  # the card's name of a backbone-side method ("LoRA"); None: prompt-side
    export: str = "prompt"  # peft: a peft adapter (peft_config) | weights: a whole model | unavailable | prompt
    peft_config: Callable[..., Any] | None = None  # (settings, task_type) -> peft's config, for export="peft"
    no_peft_reason: str = ""  # export="unavailable": why there is no peft equivalent


@dataclass
class NoSettings:
    """A method without hyper-parameters of its own."""

    @classmethod
    def from_peft(cls, cfg) -> "NoSettings":
        return cls()


@contextlib.contextmanager
def seeded(seed: int):
    """Run injection code with the global RNG seeded (peft initialises with it), then restore it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def freeze(backbone: "Backbone") -> None:
    """Module tensors are constants: trainable copies are passed to ``functional_call`` instead."""
    for p in backbone.encoder.parameters():
        p.requires_grad_(False)


def used_names(backbone: "Backbone", needs_vocab: bool) -> set[str]:
    """Backbone parameter names that can reach the classifier's output.

    The pooler never does (the classifier reads the ``[MASK]`` state), and the masked-LM head
    only does for a verbalizer that reads vocabulary logits. Counting those as trainable would
    inflate a method's parameter count with tensors whose gradient is always zero.
    """
    base = {id(p) for n, p in backbone.encoder.transformer.named_parameters() if not n.startswith("pooler.")}
    return {n for n, p in backbone.encoder.named_parameters()
            if (id(p) in base) or (needs_vocab and ".pooler." not in n)}


#: PEFT methods by name (``peft.method``; ``none`` is no method and is not registered).
TUNERS: Registry[Method] = Registry("PEFT method")


def register(method: Method) -> Method:
    """Register ``method`` under its name (the last line of a method's module)."""
    return TUNERS.register(method.name)(method)
