"""``--format peft``: the files ``peft.PeftModel.from_pretrained`` loads, and ``metaprompt.json["peft"]``.

How each design maps onto peft is asked from the design: the prompt kind's spec
(``peft_export``, ``no_peft_reason``, ``folded``: :mod:`metaprompt.prompts`) and the PEFT
method's record (``export``, ``peft_config``, ``no_peft_reason``: :mod:`metaprompt.tuners`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from metaprompt import compat
from metaprompt.config import Config
from metaprompt.run.checkpoint import atomic_save
from metaprompt.run.export.formats import (BACKBONE_ADAPTER_DIR, BASE_MODEL_DIR, CARD_FILE, PEFT_TASK_TYPE,
                                           VERBALIZER_FILE, VERIFY_TOLERANCE, ExportError)
from metaprompt.run.export.verify import verify_peft_files

# -- peft ------------------------------------------------------------------------------------------
def method_of(cfg: Config):
    """The PEFT method of ``cfg`` (its record in ``metaprompt.tuners``), or None."""
    from metaprompt.tuners import get_method

    return None if cfg.peft.method == "none" else get_method(cfg.peft.method)


def _backbone_kind(cfg: Config) -> str | None:
    """How the backbone is exported: 'peft' (a peft adapter), 'weights' (a modified model: full,
    bitfit, unfrozen), 'unavailable' (no peft equivalent), or None (frozen backbone)."""
    method = method_of(cfg)
    if method is not None and method.export in ("peft", "unavailable"):
        return method.export
    if (method is not None and method.export == "weights") or not cfg.model.freeze_backbone:
        return "weights"
    return None


def write_peft(out: Path, setup, tensors: dict[str, torch.Tensor], verify: bool) -> dict[str, Any]:
    """Write the peft files into ``out``; returns ``metaprompt.json["peft"]``."""
    from metaprompt.model.classifier import split_params

    cfg = setup.cfg
    backbone_kind = _backbone_kind(cfg)
    prompt = cfg.prompt.spec()
    has_prompt = prompt.has_prompt
    if has_prompt and prompt.peft_export is None:
        return {"available": False, "reason": prompt.no_peft_reason}
    if not setup.template.reads_mask:
        return {"available": False, "reason": "the template has no [MASK]: the classifier reads the mean-pooled "
                                              "text states, which a peft model does not compute by itself"}
    if backbone_kind == "unavailable":
        return {"available": False, "reason": method_of(cfg).no_peft_reason}
    groups = split_params(tensors)
    _save_verbalizer(out / VERBALIZER_FILE, groups["verbalizer"])
    usage: dict[str, Any] = {"available": True, "task_type": PEFT_TASK_TYPE, "auto_class": _auto_class(setup),
                             "verbalizer_file": VERBALIZER_FILE, "output_offset": 0, "position_ids": None}
    usage.update(_inputs(setup))
    if backbone_kind == "weights":
        _save_base_model(out / BASE_MODEL_DIR, setup, groups["backbone"])
        usage["base_model_dir"] = BASE_MODEL_DIR
    if backbone_kind == "peft":
        adapter_dir = out / BACKBONE_ADAPTER_DIR if has_prompt else out
        usage["backbone_adapter"] = "." if not has_prompt else BACKBONE_ADAPTER_DIR
        usage["backbone_peft_type"] = _save_backbone_adapter(adapter_dir, setup, groups["backbone"])
    if has_prompt:
        usage.update(_save_prompt_adapter(out, setup, tensors, usage))
    # The top-level adapter; None: nothing for peft to load (the base model, or base_model/, is the init).
    usage["adapter"] = "." if has_prompt or backbone_kind == "peft" else None
    usage["peft_type"] = usage.get("prompt_peft_type") or usage.get("backbone_peft_type")
    usage["how_to"] = _how_to(usage)
    if verify:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            usage["verified_max_abs_diff"] = verify_peft_files(out, setup, tensors, usage)
        if usage["verified_max_abs_diff"] is not None and usage["verified_max_abs_diff"] > VERIFY_TOLERANCE:
            raise ExportError(f"the peft files give [MASK] states that differ from metaprompt's by "
                              f"{usage['verified_max_abs_diff']:.2e}; the export is wrong (please report this)")
    return usage


def _auto_class(setup) -> str:
    return "AutoModelForMaskedLM" if setup.backbone.has_mlm_head else "AutoModel"


def _save_verbalizer(path: Path, params: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in params.items()}
    if not tensors:
        tensors = {"_empty": torch.zeros(0)}  # safetensors needs one tensor; the verbalizer learns nothing
    atomic_save(tensors, {"format": "metaprompt.verbalizer/v1"}, path)


def _fresh_model(setup):
    from metaprompt.model.backbone import load_backbone

    cfg = setup.cfg
    return load_backbone(cfg.model.name, mlm_head=cfg.model.mlm_head,
                         trust_remote_code=cfg.model.trust_remote_code).encoder.model


def _peft_model(setup, config):
    """peft's model around a fresh copy of the base model (transformers' deprecation notes muted)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(_fresh_model(setup), config)


