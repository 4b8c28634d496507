"""Soft-prompt encoders: functions from explicitly passed parameters to prompt vectors.

Each encoder owns a few named tensors (``init_params``) and maps them to what the backbone
consumes (:class:`PromptOutput`). Parameters are never stored on the encoder, so the same
encoder serves the pretrained init, inner-loop fast weights and the meta-learned init; every
encoder is differentiable twice and runs under :func:`torch.func.grad` and ``higher``.

=============  ==========================================================================
``embedding``  plain soft tokens in the template's ``[P]`` slots (Lester et al. 2021)
``ptuning``    P-tuning v1 (Liu et al. 2021): embeddings → 2-layer BiLSTM → 2-layer MLP
``prefix``     deep prompts (Li & Liang 2021; P-Tuning v2, Liu et al. 2022): key/value
               prefixes at every layer, optionally reparameterised by an MLP
``pool``       MetaPrompter's prompt pool (Jiang et al. 2023): an instance-dependent prompt,
               attention of the frozen model's ``[MASK]`` state over learned keys
=============  ==========================================================================
"""
from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.func import functional_call

from metaprompt.config import PromptConfig

if TYPE_CHECKING:
    from metaprompt.model.backbone import Backbone
    from metaprompt.model.template import Batch

Params = dict[str, torch.Tensor]


@dataclass
class PromptOutput:
    embeds: torch.Tensor | None  # [L, H] shared by the batch, or [B, L, H] per example
    prefix: torch.Tensor | None = None  # deep prompts: [layers, 2 (key, value), P, H], shared by the batch


def shallow_length(cfg: PromptConfig) -> int:
    """Soft tokens that go into the template's ``[P]`` slots (0 for deep prompts: ``prefix``
    puts its ``prompt.length`` virtual tokens in front of every layer instead)."""
    return 0 if cfg.kind == "prefix" else cfg.length


class PromptEncoder:
    """Base class. Subclasses set ``kind`` and implement ``init_params`` and ``__call__``."""

    kind = ""

    def __init__(self, cfg: PromptConfig, backbone: "Backbone", label_word_ids: dict[int, list[list[int]]],
                 train_classes: tuple[int, ...]):
        self.cfg = cfg
        self.backbone = backbone
        self.label_word_ids = label_word_ids
        self.train_classes = tuple(train_classes)

    def init_params(self, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def __call__(self, params: Params, batch: "Batch", encode_frozen: Callable | None = None) -> PromptOutput:
        raise NotImplementedError

    # -- initial token vectors shared by several encoders -------------------------------------
    def initial_vectors(self, generator: torch.Generator, length: int | None = None) -> torch.Tensor:
        """``length`` vectors in the word-embedding space, chosen by ``prompt.init``.

        ``text``: the word pieces of ``prompt.init_text`` (cut, or filled up with random
        vocabulary); ``label_words``: the word pieces of the label words of the *meta-training*
        classes, shuffled, repeated when there are fewer than ``length`` (test classes never
        leak into the init); ``vocab``: random ordinary vocabulary entries; ``random``: Gaussian
        vectors with the spread of the embedding table.
        """
        length = self.cfg.length if length is None else length
        table = self.backbone.word_embeddings.detach()
        tokenizer = self.backbone.tokenizer
        special = set(tokenizer.all_special_ids)
        if self.cfg.init == "random":
            return torch.randn(length, table.shape[1], generator=generator) * table.std().cpu()
        if self.cfg.init == "text":
            ids = [i for i in tokenizer.encode(self.cfg.init_text, add_special_tokens=False) if i not in special]
        elif self.cfg.init == "label_words":
            pieces = [p for c in self.train_classes for word in self.label_word_ids.get(c, []) for p in word]
            ids = [i for i in dict.fromkeys(pieces) if i not in special]
            if ids:
                order = torch.randperm(len(ids), generator=generator).tolist()
                ids = [ids[i] for i in order]
                ids = (ids * math.ceil(length / len(ids)))[:length]
        else:  # vocab
            ids = []
        ids = ids[:length]
        # Fill with random ordinary vocabulary entries (skipping the first rows, which hold
        # special and unused tokens in BERT-style vocabularies, when the vocabulary is large).
        low = 1000 if table.shape[0] > 2000 else 0
        while len(ids) < length:
            candidate = int(torch.randint(low, table.shape[0], (1,), generator=generator))
            if candidate not in special:
                ids.append(candidate)
        return table[torch.tensor(ids, dtype=torch.long, device=table.device)].detach().clone().float().cpu()


class EmbeddingPrompt(PromptEncoder):
    """Plain soft tokens (Lester et al. 2021): the prompt vectors are the parameters."""

    kind = "embedding"

    def init_params(self, generator: torch.Generator) -> Params:
        return {"embeds": self.initial_vectors(generator)}

    def __call__(self, params: Params, batch: "Batch", encode_frozen: Callable | None = None) -> PromptOutput:
        return PromptOutput(embeds=params["embeds"])


def _uniform_init(module: nn.Module, generator: torch.Generator) -> Params:
    """PyTorch's default init of LSTM/Linear weights, drawn from ``generator`` (deterministic):
    U(−1/√fan, 1/√fan), fan = hidden size for LSTMs and input features for linear layers."""
    out = {}
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.LSTM):
            fan = sub.hidden_size
        elif isinstance(sub, nn.Linear):
            fan = sub.in_features
        else:
            continue
        bound = 1.0 / math.sqrt(fan)
        for name, p in sub.named_parameters(recurse=False):
            key = f"{prefix}.{name}" if prefix else name
            out[key] = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
    return out


