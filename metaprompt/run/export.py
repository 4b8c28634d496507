"""Export a learned init for downstream tuning, with metaprompt or with Hugging Face peft.

Every export directory holds the *native* files, which ``metaprompt.load_init`` reads:

    init.safetensors      the meta-parameters, named as in training (``prompt.*``, ``verbalizer.*``,
                          ``backbone.*``); prompts that were not learned are included at their fixed value
    metaprompt.json       base model, template, verbalizer, label words, classes, shots, metrics,
                          config, commits, and (``--format peft``) how to use the peft files exactly
    README.md             the model card

``--format peft`` adds what ``peft.PeftModel.from_pretrained(base_model, DIR)`` loads, with no
metaprompt code involved (safetensors + JSON only):

=====================================  =============================================================
design                                 peft files
=====================================  =============================================================
``prompt.kind=embedding``              PROMPT_TUNING; virtual tokens = [start token] + the prompt
``prompt.kind=ptuning``                PROMPT_TUNING of the encoder's output (a fixed [L, H] tensor)
``prompt.kind=prefix`` (± projection)  PREFIX_TUNING of the computed key/value prefixes
``peft.method=lora|ia3``               LORA / IA3 adapter (peft's own tensor names)
``full``, ``bitfit``, unfrozen model   ``base_model/``: a ``save_pretrained`` model with the learned weights
``prompt.kind=pool``, Houlsby adapter  none: native files only, the reason in the card and the JSON
=====================================  =============================================================

plus ``verbalizer.safetensors`` (learned temperature / transform). peft prepends its virtual
tokens to the input, while a template puts the prompt in ``[P]`` slots; the export folds the
tokenizer's start token ([CLS], <s>) into the virtual tokens, so a template whose ``[P]`` comes
first (``"[P] {text} . topic is [MASK] ."``) is reproduced exactly. ``metaprompt.json["peft"]``
says how to build the inputs, where the ``[MASK]`` output is, and whether the export is exact;
the export checks it by loading its own peft files and comparing ``[MASK]`` states.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from metaprompt import compat
from metaprompt.config import Config
from metaprompt.errors import UserError
from metaprompt.run.checkpoint import CheckpointError, atomic_save, load_init, save_init
from metaprompt.run.integrity import check_data_unchanged
from metaprompt.run.jsonio import dumps_strict, read_json
from metaprompt.run.provenance import git_commit
from metaprompt.run.rundir import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, RESULTS_FILE, RUN_FILE, owned
from metaprompt.run.stats import fmt_pct
from metaprompt.run.tensorfile import canonicalize_file

EXPORT_FORMAT = "metaprompt.export/v1"
FORMATS = ("native", "peft")
INIT_FILE = "init.safetensors"
META_FILE = "metaprompt.json"
CARD_FILE = "README.md"
VERBALIZER_FILE = "verbalizer.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_MODEL_DIR = "base_model"  # full / bitfit / unfrozen backbone: the learned weights as a transformers model
BACKBONE_ADAPTER_DIR = "backbone_adapter"  # LoRA / IA3 when a soft prompt takes the top-level adapter
PEFT_TASK_TYPE = "FEATURE_EXTRACTION"  # the peft model passes inputs through and returns the backbone's outputs
VERIFY_TOLERANCE = 1e-4  # the export's own check of its peft files (tests hold it to 1e-5)
_PROBE_TEXTS = ("a short probe sentence", "another one , about the news today", "x")


class ExportError(UserError, ValueError):
    """A run cannot be exported, or an export cannot be read (the message says why)."""


def _base_model_facts(name: str, model=None) -> dict[str, Any]:
    from transformers import AutoConfig

    from metaprompt.model.backbone import resolve_model_path

    path = resolve_model_path(name)
    config = model.config if model is not None else AutoConfig.from_pretrained(path)
    facts = {"name": name, "path": path, "model_type": config.model_type, "hidden_size": config.hidden_size,
             "vocab_size": config.vocab_size, "num_hidden_layers": config.num_hidden_layers,
             "num_attention_heads": config.num_attention_heads}
    if model is not None:
        facts["class"] = type(model).__name__
    return facts


def _title(cfg: Config) -> str:
    """What was meta-learned, in words: 'soft prompt (embedding)', 'LoRA', 'LoRA + soft prompt'..."""
    parts = []
    method = _method(cfg)
    if method is not None and method.title:
        parts.append(method.title)
    elif not cfg.model.freeze_backbone:
        parts.append("full fine-tuning")
    prompt = cfg.prompt.spec()
    if prompt.has_prompt:
        parts.append(prompt.title if "prompt" in cfg.meta.learn else f"{prompt.title}, fixed")
    what = " + ".join(parts) if parts else "verbalizer"
    return f"Meta-learned init: {what}, {cfg.verbalizer.kind} verbalizer"


def _metrics(run_dir: Path) -> dict[str, Any]:
    """The scores of the model card: the run's evaluation of its meta-learned init (results.json)."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return {}
    results = read_json(path, ExportError, "results file")
    from metaprompt.fields import FileFormatError, check_results

    try:
        check_results(results, path)
    except FileFormatError as err:
        raise ExportError(str(err)) from None
    if not any(r.get("init") == "meta" for r in results.get("results", [])):
        print(f"note: {path} has no score of the meta-learned init; the model card shows no accuracy "
              f"(`metaprompt eval {run_dir}` scores it)", file=sys.stderr)
        return {}
    out: dict[str, Any] = {r["init"]: {"accuracy_mean": r["accuracy_mean"], "accuracy_ci95": r["accuracy_ci95"]}
                           for r in results.get("results", [])}
    for ref in results.get("references", []):
        out[f"reference: {ref['name']}"] = {"accuracy_mean": ref["accuracy_mean"],
                                            "accuracy_ci95": ref["accuracy_ci95"]}
    out["n_episodes"] = results.get("n_episodes")
    out["episodes_sha256"] = results.get("episodes_sha256")
    out["adaptation"] = results.get("adaptation")
    out["n_way"], out["k_shot"], out["n_query"] = (results.get(k) for k in ("n_way", "k_shot", "n_query"))
    return out


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "native", verify: bool = True,
               allow_data_change: bool = False) -> Path:
    """Export the best init of ``run_dir`` to the new directory ``out`` (see the module docstring).

    ``verify``: for ``peft``, load the written peft files with peft and check that they give
    metaprompt's ``[MASK]`` states (the result is stored in ``metaprompt.json``).
    ``allow_data_change``: export although the data or split file differs from the one the run
    was trained on (the warning is written into ``metaprompt.json``)."""
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"export format '{fmt}' is not available (available: {', '.join(FORMATS)})")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir} is not a trained run (needs {CONFIG_FILE} and {BEST_FILE})")
    if not (run_dir / BEST_FILE).is_file():
        hint = (f"continue its training with `metaprompt train --resume {run_dir}`"
                if (run_dir / CHECKPOINT_FILE).is_file() else
                f"it stopped before its first checkpoint: train its config again into a new directory with "
                f"`metaprompt train --config {run_dir / CONFIG_FILE} --out NEW_RUN`")
        raise ExportError(f"{run_dir} is not a trained run (needs {CONFIG_FILE} and {BEST_FILE}): {hint}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"export directory {out} already exists and is not empty; choose another --out")
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(f"cannot create export directory {out}: {probe} is a file, not a directory")
    inside = out.resolve().is_relative_to(run_dir.resolve())
    with owned(run_dir, "export") if inside else contextlib.nullcontext():  # it writes into the run
        try:
            return _export(run_dir, out, fmt, verify, allow_data_change)
        except OSError as err:  # disk full while the export was staged: nothing was left behind
            raise ExportError(f"cannot write the export {out}: {err.strerror or err}; nothing was written "
                              "(free some space, then export again)") from None


def _export(run_dir: Path, out: Path, fmt: str, verify: bool, allow_data_change: bool) -> Path:
    original = Config.load(run_dir / CONFIG_FILE)
    from metaprompt.run.resume import check_config_unedited

    check_config_unedited(run_dir, original)
    cfg = Config.load(run_dir / CONFIG_FILE, ["model.device=cpu"])  # exports are built on the CPU
    try:
        learned, info = load_init(run_dir / BEST_FILE)  # checked finite: the error names the run's file
    except CheckpointError as err:
        raise ExportError(str(err)) from None

    from metaprompt.run.setup import build_setup

    setup = build_setup(cfg)  # the classifier exactly as in training (fixed prompts, label words, injection)
    data_warnings = check_data_unchanged(setup, run_dir, allow_data_change)  # the data the run was trained on?
    training = read_json(run_dir / RUN_FILE, ExportError, "run record") if (run_dir / RUN_FILE).is_file() else {}
    training = training if isinstance(training, dict) else {}
    classifier = setup.classifier
    expected = classifier.init_params()
    missing = [k for k in expected if k not in learned]
    if missing:
        raise ExportError(f"{run_dir / BEST_FILE} lacks {missing[:3]}: it does not belong to "
                          f"{run_dir / CONFIG_FILE}")
    for name, value in expected.items():
        if learned[name].shape != value.shape:
            raise ExportError(f"{run_dir / BEST_FILE}: '{name}' has shape {tuple(learned[name].shape)}, the run's "
                              f"model needs {tuple(value.shape)}")
    # Groups that were not meta-learned are constants of the classifier: export them too.
    fixed = {k: v.detach().cpu() for k, v in classifier.fixed.items()}
    bad = next((k for k, v in fixed.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:  # the learned tensors were checked when run_dir/best.safetensors was read
        raise ExportError(f"'{bad}' (a fixed tensor built from {run_dir / CONFIG_FILE} and model "
                          f"'{cfg.model.name}', not meta-learned) has non-finite values: the base model's weights "
                          "are damaged")
    tensors = {**fixed, **learned}
    dataset = setup.dataset
    splits = dataset.splits
    from metaprompt.run.setup import label_word_ids

    words = label_word_ids(setup.backbone.tokenizer, dataset.label_words)
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "export_format": fmt,
        "title": _title(cfg),
        "base_model": _base_model_facts(cfg.model.name, setup.backbone.encoder.model),
        "auto_class": "AutoModelForMaskedLM" if setup.backbone.has_mlm_head else "AutoModel",
        "template": cfg.prompt.template,
        "prompt": cfg.to_dict()["prompt"],
        "verbalizer": {**cfg.to_dict()["verbalizer"], **_verbalizer_facts(tensors)},
        "peft_method": cfg.peft.method,
        "label_words": {str(k): v for k, v in dataset.label_words.items()},
        "label_word_ids": {str(k): v for k, v in words.items()},
        "label_names": {str(k): v for k, v in splits.label_names.items()},
        "dataset": cfg.data.dataset, "data_sha256": dataset.sha256,
        "meta_train_classes": [int(c) for c in splits.train],
        "meta_val_classes": [int(c) for c in splits.val],
        "meta_test_classes": [int(c) for c in splits.test],
        "n_way": cfg.data.n_way, "k_shot": cfg.data.k_shot, "n_query": cfg.data.n_query,
        "parameters": {k: list(v.shape) for k, v in tensors.items()},
        "meta_learned": sorted(learned),
        "training": {**info, "commit": training.get("commit"), "command": training.get("command")},
        "metrics": _metrics(run_dir),
        "commit": git_commit(),
        "config": original.to_dict(),
        **({"data_change_warnings": data_warnings} if data_warnings else {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_init(staging / INIT_FILE, tensors, info)
        if fmt == "peft":
            meta["peft"] = _write_peft(staging, setup, tensors, verify)
            if not meta["peft"]["available"]:
                print(f"note: {meta['peft']['reason']}")
        meta["files"] = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        meta["files"] += [META_FILE, CARD_FILE]
        for written in staging.rglob("*.safetensors"):  # transformers' and peft's files too: same bytes every time
            canonicalize_file(written)
        (staging / META_FILE).write_text(dumps_strict(meta, indent=2), encoding="utf-8")
        (staging / CARD_FILE).write_text(model_card(meta), encoding="utf-8")
        try:
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(staging, out)
        except OSError as err:  # another export filled --out while this one was built
            raise ExportError(f"export directory {out} was written by another process meanwhile "
                              f"({err.strerror or err}); nothing was replaced: choose another --out") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _verbalizer_facts(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    if "verbalizer.log_scale" in tensors:
        facts["temperature"] = float(tensors["verbalizer.log_scale"].exp())
    facts["learned_transform"] = "verbalizer.transform" in tensors
    return facts


# -- peft ------------------------------------------------------------------------------------------
def _method(cfg: Config):
    """The PEFT method of ``cfg`` (its record in ``metaprompt.tuners``), or None."""
    from metaprompt.tuners import get_method

    return None if cfg.peft.method == "none" else get_method(cfg.peft.method)


def _backbone_kind(cfg: Config) -> str | None:
    """How the backbone is exported: 'peft' (a peft adapter), 'weights' (a modified model: full,
    bitfit, unfrozen), 'unavailable' (no peft equivalent), or None (frozen backbone)."""
    method = _method(cfg)
    if method is not None and method.export in ("peft", "unavailable"):
        return method.export
    if (method is not None and method.export == "weights") or not cfg.model.freeze_backbone:
        return "weights"
    return None


def _write_peft(out: Path, setup, tensors: dict[str, torch.Tensor], verify: bool) -> dict[str, Any]:
    """Write the peft files into ``out``; returns ``metaprompt.json["peft"]``."""
    from metaprompt.model.classifier import split_params

    cfg = setup.cfg
    backbone_kind = _backbone_kind(cfg)
    prompt = cfg.prompt.spec()
    has_prompt = prompt.has_prompt
    if has_prompt and prompt.peft_export is None:
        return {"available": False, "reason": prompt.no_peft_reason}
    if backbone_kind == "unavailable":
        return {"available": False, "reason": _method(cfg).no_peft_reason}
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
            usage["verified_max_abs_diff"] = _verify(out, setup, tensors, usage)
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
    method = _method(cfg)
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


# -- the export's own check ------------------------------------------------------------------------
@torch.no_grad()
def _verify(out: Path, setup, tensors: dict[str, torch.Tensor], usage: dict[str, Any]) -> float | None:
    """Load the written files with transformers + peft and compare ``[MASK]`` states with metaprompt's
    (on a few probe texts). None when the export is not exact (nothing to compare with)."""
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForMaskedLM

    if not usage["exact"]:
        return None
    auto = AutoModelForMaskedLM if usage["auto_class"] == "AutoModelForMaskedLM" else AutoModel
    source = str(out / usage["base_model_dir"]) if usage.get("base_model_dir") else setup.backbone.path
    model = auto.from_pretrained(source)
    if usage.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
        model = PeftModel.from_pretrained(model, str(out / BACKBONE_ADAPTER_DIR)).merge_and_unload()
    if usage["adapter"]:
        model = PeftModel.from_pretrained(model, str(out))
    model.eval()
    rows = build_peft_inputs(setup.backbone.tokenizer, usage, list(_PROBE_TEXTS))
    kwargs = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"], "output_hidden_states": True}
    if usage.get("position_ids"):
        kwargs["position_ids"] = rows["position_ids"]
    output = model(**kwargs)
    hidden = output.hidden_states[-1]
    h_peft = hidden[torch.arange(hidden.shape[0]), rows["mask_positions"] + usage["output_offset"]]
    template = setup.template
    batch = template.batch(template.tokenize_texts(list(_PROBE_TEXTS)))
    h_ours, _ = setup.classifier.encode({k: v for k, v in tensors.items()}, batch)
    return float((h_peft - h_ours).abs().max())


def build_peft_inputs(tokenizer, usage: dict[str, Any], texts: list[str]) -> dict[str, torch.Tensor]:
    """The peft model's inputs for ``texts``, following ``metaprompt.json["peft"]`` (the recipe the
    model card describes; the downstream script and the tests implement it on their own)."""
    spec = usage["input_ids"]
    prefix = " " if spec["text_leading_space"] else ""
    encoded = tokenizer([prefix + t.lstrip() if prefix else t for t in texts], add_special_tokens=False,
                        truncation=True, max_length=spec["text_max_tokens"])["input_ids"]
    rows = [spec["before_text"] + list(ids) + spec["after_text"] for ids in encoded]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    out = {"input_ids": input_ids, "attention_mask": mask,
           "mask_positions": torch.tensor([r.index(usage["mask_token_id"]) for r in rows])}
    if usage.get("position_ids"):
        out["position_ids"] = (usage["position_ids"]["start"] + torch.arange(width)).expand(len(rows), width)
    return out


# -- model card ------------------------------------------------------------------------------------
def model_card(meta: dict[str, Any]) -> str:
    base = meta["base_model"]
    names = ", ".join(f"{meta['label_names'].get(str(c), c)}" for c in meta["meta_train_classes"])
    test_names = ", ".join(f"{meta['label_names'].get(str(c), c)}" for c in meta.get("meta_test_classes", []))
    peft = meta.get("peft")
    lines = []
    if peft and peft.get("available"):
        lines += ["---", "library_name: peft", f"base_model: {base['name']}", "tags:", "- metaprompt",
                  "- few-shot-classification", "---", ""]
    lines += [
        f"# {meta['title']}",
        "",
        f"- Base model: `{base['name']}` ({base.get('class', base['model_type'])}, hidden size "
        f"{base['hidden_size']}, {base['num_hidden_layers']} layers); load it with `{meta['auto_class']}`",
        f"- Data set: `{meta['dataset']}`; meta-trained on {meta['n_way']}-way {meta['k_shot']}-shot episodes of "
        f"the classes: {names}",
        f"- Meta-test classes (never seen in meta-training): {test_names}",
        f"- Template: `{meta['template']}`",
        f"- Prompt: {_prompt_words(meta)}; PEFT method: `{meta['peft_method']}`; verbalizer: "
        f"`{meta['verbalizer']['kind']}`"
        + (f" (temperature {meta['verbalizer']['temperature']:.4g})" if "temperature" in meta["verbalizer"] else ""),
        f"- Trained at commit `{meta['training'].get('commit') or 'unknown'}`; exported at commit `{meta['commit']}`",
    ]
    metrics = meta.get("metrics") or {}
    rows = [k for k in metrics if isinstance(metrics[k], dict) and "accuracy_mean" in metrics[k]]
    if rows:
        adaptation = metrics.get("adaptation") or {}
        lines += ["", f"## Meta-test accuracy ({metrics.get('n_way')}-way {metrics.get('k_shot')}-shot, "
                      f"{metrics.get('n_episodes')} fixed episodes, mean ± 95% CI)", "",
                  "| init | accuracy (%) |", "|---|---|"]
        for key in rows:
            m = metrics[key]
            lines.append(f"| {key} | {fmt_pct(m['accuracy_mean'], m['accuracy_ci95'])} |")
        if adaptation:
            lines += ["", f"Adaptation per episode: {adaptation.get('mode')}, {adaptation.get('steps')} steps, "
                          f"lr {adaptation.get('lr')} (`metaprompt eval`)."]
    lines += ["", "## Files", ""]
    lines.append("- `init.safetensors` + `metaprompt.json`: the native init; `metaprompt.load_init(DIR)` or "
                 "`metaprompt load DIR`.")
    if peft is not None:
        lines += ["", "## Use with Hugging Face peft", ""]
        if not peft.get("available"):
            lines.append(f"No peft adapter: {peft['reason']}.")
        else:
            lines += _peft_card(peft, meta)
    lines += ["", "## Verbalizer", "", _verbalizer_card(meta), "",
              "<details><summary>Config</summary>", "", "```json", json.dumps(meta["config"], indent=1), "```",
              "", "</details>", ""]
    return "\n".join(lines)


def _prompt_words(meta: dict[str, Any]) -> str:
    prompt = meta["prompt"]
    if prompt["length"] == 0:
        return "none"
    return f"`{prompt['kind']}`, {prompt['length']} tokens"


def _peft_card(peft: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = []
    if not peft["adapter"]:
        if peft.get("base_model_dir"):
            lines.append(f"No adapter: the learned weights are a whole model in `{peft['base_model_dir']}/`; load "
                         f"it with `{peft['auto_class']}.from_pretrained(DIR/{peft['base_model_dir']})`.")
        else:
            lines.append("No adapter: only the verbalizer was meta-learned; use the base model as it is.")
    else:
        lines.append(f"peft type `{peft['peft_type']}` (`adapter_config.json` + `adapter_model.safetensors`), "
                     f"task type `{peft['task_type']}`.")
        if peft.get("base_model_dir"):
            lines.append(f"The backbone weights were meta-learned too: the base model is `{peft['base_model_dir']}/` "
                         "(a transformers model directory), not the original checkpoint.")
        if peft.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
            lines.append(f"The {peft['backbone_peft_type']} adapter is in `{BACKBONE_ADAPTER_DIR}/`; merge it into "
                         "the base model before loading the prompt adapter.")
        if peft.get("reparameterisation"):
            lines.append(f"Note: {peft['reparameterisation']}.")
    lines += ["", "```python", "import json, torch", "from peft import PeftModel",
              f"from transformers import AutoTokenizer, {peft['auto_class']}", "",
              "meta = json.load(open(f'{DIR}/metaprompt.json'))", "p = meta['peft']"]
    if peft.get("base_model_dir"):
        lines.append(f"model = {peft['auto_class']}.from_pretrained(f'{{DIR}}/{peft['base_model_dir']}')")
    else:
        lines.append(f"model = {peft['auto_class']}.from_pretrained(BASE)  # BASE: the base model above")
    if peft.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
        lines.append(f"model = PeftModel.from_pretrained(model, f'{{DIR}}/{BACKBONE_ADAPTER_DIR}').merge_and_unload()")
    if peft.get("prompt_peft_type"):
        lines.append("model = PeftModel.from_pretrained(model, DIR)  # to tune it further: see below")
    elif peft.get("backbone_adapter") == ".":
        lines.append("model = PeftModel.from_pretrained(model, DIR)  # is_trainable=True to tune it further")
    lines += ["tok = AutoTokenizer.from_pretrained(BASE)", "spec = p['input_ids']",
              "text = (' ' if spec['text_leading_space'] else '') + TEXT",
              "ids = spec['before_text'] + tok(text, add_special_tokens=False, truncation=True,",
              "                                max_length=spec['text_max_tokens']).input_ids + spec['after_text']",
              "kwargs = {'input_ids': torch.tensor([ids]),",
              "          'attention_mask': torch.ones(1, len(ids), dtype=torch.long)}"]
    if peft.get("position_ids"):
        lines.append("kwargs['position_ids'] = p['position_ids']['start'] + torch.arange(len(ids))[None]")
    lines += ["out = model(**kwargs, output_hidden_states=True)",
              "at = ids.index(p['mask_token_id']) + p['output_offset']",
              "h = out.hidden_states[-1][0, at]  # the [MASK] state; MLM logits: out.logits[0, at]", "```", ""]
    if peft.get("prompt_peft_type"):
        lines += ["To tune the prompt further, build a trainable peft model and load the weights into it "
                  "(`PeftModel.from_pretrained(..., is_trainable=True)` refuses prompt adapters):", "",
                  "```python", "from peft import PeftConfig, get_peft_model, set_peft_model_state_dict",
                  "from safetensors.torch import load_file", "config = PeftConfig.from_pretrained(DIR)",
                  "config.inference_mode = False", "model = get_peft_model(base_model, config)",
                  "set_peft_model_state_dict(model, load_file(f'{DIR}/adapter_model.safetensors'))", "```", ""]
    if peft.get("prompt_peft_type") == "PROMPT_TUNING":
        lines.append(f"The first {len(peft['start_token_ids'])} virtual token(s) hold the input embedding of the "
                     "tokenizer's start token ([CLS] / <s>), which peft would otherwise put after the prompt; "
                     "`before_text` therefore does not contain it.")
    if peft.get("position_ids"):
        lines.append(f"Positions: {peft['position_ids']['rule']}.")
    if peft["exact"]:
        check = peft.get("verified_max_abs_diff")
        checked = f" (checked at export: max |Δ| of the [MASK] states {check:.1e})." if check is not None else "."
        lines.append("This reproduces metaprompt's classifier exactly" + checked)
    else:
        lines.append(f"**Not exact:** {peft['not_exact_because']}. Equivalent metaprompt template: "
                     f"`{peft['equivalent_template']}`.")
    return lines


def _verbalizer_card(meta: dict[str, Any]) -> str:
    from metaprompt.verbalizers import VERBALIZERS

    v = meta["verbalizer"]
    words = "`metaprompt.json` has the label words of every class (`label_words`) and their word-piece ids " \
            "(`label_word_ids`)."
    if v["kind"] not in VERBALIZERS:  # an export read by a version without this kind
        return words
    return f"{VERBALIZERS.get(v['kind']).card(v)} {words}"


__all__ = ["EXPORT_FORMAT", "FORMATS", "ExportError", "build_peft_inputs", "export_run", "model_card"]
