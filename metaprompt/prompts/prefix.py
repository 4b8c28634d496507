"""``prefix``: deep prompts (Li & Liang 2021; P-Tuning v2, Liu et al. 2022): key/value prefixes at
every layer, optionally reparameterised by an MLP."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from metaprompt import checks
from metaprompt.prompts.base import PROMPTS, PromptEncoder, PromptOutput, PromptSpec, uniform_init


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


    def __init__(self, spec, backbone, label_word_ids, train_classes):
        super().__init__(spec, backbone, label_word_ids, train_classes)
        if spec.length < 1:
            raise ValueError("prompt.kind=prefix needs prompt.length ≥ 1 (virtual tokens per layer)")
        encoder = backbone.encoder
        encoder.check_prefix_support()
        config = backbone.config
        self.layers = int(config.num_hidden_layers)
        self.hidden = backbone.hidden_size
        if self.hidden % int(config.num_attention_heads):
            raise ValueError(f"hidden size {self.hidden} is not a multiple of the number of heads")
        if spec.prefix_projection:
            with torch.device("meta"):
                self.mlp = nn.Sequential(nn.Linear(self.hidden, spec.hidden_size), nn.Tanh(),
                                         nn.Linear(spec.hidden_size, self.layers * 2 * self.hidden))
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
            plain = encoder.transformer(inputs_embeds=embeds, attention_mask=mask)[0]
            hidden = encoder.transformer(inputs_embeds=embeds, **encoder.prefix_inputs(prefix, mask, mask_value=0))[0]
            shown = encoder.transformer(inputs_embeds=embeds, **encoder.prefix_inputs(prefix, mask))[0]
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
        encoder.transformer(inputs_embeds=embeds, attention_mask=mask, **{encoder.cache_argument: cache})
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
        if self.spec.prefix_projection:
            return {"embeds": vectors, **{f"mlp.{k}": v for k, v in uniform_init(self.mlp, generator).items()}}
        return {"prefix": self._activations(vectors)}

    def __call__(self, params, batch, encode_frozen=None):
        if "prefix" in params:
            return PromptOutput(embeds=None, prefix=params["prefix"])
        weights = {k[len("mlp."):]: v for k, v in params.items() if k.startswith("mlp.")}
        flat = functional_call(self.mlp, weights, (params["embeds"],), strict=True)  # [L, layers·2·H]
        length = params["embeds"].shape[0]
        prefix = flat.view(length, self.layers, 2, self.hidden).permute(1, 2, 0, 3)
        return PromptOutput(embeds=None, prefix=prefix)



@PROMPTS.register("prefix")
@dataclass(frozen=True)
class Prefix(PromptSpec):
    """Deep prompts of ``length`` virtual tokens per layer; ``prefix_projection``: reparameterise
    them by an MLP of width ``hidden_size``."""

    encoder = PrefixPrompt
    title = "prefix (deep prompt)"
    deep = True
    peft_export = "prefix"

    hidden_size: int = 128
    prefix_projection: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check(self.hidden_size >= 1, "prompt.hidden_size", "must be ≥ 1")

    @property
    def folded(self) -> str | None:  # type: ignore[override]
        return ("the MLP of prompt.prefix_projection is folded: its output is exported (peft stores the "
                "computed prefixes in either case)") if self.prefix_projection else None