def _no_cudnn(device: torch.device):
    """cuDNN's LSTM has no double backward: second-order meta-gradients need the native kernel."""
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


class _LSTMHead(nn.Module):
    """BiLSTM (2 layers) → MLP (2 layers). Only its structure is used: weights are always
    passed to it with ``functional_call``."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.lstm = nn.LSTM(hidden, inner, num_layers=2, bidirectional=True, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(2 * inner, inner), nn.ReLU(), nn.Linear(inner, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.lstm(x)[0])


class PTuningPrompt(PromptEncoder):
    """P-tuning v1 (Liu et al. 2021, "GPT understands, too"), MetaPrompting's prompt encoder.

    Learned input vectors ``embeds`` [L, H] (initialised by ``prompt.init``) pass through a
    2-layer bidirectional LSTM (``prompt.hidden_size`` units per direction) and a 2-layer MLP
    (hidden ``prompt.hidden_size``, ReLU) back to [L, H]. LSTM and MLP weights are parameters
    like the input vectors (``prompt.lstm.*``, ``prompt.mlp.*``): adapted in the inner loop and
    meta-learned. On CUDA the LSTM runs without cuDNN, whose kernel has no double backward.
    """

    kind = "ptuning"

    def __init__(self, cfg, backbone, label_word_ids, train_classes):
        super().__init__(cfg, backbone, label_word_ids, train_classes)
        if cfg.length < 1:
            raise ValueError("prompt.kind=ptuning needs prompt.length ≥ 1")
        with torch.device("meta"):  # structure only: functional_call always passes the weights
            self.head = _LSTMHead(backbone.hidden_size, cfg.hidden_size)

    def init_params(self, generator):
        return {"embeds": self.initial_vectors(generator), **_uniform_init(self.head, generator)}

    def __call__(self, params, batch, encode_frozen=None):
        embeds = params["embeds"]
        weights = {k: v for k, v in params.items() if k != "embeds"}
        with _no_cudnn(embeds.device):
            out = functional_call(self.head, weights, (embeds.unsqueeze(0),), strict=True)
        return PromptOutput(embeds=out.squeeze(0))


class PrefixPrompt(PromptEncoder):
    """Deep prompts: ``prompt.length`` key/value vectors in front of every layer's attention
    (prefix tuning, Li & Liang 2021; P-Tuning v2, Liu et al. 2022).

    Without reparameterisation the parameter is ``prefix`` [layers, 2, L, H], initialised with
    the keys and values the frozen backbone computes for the ``prompt.init`` tokens, so the
    pretrained init behaves like those words read as a prefix. With
    ``prompt.prefix_projection=true``, ``embeds`` [L, H] (``prompt.init``) go through an MLP
    H → ``prompt.hidden_size`` (tanh) → layers·2·H, as in the two papers.

    Prefixes reach the backbone as its key/value cache (see ``MaskedEncoder.prefix_inputs``);
    families that cannot take them (DistilBERT) raise a clear error when the encoder is built.
    The template's ``[P]`` slots stay empty: deep prompts take no input positions, so a
    template with or without ``[P]`` works (a ``[P]`` marker then adds nothing).
    """

    kind = "prefix"

    def __init__(self, cfg, backbone, label_word_ids, train_classes):
        super().__init__(cfg, backbone, label_word_ids, train_classes)
        if cfg.length < 1:
            raise ValueError("prompt.kind=prefix needs prompt.length ≥ 1 (virtual tokens per layer)")
        encoder = backbone.encoder
        encoder.check_prefix_support()
        config = backbone.config
        self.layers = int(config.num_hidden_layers)
        self.hidden = backbone.hidden_size
        if self.hidden % int(config.num_attention_heads):
            raise ValueError(f"hidden size {self.hidden} is not a multiple of the number of heads")
        if cfg.prefix_projection:
            with torch.device("meta"):
                self.mlp = nn.Sequential(nn.Linear(self.hidden, cfg.hidden_size), nn.Tanh(),
                                         nn.Linear(cfg.hidden_size, self.layers * 2 * self.hidden))
        self._self_check()

    @torch.no_grad()
    def _self_check(self) -> None:
        """A prefix that the attention mask hides must change nothing: this catches families
        whose positions or masks do not follow the prefix (they would silently misbehave)."""
        from metaprompt.model.backbone import ModelLoadError

        encoder = self.backbone.encoder
        tok = self.backbone.tokenizer
        device = next(encoder.parameters()).device
        ids = tok.encode("a b", add_special_tokens=True) + [tok.mask_token_id]
        input_ids = torch.tensor([ids], device=device)
        mask = torch.ones_like(input_ids)
        embeds = encoder.embed_tokens(input_ids)
        prefix = torch.randn(self.layers, 2, 2, self.hidden, device=device)
        try:
            plain = encoder.encoder(inputs_embeds=embeds, attention_mask=mask)[0]
            hidden = encoder.encoder(inputs_embeds=embeds, **encoder.prefix_inputs(prefix, mask, mask_value=0))[0]
            shown = encoder.encoder(inputs_embeds=embeds, **encoder.prefix_inputs(prefix, mask))[0]
        except (TypeError, ValueError, RuntimeError, IndexError) as err:
            raise ModelLoadError(f"model type '{self.backbone.config.model_type}' cannot take key/value prefixes "
                                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                 "use prompt.kind=embedding, ptuning or pool") from None
        if not torch.allclose(plain, hidden, atol=1e-4) or torch.allclose(plain, shown, atol=1e-6):
            raise ModelLoadError(f"model type '{self.backbone.config.model_type}' does not apply key/value "
                                 "prefixes as expected; use prompt.kind=embedding, ptuning or pool")

    @torch.no_grad()
    def _activations(self, vectors: torch.Tensor) -> torch.Tensor:
        """Keys and values of the frozen backbone for ``vectors`` read as a text: [layers, 2, L, H]."""
        from metaprompt.compat import cache_pairs, new_cache

        encoder = self.backbone.encoder
        device = next(encoder.parameters()).device
        cache = new_cache()  # an encoder's attention appends its keys/values to a cache it is given
        embeds = vectors.unsqueeze(0).to(device)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        encoder.encoder(inputs_embeds=embeds, attention_mask=mask, **{encoder.cache_argument: cache})
        out = []
        for keys, values in cache_pairs(cache):
            # [1, heads, L, head_dim] → [L, H]
            k, v = (t[0].transpose(0, 1).reshape(vectors.shape[0], self.hidden) for t in (keys, values))
            out.append(torch.stack([k, v]))
        if len(out) != self.layers:
            raise RuntimeError("could not read the backbone's keys and values for the prefix init")
        return torch.stack(out).float().cpu()

    def init_params(self, generator):
        vectors = self.initial_vectors(generator)
        if self.cfg.prefix_projection:
            return {"embeds": vectors, **{f"mlp.{k}": v for k, v in _uniform_init(self.mlp, generator).items()}}
        return {"prefix": self._activations(vectors)}

    def __call__(self, params, batch, encode_frozen=None):
        if "prefix" in params:
            return PromptOutput(embeds=None, prefix=params["prefix"])
        weights = {k[len("mlp."):]: v for k, v in params.items() if k.startswith("mlp.")}
        flat = functional_call(self.mlp, weights, (params["embeds"],), strict=True)  # [L, layers·2·H]
        length = params["embeds"].shape[0]
        prefix = flat.view(length, self.layers, 2, self.hidden).permute(1, 2, 0, 3)
        return PromptOutput(embeds=None, prefix=prefix)


class PoolPrompt(PromptEncoder):
    """MetaPrompter's prompt pool (Jiang et al. 2023): ``prompt.pool_size`` prompts of
    ``prompt.length`` tokens, each with a key; every example gets its own prompt

        a = softmax(q · Kᵀ / √H),   prompt = Σ_k a_k · P_k     ([B, L, H])

    where q is the ``[MASK]`` state of the *frozen* pretrained model on the example without
    a prompt (``classifier.frozen_mask_states``; cached per batch). Prompts start from
    ``prompt.init`` (MetaPrompter: ``label_words``, here the words of the meta-training classes
    only; the paper drew them from all classes, test classes included), keys from N(0, 1).
    """

    kind = "pool"

    def __init__(self, cfg, backbone, label_word_ids, train_classes):
        super().__init__(cfg, backbone, label_word_ids, train_classes)
        if cfg.length < 1:
            raise ValueError("prompt.kind=pool needs prompt.length ≥ 1")
        self.temperature = math.sqrt(backbone.hidden_size)
        self._cache: list[tuple[weakref.ref, torch.Tensor]] = []

    def init_params(self, generator):
        k, length, hidden = self.cfg.pool_size, self.cfg.length, self.backbone.hidden_size
        prompts = self.initial_vectors(generator, k * length).view(k, length, hidden)
        keys = torch.randn(k, hidden, generator=generator)
        return {"prompts": prompts, "keys": keys}

    def query_states(self, batch: "Batch", encode_frozen: Callable) -> torch.Tensor:
        """The frozen ``[MASK]`` states of ``batch``, computed once per batch object (the inner
        loop scores the same support batch at every step)."""
        for ref, states in self._cache:
            if ref() is batch:
                return states
        states = encode_frozen(batch)
        self._cache = [(weakref.ref(batch), states)] + [(r, s) for r, s in self._cache if r() is not None][:3]
        return states

    def __call__(self, params, batch, encode_frozen=None):
        if encode_frozen is None:
            raise ValueError("prompt.kind=pool needs the frozen model's [MASK] states (encode_frozen)")
        query = self.query_states(batch, encode_frozen).to(params["keys"].dtype)
        weights = torch.softmax(query @ params["keys"].T / self.temperature, dim=-1)  # [B, K]
        return PromptOutput(embeds=torch.einsum("bk,klh->blh", weights, params["prompts"]))


PROMPT_ENCODERS: dict[str, type[PromptEncoder]] = {
    "embedding": EmbeddingPrompt, "ptuning": PTuningPrompt, "prefix": PrefixPrompt, "pool": PoolPrompt,
}


def build_prompt_encoder(cfg: PromptConfig, backbone: "Backbone", label_word_ids, train_classes) -> PromptEncoder:
    if cfg.kind not in PROMPT_ENCODERS:
        raise ValueError(f"prompt.kind '{cfg.kind}' is not implemented (available: {', '.join(PROMPT_ENCODERS)})")
    return PROMPT_ENCODERS[cfg.kind](cfg, backbone, label_word_ids, train_classes)