def _save_base_model(path: Path, setup, backbone: dict[str, torch.Tensor]) -> None:
    """full / bitfit / unfrozen backbone: the base model with the learned weights written in."""
    model = _fresh_model(setup)
    state = {}
    for name, value in backbone.items():
        if not name.startswith("model."):
            raise ExportError(f"backbone tensor '{name}' is not a weight of the transformers model")
        state[name[len("model."):]] = value
    known = dict(model.named_parameters())
    unknown = [k for k in state if k not in known]
    if unknown:
        raise ExportError(f"backbone tensors {unknown[:3]} are not weights of {type(model).__name__}")
    with torch.no_grad():
        for name, value in state.items():
            known[name].copy_(value)
    model.save_pretrained(path, safe_serialization=True)
    setup.backbone.tokenizer.save_pretrained(path)


def _backbone_peft_config(cfg: Config):
    """The peft config metaprompt injected (``metaprompt.tuners``: each method's ``peft_config``), as a task config."""
    method = method_of(cfg)
    return method.peft_config(method.settings.from_peft(cfg.peft), PEFT_TASK_TYPE)


def _save_backbone_adapter(path: Path, setup, backbone: dict[str, torch.Tensor]) -> str:
    """LoRA / IA3: a peft model around a fresh base model, our tensors copied in by name, saved by peft."""
    config = _backbone_peft_config(setup.cfg)
    model = _peft_model(setup, config)
    own = compat.peft_adapter_tensors(model)
    mapped = {}
    for name, value in backbone.items():
        # the classifier's backbone tensors are named model.<path> (MaskedEncoder.model)
        target = compat.peft_model_name(name.removeprefix("model."))
        if target not in own:
            raise ExportError(f"the meta-learned tensor 'backbone.{name}' has no counterpart in peft's "
                              f"{config.peft_type.value} model ({target}); peft's naming changed?")
        if own[target].shape != value.shape:
            raise ExportError(f"'backbone.{name}' has shape {tuple(value.shape)}, peft's {target} "
                              f"{tuple(own[target].shape)}")
        mapped[target] = value
    left = sorted(set(own) - set(mapped))
    if left:
        raise ExportError(f"peft's {config.peft_type.value} model has tensors metaprompt did not learn: {left[:3]}")
    with torch.no_grad():
        for name, value in mapped.items():
            own[name].copy_(value)
    model.save_pretrained(str(path), safe_serialization=True)
    (path / CARD_FILE).unlink(missing_ok=True)  # peft's stub card; ours is written at the top level
    return config.peft_type.value


