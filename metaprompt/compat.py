"""The one place that touches transformers, peft and torch internals.

Everything here is something those libraries do not promise to keep: argument names that a
release renamed (transformers 5.24 calls the key/value cache ``cache``, earlier 5.x releases
``past_key_values``), private attributes and functions, and the names peft gives its tensors.
Support is decided by *behaviour* where that is cheap (run the model on a toy input and look
at what happened), not by reading signatures, so a rename or a model family with other rules
is detected instead of silently misbehaving. When a library changes, this module and its test
file (``tests/test_compat.py``) are what change.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterable

import torch
from torch import nn

# -- key/value caches (deep prompts / prefix tuning) -----------------------------------------------

#: The names under which transformers' encoders have taken a key/value cache, newest first
#: (``past_key_values`` still works in 5.24 with a deprecation warning; it goes in 5.40).
CACHE_ARGUMENTS = ("cache", "past_key_values")


def new_cache(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None):
    """A fresh ``DynamicCache``, empty or holding one (keys, values) pair per layer.

    An encoder's attention appends the tokens' keys and values to the cache it is given, so a
    cache is never reused across forward passes."""
    from transformers import DynamicCache

    if pairs is None:
        return DynamicCache()
    return DynamicCache(ddp_cache_data=list(pairs))


def cache_pairs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (keys, values) of every layer of a ``DynamicCache``, each ``[B, heads, T, head_dim]``."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def passes_cache(kwargs: dict) -> bool:
    """Whether a block's keyword arguments carry a key/value cache (under either name)."""
    return any(kwargs.get(name) is not None for name in CACHE_ARGUMENTS)


@torch.no_grad()
def find_cache_argument(encoder: nn.Module) -> str | None:
    """The keyword under which ``encoder`` (a transformers base model) takes a key/value cache.

    Decided by behaviour: the encoder reads three toy embeddings with an empty cache under each
    candidate name, newest first; the name under which the cache comes back filled with three
    positions at every layer wins. None when no name works (an encoder that takes no cache, or
    ignores it). Deprecation warnings of an old name are silenced for the probe only.
    """
    param = next(encoder.parameters())
    hidden = encoder.get_input_embeddings().weight.shape[1]
    embeds = torch.zeros(1, 3, hidden, device=param.device, dtype=param.dtype)
    mask = torch.ones(1, 3, dtype=torch.long, device=param.device)
    for name in CACHE_ARGUMENTS:
        cache = new_cache()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                encoder(inputs_embeds=embeds, attention_mask=mask, **{name: cache})
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError):
            continue
        pairs = cache_pairs(cache)
        if pairs and all(k is not None and k.shape[-2] == 3 for k, _ in pairs):
            return name
    return None


# -- positions ------------------------------------------------------------------------------------

@torch.no_grad()
def first_position(encoder: nn.Module) -> int:
    """The position id the encoder gives the first token of a sequence read from embeddings.

    BERT-like families start at 0; RoBERTa-like ones (RoBERTa, XLM-R, CamemBERT, MPNet, ...)
    after the padding index. Decided by behaviour: the candidate whose explicit
    ``position_ids = start + arange(T)`` reproduces the encoder's own output. 0 when neither does
    (a family that takes no position ids; the prefix self-check catches what that breaks).
    """
    config = encoder.config
    pad = getattr(config, "pad_token_id", None)
    candidates = [0] + ([int(pad) + 1] if isinstance(pad, int) and pad >= 0 else [])
    param = next(encoder.parameters())
    hidden = encoder.get_input_embeddings().weight.shape[1]
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 4, hidden, generator=generator).to(param.device, param.dtype)
    mask = torch.ones(1, 4, dtype=torch.long, device=param.device)
    try:
        own = encoder(inputs_embeds=embeds, attention_mask=mask)[0]
        for start in candidates:
            ids = torch.arange(start, start + 4, device=param.device).unsqueeze(0)
            given = encoder(inputs_embeds=embeds, attention_mask=mask, position_ids=ids)[0]
            if torch.allclose(own, given, atol=1e-5, rtol=1e-4):
                return start
    except (TypeError, ValueError, RuntimeError, IndexError):
        pass
    return 0


def max_positions(config, start: int) -> int:
    """How many tokens fit: the position table's size less the ids before ``start``."""
    return int(getattr(config, "max_position_embeddings", 512)) - start


# -- attention ------------------------------------------------------------------------------------

def attention_implementation(model: nn.Module) -> str | None:
    """The attention kernel transformers chose for ``model`` (``"sdpa"``, ``"eager"``, ...)."""
    return getattr(model.config, "_attn_implementation", None)


