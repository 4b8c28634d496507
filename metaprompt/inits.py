"""A learned init on disk and back: ``save_init(clf, init, DIR)`` and ``clf, init = load_init(DIR)``;
``export_peft(clf, init, DIR)`` writes it as files Hugging Face ``peft`` loads.

A saved init is a folder with ``init.safetensors`` (the tensors and, in its metadata, how to
build the classifier again: backbone name, template, the prompt, verbalizer and tuner specs,
label words). :func:`load_init` also reads the exports of ``metaprompt export`` (a folder
with ``metaprompt.json``; their classifier is built from the run's config, see
:mod:`metaprompt.load`). Nothing is unpickled: spec classes are looked up by name, inside
the ``metaprompt`` package only.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Mapping

import torch

from metaprompt.errors import UserError
from metaprompt.model.backbone import Backbone
from metaprompt.model.classifier import PromptClassifier
from metaprompt.model.template import Template
from metaprompt.run.checkpoint import read_init_file
from metaprompt.run.checkpoint import write_init_file

INIT_FILE = "init.safetensors"
EXPORT_META = "metaprompt.json"


class InitLoadError(UserError, ValueError):
    """A saved init cannot be read or does not describe a classifier."""


def _spec(obj) -> dict[str, Any] | None:
    if obj is None or isinstance(obj, str):  # a tuner may be named
        return obj
    cls = type(obj)
    if not dataclasses.is_dataclass(obj) or not cls.__module__.startswith("metaprompt."):
        raise TypeError(f"save_init: {cls.__name__} is not one of metaprompt's spec classes (a dataclass in the "
                        "metaprompt package); build the classifier from specs to save it")
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "fields": dataclasses.asdict(obj)}


def _from_spec(entry: Mapping[str, Any] | None, where: Path):
    if entry is None or isinstance(entry, str):
        return entry
    module, _, name = str(entry.get("class", "")).partition(":")
    if not module.startswith("metaprompt.") or not name.isidentifier():
        raise InitLoadError(f"{where}: spec class {entry.get('class')!r} is not in the metaprompt package")
    try:
        cls = getattr(importlib.import_module(module), name)
        return cls(**entry.get("fields", {}))
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        raise InitLoadError(f"{where}: cannot rebuild spec {entry.get('class')!r}: {err}") from None


def describe(classifier: PromptClassifier) -> dict[str, Any]:
    """What :func:`load_init` needs to build ``classifier`` again (JSON-ready)."""
    if classifier._prompt_spec is None or classifier._verbalizer_spec is None:
        raise TypeError("save_init: this classifier was built from bound components (the CLI's setup); "
                        "save a run's init with `metaprompt export`")
    t = classifier.template
    return {"backbone": classifier.backbone.facts(), "backbone_path": classifier.backbone.path,
            "template": {"text": t.template, "max_length": t.max_length, "max_text_tokens": t.max_text_tokens},
            "prompt": _spec(classifier._prompt_spec), "verbalizer": _spec(classifier._verbalizer_spec),
            "tuner": _spec(classifier.tuner), "learn": list(classifier.learn), "seed": classifier.seed,
            "label_words": {str(c): w for c, w in classifier.label_words.items()},
            "train_classes": list(classifier.train_classes), "length_buckets": classifier.length_buckets}


def save_init(classifier: PromptClassifier, init: Mapping[str, torch.Tensor], folder: str | Path,
              info: Mapping[str, Any] | None = None) -> Path:
    """Write ``init`` and the description of ``classifier`` to ``folder/init.safetensors`` (atomic)."""
    path = Path(folder) / INIT_FILE
    expected = classifier.init_params()
    missing = [k for k in expected if k not in init]
    if missing:
        raise ValueError(f"save_init: the init lacks {missing[:3]}, which this classifier learns")
    write_init_file(path, {k: v.detach() for k, v in init.items()},
                    {**(info or {}), "classifier": describe(classifier)})
    return path


def load_init(folder: str | Path, backbone: Backbone | None = None,
              device: torch.device | str = "cpu") -> tuple[PromptClassifier, dict[str, torch.Tensor]]:
    """The classifier and the init saved in ``folder`` (by :func:`save_init`, or a ``metaprompt
    export``). ``backbone``: one already loaded (it must have the saved architecture sizes)."""
    folder = Path(folder)
    if (folder / EXPORT_META).is_file():
        from metaprompt.load import load_export

        export = load_export(folder)
        setup = export.build_setup(f"model.device={device}")
        return setup.classifier, export.params(setup)
    if not (folder / INIT_FILE).is_file():
        raise InitLoadError(f"{folder}: no {INIT_FILE} or {EXPORT_META}; not a saved init")
    tensors, info = read_init_file(folder / INIT_FILE)
    spec = info.get("classifier")
    if not isinstance(spec, dict):
        raise InitLoadError(f"{folder / INIT_FILE}: no classifier description (written by an older metaprompt?)")
    where = folder / INIT_FILE
    try:
        facts = spec["backbone"]
        if backbone is None:
            backbone = Backbone.from_pretrained(facts["name"], trust_remote_code=False)
        here = backbone.facts()
        wrong = [k for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size") if here[k] != facts[k]]
        if wrong:
            raise InitLoadError(f"{where} was saved for base model '{facts['name']}' and does not fit "
                                f"'{here['name']}' ({', '.join(f'{k} {here[k]} ≠ {facts[k]}' for k in wrong)})")
        classifier = PromptClassifier(
            backbone, Template(**spec["template"]), _from_spec(spec["prompt"], where),
            _from_spec(spec["verbalizer"], where), tuner=_from_spec(spec["tuner"], where), learn=spec["learn"],
            seed=spec["seed"], device=device, label_words={int(c): w for c, w in spec["label_words"].items()},
            train_classes=spec["train_classes"], length_buckets=spec["length_buckets"])
    except (KeyError, TypeError) as err:
        raise InitLoadError(f"{where}: the classifier description is damaged ({type(err).__name__}: {err})") from None
    expected = classifier.init_params()
    for name, value in expected.items():
        if name not in tensors or tensors[name].shape != value.shape:
            raise InitLoadError(f"{where}: '{name}' is missing or has another shape than the classifier needs")
    return classifier, {k: v.to(classifier.device) for k, v in tensors.items()}


def export_peft(classifier: PromptClassifier, init: Mapping[str, torch.Tensor], folder: str | Path,
                verify: bool = True) -> dict[str, Any]:
    """Write ``init`` of ``classifier`` as files Hugging Face ``peft`` loads (a prompt-tuning or
    prefix adapter, a LoRA / IA3 adapter, the verbalizer's tensors), as ``metaprompt export
    --format peft`` does for a run; returns how to use them (also written to ``folder/peft.json``).
    ``verify``: load the files with peft and compare its states with metaprompt's.

    The classifier must be built from specs, with ``tuner`` None or a method's name."""
    import json
    from types import SimpleNamespace

    from metaprompt.config import Config
    from metaprompt.config.sections import PromptConfig
    from metaprompt.run.export.formats import ExportError
    from metaprompt.run.export.peft_files import write_peft

    spec = classifier._prompt_spec or classifier.prompt.spec
    if classifier.tuner is not None and not isinstance(classifier.tuner, str):
        raise TypeError("export_peft: build the classifier with tuner=<method name> (e.g. 'lora') to export it; "
                        "settings objects are not mapped to a peft config here")
    prompt_keys = {f.name for f in dataclasses.fields(PromptConfig)}
    prompt = {k: v for k, v in dataclasses.asdict(spec).items() if k in prompt_keys}
    backbone = classifier.backbone
    cfg = Config.from_dict({
        "model": {"name": backbone.path, "mlm_head": "yes" if backbone.has_mlm_head else "no",
                  "freeze_backbone": classifier.backbone_trainable is None or classifier.tuner is not None,
                  "max_length": classifier.template.max_length},
        "prompt": {**prompt, "kind": spec.kind, "template": classifier.template.template},
        "peft": {"method": classifier.tuner or "none"}}, source="export_peft")
    setup = SimpleNamespace(cfg=cfg, backbone=backbone, classifier=classifier, template=classifier.template)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    usage = write_peft(folder, setup, {k: v.detach() for k, v in init.items()}, verify)
    if not usage.get("available", True):
        raise ExportError(f"export_peft: no peft equivalent: {usage['reason']}")
    (folder / "peft.json").write_text(json.dumps(usage, indent=2), encoding="utf-8")
    return usage