def _input_embeddings(setup, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The word-embedding table the classifier uses: the learned one when the backbone was trained."""
    table = setup.backbone.word_embeddings
    for name, weight in setup.backbone.encoder.named_parameters():
        if weight is table and f"backbone.{name}" in tensors:
            return tensors[f"backbone.{name}"]
    return table


def _save_prompt_adapter(out: Path, setup, tensors: dict[str, torch.Tensor], usage) -> dict[str, Any]:
    from peft import PrefixTuningConfig, PromptTuningConfig

    from metaprompt.model.classifier import split_params

    spec = setup.cfg.prompt.spec()
    prompt_params = split_params(tensors)["prompt"]
    with torch.no_grad():
        computed = setup.classifier.prompt({k: v.float() for k, v in prompt_params.items()}, None)
    if spec.peft_export == "prefix":
        prefix = computed.prefix  # [layers, 2, L, H] → peft's [L, layers·2·H] (layer-major, key before value)
        layers, _, length, hidden = prefix.shape
        flat = prefix.permute(2, 0, 1, 3).reshape(length, layers * 2 * hidden)
        config = PrefixTuningConfig(task_type=PEFT_TASK_TYPE, num_virtual_tokens=length, prefix_projection=False)
        info = {"prompt_peft_type": "PREFIX_TUNING", "num_virtual_tokens": length, "output_offset": 0,
                "position_ids": _prefix_positions(setup, length), "reparameterisation": spec.folded}
        weight = flat
    else:
        prompt = computed.embeds  # [L, H]
        start = usage["start_token_ids"]
        table = _input_embeddings(setup, tensors).detach().float().cpu()
        weight = torch.cat([table[torch.tensor(start, dtype=torch.long)], prompt.cpu()], dim=0)
        config = PromptTuningConfig(task_type=PEFT_TASK_TYPE, num_virtual_tokens=weight.shape[0])
        info = {"prompt_peft_type": "PROMPT_TUNING", "num_virtual_tokens": int(weight.shape[0]),
                "output_offset": int(weight.shape[0]), "position_ids": None, "reparameterisation": spec.folded}
    model = _peft_model(setup, config)
    table = compat.peft_prompt_table(model)
    if tuple(table.shape) != tuple(weight.shape):
        raise ExportError(f"peft's prompt encoder holds {tuple(table.shape)}, the prompt is {tuple(weight.shape)}")
    with torch.no_grad():
        table.copy_(weight)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / CARD_FILE).unlink(missing_ok=True)
    return info


def _prefix_positions(setup, length: int) -> dict[str, Any]:
    """metaprompt keeps the tokens' positions under a prefix; peft adds the prefix length to given ids."""
    start = setup.backbone.encoder.first_position  # RoBERTa-style ids start after the padding index
    return {"start": start - length,
            "rule": f"pass position_ids = {start - length} + arange(sequence length) for every row: peft adds "
                    f"num_virtual_tokens ({length}) to given position ids, so the tokens get {start}, {start + 1}, "
                    "…, the positions metaprompt gives them (without position_ids they would start "
                    f"{length} later)"}


def _inputs(setup) -> dict[str, Any]:
    """How to build the peft model's input ids from a text, and whether that is metaprompt's classifier."""
    from metaprompt.model.template import _special_tokens_around

    template = setup.template
    tok = setup.backbone.tokenizer
    sentinel = -7
    ids, mask_pos, prompt_pos = template.encode([sentinel])
    at = ids.index(sentinel)
    start, _ = _special_tokens_around(tok)
    k = len(start)
    fold = bool(prompt_pos)  # a shallow prompt: the start tokens become the first virtual tokens
    drop = set(prompt_pos) | (set(range(k)) if fold else set())
    exact = not prompt_pos or prompt_pos == list(range(k, k + len(prompt_pos)))
    before = [t for i, t in enumerate(ids[:at]) if i not in drop]
    after = [t for i, t in enumerate(ids[at + 1:], start=at + 1) if i not in drop]
    info: dict[str, Any] = {
        "input_ids": {"before_text": before, "after_text": after, "text_max_tokens": template.text_budget,
                      "text_leading_space": template.text_leading_space,
                      "rule": "input_ids = before_text + tokenizer((' ' if text_leading_space else '') + text, "
                              "add_special_tokens=False, truncation=True, max_length=text_max_tokens).input_ids "
                              "+ after_text; pad on the right with attention_mask 0"},
        "mask_token_id": int(tok.mask_token_id),
        "start_token_ids": list(start) if fold else [],
        "template": template.template,
        "exact": exact,
    }
    if fold:
        info["equivalent_template"] = template.template if exact else \
            "[P] " + " ".join(template.template.replace("[P]", " ").split())
    if not exact:
        info["not_exact_because"] = (
            "the template puts the soft prompt in the middle of the input ([P] slots), and peft prepends its "
            "virtual tokens; this adapter computes metaprompt's classifier with the prompt moved to the front, "
            "right after the start token. For an exact export, meta-train with a template that starts with [P] "
            "(e.g. prompt.template_id=2, or '[P] {text} . topic is [MASK] .')")
    return info


def _how_to(usage: dict[str, Any]) -> str:
    base = f"{usage['auto_class']}.from_pretrained(BASE)"
    if usage.get("base_model_dir"):
        base = f"{usage['auto_class']}.from_pretrained(DIR/{usage['base_model_dir']})"
    steps = [f"model = {base}"]
    if usage.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
        steps.append(f"model = PeftModel.from_pretrained(model, DIR/{BACKBONE_ADAPTER_DIR}).merge_and_unload()")
    if usage["adapter"]:
        steps.append("model = PeftModel.from_pretrained(model, DIR)")
    steps.append("ids: input_ids rule; h = last hidden state at (position of [MASK] in input_ids) + output_offset")
    if usage.get("position_ids"):
        steps.append(usage["position_ids"]["rule"])
    return "; ".join(steps)