def math_attention():
    """A context in which scaled-dot-product attention uses the math kernel (the fused CPU
    kernels have no double backward, which second-order inner steps need)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


# -- masked-LM heads ------------------------------------------------------------------------------

def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The MLM head as a function of hidden states, for the families we know; None if absent.

    BERT keeps it in ``cls``, RoBERTa-like models in ``lm_head``, DistilBERT in four loose
    modules. Applying it to the ``[MASK]`` states only avoids vocabulary-sized logits at
    every position.
    """
    if hasattr(model, "cls") and isinstance(model.cls, nn.Module):
        return model.cls
    if hasattr(model, "lm_head") and isinstance(model.lm_head, nn.Module):
        return model.lm_head
    if all(hasattr(model, n) for n in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")):
        return lambda h: model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))
    return None


# -- torch internals --------------------------------------------------------------------------------

def in_functorch_transform() -> bool:
    """Whether code runs inside a ``torch.func`` transform (grad, vmap, ...)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def reparametrized(module: nn.Module, tensors: dict[str, torch.Tensor]):
    """A context in which ``module`` runs with ``tensors`` in place of its parameters/buffers
    (what ``torch.func.functional_call`` does, as a re-enterable context)."""
    from torch.nn.utils.stateless import _reparametrize_module

    return _reparametrize_module(module, tensors)


def current_sdpa_backends():
    """The scaled-dot-product-attention kernels allowed right now (to restore them later)."""
    from torch.nn.attention import _cur_sdpa_kernel_backends

    return _cur_sdpa_kernel_backends()


# -- gradient checkpointing -----------------------------------------------------------------------

def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost transformer blocks of ``model`` (what transformers would checkpoint)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    inner = {id(sub) for m in blocks for sub in m.modules() if sub is not m}
    return [m for m in blocks if id(m) not in inner]


class _Reentering:
    """A context manager that can be entered again and again: it enters fresh contexts from
    ``make()`` each time."""

    def __init__(self, make: Callable[[], tuple]):
        self.make = make
        self.stacks: list[contextlib.ExitStack] = []

    def __enter__(self):
        stack = contextlib.ExitStack()
        for context in self.make():
            stack.enter_context(context)
        self.stacks.append(stack)
        return self

    def __exit__(self, *exc):
        return self.stacks.pop().__exit__(*exc)


def checkpointed_forward(block: nn.Module, forward: Callable) -> Callable:
    """``block.forward`` under non-reentrant :func:`torch.utils.checkpoint.checkpoint`.

    The weights the block runs with (under ``functional_call`` the passed fast weights, gone
    from the module by the time backward recomputes the block) and the attention kernels
    chosen are captured at the forward pass and restored for the recomputation. A block that
    is fed a key/value cache, runs without gradients or inside a ``torch.func`` transform
    (which does not support the saved-tensor hooks checkpointing relies on) runs plainly.
    """
    from torch.nn.attention import sdpa_kernel
    from torch.utils.checkpoint import checkpoint

    def run(*args, **kwargs):
        if not torch.is_grad_enabled() or in_functorch_transform() or passes_cache(kwargs):
            return forward(*args, **kwargs)
        weights = {**dict(block.named_parameters()), **dict(block.named_buffers())}
        backends = current_sdpa_backends()  # e.g. the math kernel of a second-order inner step

        def contexts():  # a recomputation can run more than once (double backward): reusable contexts
            return contextlib.nullcontext(), _Reentering(lambda: (sdpa_kernel(backends),
                                                                  reparametrized(block, weights)))

        return checkpoint(forward, *args, use_reentrant=False, preserve_rng_state=False, context_fn=contexts,
                          **kwargs)

    return run


# -- peft's tensor names --------------------------------------------------------------------------

#: Substrings that mark the tensors peft's in-place injection adds, per method.
PEFT_TENSOR_MARKS = {"lora": (".lora_A.", ".lora_B."), "ia3": (".ia3_l.",)}

#: The key of a prompt/prefix adapter's table in ``adapter_model.safetensors``.
PEFT_PROMPT_KEY = "prompt_embeddings"


def peft_tensor_filter(method: str) -> Callable[[str], bool]:
    """Whether a parameter name (of a model peft injected into in place) is one of ``method``'s."""
    marks = PEFT_TENSOR_MARKS[method]
    return lambda name: any(mark in name for mark in marks)


def peft_model_name(name: str) -> str:
    """The name of the transformers model's parameter ``name`` inside a ``PeftModel``."""
    return "base_model.model." + name  # PeftModel.base_model (the tuner) → .model (the transformers model)


def peft_adapter_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter tensors of a ``PeftModel`` around a backbone-side method (LoRA, IA3)."""
    return {n: p for n, p in model.named_parameters() if ".lora_" in n or ".ia3_" in n}


def peft_prompt_table(model: nn.Module) -> torch.Tensor:
    """The virtual-token table of a prompt/prefix ``PeftModel`` (the default adapter)."""
    return model.prompt_encoder["default"].embedding.weight
