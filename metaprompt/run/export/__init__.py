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

This module writes the native files; :mod:`~metaprompt.run.export.peft_files` the peft files
(asking each prompt kind and PEFT method how it maps), :mod:`~metaprompt.run.export.verify`
checks them, :mod:`~metaprompt.run.export.card` writes the model card, and
:mod:`~metaprompt.run.export.formats` names the files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from metaprompt.config import Config
from metaprompt.run.checkpoint import CheckpointError, read_init_file, write_init_file
from metaprompt.run.export.card import model_card
from metaprompt.run.export.formats import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, BACKBONE_ADAPTER_DIR, BASE_MODEL_DIR,
                                           CARD_FILE, EXPORT_FORMAT, FORMATS, INIT_FILE, META_FILE, PEFT_TASK_TYPE,
                                           VERBALIZER_FILE, ExportError)
from metaprompt.run.export.peft_files import method_of, write_peft
from metaprompt.run.export.verify import build_peft_inputs
from metaprompt.run.integrity import check_data_unchanged
from metaprompt.run.jsonio import dumps_strict, read_json
from metaprompt.run.provenance import git_commit
from metaprompt.run.rundir import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, RESULTS_FILE, RUN_FILE, owned
from metaprompt.run.tensorfile import canonicalize_file

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
    method = method_of(cfg)
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
    from metaprompt.fields import FileFormatError
    from metaprompt.results import check_results

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
        learned, info = read_init_file(run_dir / BEST_FILE)  # checked finite: the error names the run's file
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
    from metaprompt.model.template import label_word_ids

    words = label_word_ids(setup.backbone.tokenizer, dataset.label_words)
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "export_format": fmt,
        "title": _title(cfg),
        "base_model": _base_model_facts(cfg.model.name, setup.backbone.encoder.model),
        "auto_class": "AutoModelForMaskedLM" if setup.backbone.has_mlm_head else "AutoModel",
        "template": cfg.prompt.template,
        "prompt": cfg.to_dict()["prompt"],
        "verbalizer": {**cfg.to_dict()["verbalizer"], **_verbalizer_facts(tensors, setup.template.reads_mask)},
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
        write_init_file(staging / INIT_FILE, tensors, info)
        if fmt == "peft":
            meta["peft"] = write_peft(staging, setup, tensors, verify)
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


def _verbalizer_facts(tensors: dict[str, torch.Tensor], reads_mask: bool) -> dict[str, Any]:
    """What the model card says of the learned verbalizer: its temperature, learned label-word share,
    and the state it reads (the [MASK] state, or the mean-pooled text states of a template without one)."""
    facts: dict[str, Any] = {"readout": "mask" if reads_mask else "mean_pooled"}
    if "verbalizer.log_scale" in tensors:
        facts["temperature"] = float(tensors["verbalizer.log_scale"].exp())
    if "verbalizer.label_word_logit" in tensors:
        facts["learned_label_word_share"] = float(torch.sigmoid(tensors["verbalizer.label_word_logit"]))
    if "verbalizer.log_lambda" in tensors:
        facts["ridge_lambda"] = float(tensors["verbalizer.log_lambda"].exp())
    facts["learned_transform"] = "verbalizer.transform" in tensors
    return facts


__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "BACKBONE_ADAPTER_DIR", "BASE_MODEL_DIR", "CARD_FILE", "EXPORT_FORMAT",
           "FORMATS", "INIT_FILE", "META_FILE", "PEFT_TASK_TYPE", "VERBALIZER_FILE", "ExportError",
           "build_peft_inputs", "export_run", "model_card"]
