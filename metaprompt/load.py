"""Read an export back: ``load_export(DIR)`` and ``metaprompt load DIR``.

Works on both export formats (``metaprompt export --format native|peft``): every export holds
the native files (``init.safetensors`` + ``metaprompt.json``), and a peft export's extra files
are checked too. Everything is checked when the export is read, so a corrupted file (a
truncated safetensors, bad JSON) or a mismatched one (another base model, another hidden size)
fails here with a message that names the file, not later inside a forward pass. Nothing is
unpickled: safetensors and JSON only.

>>> export = load_export("exports/huffpost")                   # doctest: +SKIP
>>> setup = export.build_setup("data.dataset=custom", "data.path=my.jsonl", "data.splits=splits.json")
>>> params = export.params(setup)  # the meta-learned init, ready for the inner loop or prompt tuning
>>> task = setup.task(setup.sampler("test", seed=0).episode(0))
>>> logits = setup.classifier(params, task.query, task)

``metaprompt.load_init(DIR)`` does the same in one call and returns ``(classifier, init)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metaprompt.compat import PEFT_PROMPT_KEY
from metaprompt.model.backbone import ARCHITECTURE_FACTS
from metaprompt.run.export import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, BACKBONE_ADAPTER_DIR, EXPORT_FORMAT, INIT_FILE,
                                   META_FILE, VERBALIZER_FILE, ExportError)

if TYPE_CHECKING:
    from metaprompt.config import Config
    from metaprompt.run.setup import Setup



class LoadError(ExportError):
    """An export directory is missing, corrupted, or does not match the model it is used with."""


@dataclass
class ExportedInit:
    """A loaded export: the tensors, the config they were learned with, and what the export says.

    ``tensors``: the init, named as in training (``prompt.*``, ``verbalizer.*``, ``backbone.*``).
    ``config``: the run's :class:`~metaprompt.config.Config`. ``meta``: ``metaprompt.json``.
    ``format``: ``native`` or ``peft`` (the peft files' usage is in ``meta["peft"]``).
    """

    path: Path
    meta: dict[str, Any]
    config: "Config"
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]

    @property
    def format(self) -> str:
        return self.meta.get("export_format", "native")

    @property
    def base_model(self) -> dict[str, Any]:
        return self.meta["base_model"]

    def build_setup(self, *overrides: str) -> "Setup":
        """Data, backbone, template and classifier from the export's config and ``key=value``
        ``overrides`` (a new data set: ``data.dataset=custom``, ``data.path=...``, ``data.splits=...``;
        ``model.name`` may point to a local copy of the same base model)."""
        from metaprompt.config import ConfigError
        from metaprompt.run.setup import build_setup

        cfg = self._config(overrides)
        if cfg.model.name != self.config.model.name:
            check_base_model(self.meta, cfg.model.name, where=str(self.path))
        try:
            setup = build_setup(cfg)
        except ConfigError as err:
            raise LoadError(f"{self.path}: {err}") from None
        self._check_against(setup)
        return setup

    def params(self, setup: "Setup") -> dict[str, torch.Tensor]:
        """The init as fresh leaf tensors (``requires_grad``) on the setup's device: exactly what
        ``setup.classifier`` adapts and meta-learns (names and shapes are checked)."""
        expected = self._check_against(setup)
        return {k: self.tensors[k].to(setup.device, v.dtype).clone().requires_grad_(True) for k, v in expected.items()}

    def _config(self, overrides) -> "Config":
        from metaprompt.config import Config, ConfigError, apply_override

        data = copy.deepcopy(self.meta["config"])
        try:
            for item in overrides:
                apply_override(data, item)
            return Config.from_dict(data, source=str(self.path / META_FILE))
        except ConfigError as err:
            raise LoadError(str(err)) from None

    def _check_against(self, setup: "Setup") -> dict[str, torch.Tensor]:
        expected = setup.classifier.init_params()
        missing = [k for k in expected if k not in self.tensors]
        if missing:
            raise LoadError(f"{self.path}: the export lacks {missing[:3]}, which this config's classifier needs "
                            "(an override changed the prompt, verbalizer or PEFT settings?)")
        for name, value in expected.items():
            if tuple(self.tensors[name].shape) != tuple(value.shape):
                raise LoadError(
                    f"{self.path}: '{name}' has shape {tuple(self.tensors[name].shape)}, but model "
                    f"'{setup.cfg.model.name}' needs {tuple(value.shape)}; the export was made for "
                    f"'{self.base_model['name']}' (hidden size {self.base_model['hidden_size']})")
        return expected

    def describe(self) -> str:
        """What the export holds, for people (``metaprompt load DIR`` prints it)."""
        from metaprompt.run.stats import fmt_pct

        m = self.meta
        base = m["base_model"]
        lines = [m.get("title", "metaprompt export"), "",
                 f"directory:    {self.path} ({self.format} export)",
                 f"base model:   {base['name']} ({base.get('class', base['model_type'])}, "
                 f"hidden {base['hidden_size']}, {base['num_hidden_layers']} layers, vocabulary {base['vocab_size']}; "
                 f"{m.get('auto_class')})",
                 f"template:     {m['template']}",
                 f"prompt:       "
                 + (f"{m['prompt']['kind']}, {m['prompt']['length']} tokens" if m["prompt"]["length"] else "none")
                 + f"; PEFT method {m.get('peft_method')}",
                 f"verbalizer:   {m['verbalizer']['kind']}"
                 + (f", temperature {m['verbalizer']['temperature']:.4g}" if "temperature" in m["verbalizer"] else ""),
                 f"data set:     {m['dataset']}, {m['n_way']}-way {m['k_shot']}-shot; meta-train classes "
                 f"{m['meta_train_classes']}, meta-test classes {m.get('meta_test_classes')}",
                 f"training:     step {self.info.get('step')}, validation accuracy "
                 + (f"{100 * self.info['val_accuracy']:.1f}%" if isinstance(self.info.get("val_accuracy"), float)
                    else "unknown"),
                 f"commit:       trained {m.get('training', {}).get('commit') or 'unknown'}, "
                 f"exported {m.get('commit')}",
                 "", "tensors:"]
        learned = set(m.get("meta_learned", self.tensors))
        width = max(map(len, self.tensors), default=0)
        for name, value in self.tensors.items():
            lines.append(f"  {name:<{width}}  {str(tuple(value.shape)):<14} "
                         f"{'meta-learned' if name in learned else 'fixed'}")
        metrics = m.get("metrics") or {}
        rows = [k for k, v in metrics.items() if isinstance(v, dict) and "accuracy_mean" in v]
        if rows:
            lines += ["", f"meta-test accuracy ({metrics.get('n_episodes')} episodes, mean ± 95% CI):"]
            lines += [f"  {k:<40} {fmt_pct(metrics[k]['accuracy_mean'], metrics[k].get('accuracy_ci95'))} %"
                      for k in rows]
        peft = m.get("peft")
        if peft is not None:
            lines.append("")
            if not peft.get("available"):
                lines.append(f"peft: none ({peft['reason']})")
            else:
                exact = "exact" if peft["exact"] else f"NOT exact ({peft['not_exact_because']})"
                lines.append(f"peft: {peft['peft_type'] or 'no adapter'}, {exact}")
                lines.append(f"  {peft['how_to']}")
        return "\n".join(lines)


def load_export(path: str | Path, model: str | None = None) -> ExportedInit:
    """Read and check an export directory (native or peft format).

    ``model``: the base model you will use it with (hub id, directory or alias); its config is
    compared with the export's base model (type, hidden size, layers, vocabulary) and a mismatch
    raises :class:`LoadError`."""
    from metaprompt.config import Config, ConfigError
    from metaprompt.run.checkpoint import CheckpointError
    from metaprompt.run.checkpoint import read_init_file as read_init

    path = Path(path)
    if not path.is_dir():
        raise LoadError(f"{path}: not a directory (an export is a directory written by `metaprompt export`)")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        hint = (" It holds a peft adapter but no metaprompt.json: load it with peft, or export with metaprompt."
                if (path / ADAPTER_CONFIG).is_file() else "")
        raise LoadError(f"{path}: no {META_FILE}; not a metaprompt export.{hint}")
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise LoadError(f"{meta_path}: not a metaprompt export (format {got!r}, expected {EXPORT_FORMAT!r})")
    from metaprompt.fields import FileFormatError, check_export_meta

    try:  # every field this module reads, with its type: a hand-edited file fails here, naming the field
        check_export_meta(meta, meta_path)
    except FileFormatError as err:
        raise LoadError(str(err)) from None
    try:
        tensors, info = read_init(path / INIT_FILE)  # checked: readable, finite, floating, named fields
    except CheckpointError as err:
        raise LoadError(str(err)) from None
    _check_tensors(path, meta, tensors)
    try:
        config = Config.from_dict(copy.deepcopy(meta["config"]), source=str(meta_path))
    except ConfigError as err:
        raise LoadError(str(err)) from None
    if meta.get("export_format") == "peft":
        _check_peft_files(path, meta)
    if model is not None:
        check_base_model(meta, model, where=str(path))
    return ExportedInit(path=path, meta=meta, config=config, tensors=tensors, info=info)


def _read_json(path: Path) -> Any:
    from metaprompt.run.jsonio import read_json

    try:
        return read_json(path, LoadError, "export file")
    except LoadError as err:
        raise LoadError(f"{err}; the export is corrupted, export it again") from None


def _check_tensors(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """The tensors agree with metaprompt.json: names, shapes, and the base model's sizes."""
    recorded = {k: tuple(v) for k, v in meta["parameters"].items()}
    actual = {k: tuple(v.shape) for k, v in tensors.items()}
    if recorded.keys() != actual.keys():
        diff = sorted(set(recorded) ^ set(actual))
        raise LoadError(f"{path}: {INIT_FILE} and {META_FILE} disagree on the tensors ({diff[:3]})")
    for name in recorded:
        if recorded[name] != actual[name]:
            raise LoadError(f"{path}: '{name}' is {actual[name]} in {INIT_FILE} but {recorded[name]} in {META_FILE}")
    base = meta["base_model"]
    hidden, layers = base.get("hidden_size"), base.get("num_hidden_layers")
    checks = {"prompt.embeds": -1, "prompt.prefix": -1, "prompt.prompts": -1, "prompt.keys": -1,
              "verbalizer.transform": -1, "verbalizer.bias": -1}
    for name, dim in checks.items():
        if name in tensors and tensors[name].shape[dim] != hidden:
            raise LoadError(f"{path}: '{name}' has hidden size {tensors[name].shape[dim]}, but the export's base "
                            f"model '{base.get('name')}' has hidden size {hidden}: mismatched files")
    if "prompt.prefix" in tensors and tensors["prompt.prefix"].shape[0] != layers:
        raise LoadError(f"{path}: 'prompt.prefix' has {tensors['prompt.prefix'].shape[0]} layers, the base model "
                        f"'{base.get('name')}' has {layers}")


def _check_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    from metaprompt.run.tensorfile import CheckpointError, check_finite

    if not path.is_file():
        raise LoadError(f"{path}: missing (the export lists it)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            if path.stat().st_size < 50_000_000:  # small files: read every tensor (catches a torn body, NaN, inf)
                check_finite({key: handle.get_tensor(key) for key in handle.keys()}, path, reading=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        message = str(err) if isinstance(err, CheckpointError) else \
            f"{path}: not a readable safetensors file ({err}); the export is corrupted"
        raise LoadError(message) from None
    return shapes


def _check_peft_files(path: Path, meta: dict[str, Any]) -> None:
    peft = meta.get("peft") or {}
    if not peft.get("available"):
        return
    base = meta["base_model"]
    adapters = [path] if peft.get("adapter") else []
    if peft.get("backbone_adapter") == BACKBONE_ADAPTER_DIR:
        adapters.append(path / BACKBONE_ADAPTER_DIR)
    for folder in adapters:
        config = _read_json(folder / ADAPTER_CONFIG) if (folder / ADAPTER_CONFIG).is_file() else None
        if not isinstance(config, dict) or "peft_type" not in config:
            raise LoadError(f"{folder / ADAPTER_CONFIG}: missing or not a peft adapter config")
        shapes = _check_safetensors(folder / ADAPTER_WEIGHTS)
        if config.get("token_dim") not in (None, base["hidden_size"]):
            raise LoadError(f"{folder / ADAPTER_CONFIG}: token_dim {config['token_dim']} but the base model "
                            f"'{base['name']}' has hidden size {base['hidden_size']}")
        if config["peft_type"] in ("PROMPT_TUNING", "PREFIX_TUNING"):
            layers = 2 * base["num_hidden_layers"] if config["peft_type"] == "PREFIX_TUNING" else 1
            width = base["hidden_size"] * layers
            got = shapes.get(PEFT_PROMPT_KEY)
            if got != (config.get("num_virtual_tokens"), width):
                raise LoadError(f"{folder / ADAPTER_WEIGHTS}: {PEFT_PROMPT_KEY} is {got}, expected "
                                f"({config.get('num_virtual_tokens')}, {width}) for '{base['name']}'")
    _check_safetensors(path / VERBALIZER_FILE)
    if peft.get("base_model_dir"):
        folder = path / peft["base_model_dir"]
        if not (folder / "config.json").is_file():
            raise LoadError(f"{folder}: no config.json (the learned base model is missing)")
        _read_json(folder / "config.json")
        for weights in sorted(folder.glob("*.safetensors")):
            _check_safetensors(weights)


def check_base_model(meta: dict[str, Any], model: str, where: str) -> None:
    """Compare a base model's config with the export's; raise :class:`LoadError` on a mismatch."""
    from transformers import AutoConfig

    from metaprompt.model.backbone import ModelLoadError, resolve_model_path

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(model))
    except (OSError, ValueError, ModelLoadError) as err:
        raise LoadError(f"cannot read the config of model '{model}': {str(err).splitlines()[0]}") from None
    base = meta["base_model"]
    wrong = [f"{key} {getattr(config, key, None)!r} ≠ {base.get(key)!r}" for key in ARCHITECTURE_FACTS
             if getattr(config, key, None) != base.get(key)]
    if wrong:
        raise LoadError(f"{where} was exported for base model '{base.get('name')}' and does not fit '{model}': "
                        + ", ".join(wrong) + " (this model's value ≠ the export's)")
