"""Export a learned init for downstream prompt tuning.

``native``: ``init.safetensors`` (the meta-parameters, names as in training) and
``metaprompt.json`` (base model, template, prompt and verbalizer settings, label words,
metrics, config, commit), plus a model card ``README.md``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaprompt.config import Config
from metaprompt.run.checkpoint import load_init, save_init
from metaprompt.run.provenance import git_commit
from metaprompt.run.train import BEST_FILE, CONFIG_FILE

EXPORT_FORMAT = "metaprompt.export/v1"
INIT_FILE = "init.safetensors"
META_FILE = "metaprompt.json"


class ExportError(ValueError):
    pass


def _base_model_facts(name: str) -> dict[str, Any]:
    from transformers import AutoConfig

    from metaprompt.model.backbone import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(name))
    return {"name": name, "model_type": config.model_type, "hidden_size": config.hidden_size,
            "vocab_size": config.vocab_size, "num_hidden_layers": config.num_hidden_layers}


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "native") -> Path:
    run_dir, out = Path(run_dir), Path(out)
    if fmt != "native":
        raise ExportError(f"export format '{fmt}' is not available (available: native)")
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / BEST_FILE).is_file():
        raise ExportError(f"{run_dir} is not a trained run (needs {CONFIG_FILE} and {BEST_FILE})")
    cfg = Config.load(run_dir / CONFIG_FILE)
    tensors, info = load_init(run_dir / BEST_FILE)
    from metaprompt.run.setup import load_data

    dataset = load_data(cfg)
    results_path = run_dir / "results.json"
    metrics = {}
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        metrics = {r["init"]: {"accuracy_mean": r["accuracy_mean"], "accuracy_ci95": r["accuracy_ci95"]}
                   for r in results.get("results", [])}
        metrics["n_episodes"] = results.get("n_episodes")
    meta = {
        "format": EXPORT_FORMAT,
        "base_model": _base_model_facts(cfg.model.name),
        "template": cfg.prompt.template,
        "prompt": cfg.to_dict()["prompt"],
        "verbalizer": cfg.to_dict()["verbalizer"],
        "label_words": {str(k): v for k, v in dataset.label_words.items()},
        "label_names": {str(k): v for k, v in dataset.splits.label_names.items()},
        "dataset": cfg.data.dataset, "meta_train_classes": list(dataset.splits.train),
        "n_way": cfg.data.n_way, "k_shot": cfg.data.k_shot,
        "parameters": {k: list(v.shape) for k, v in tensors.items()},
        "training": info, "metrics": metrics, "commit": git_commit(), "config": cfg.to_dict(),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_init(out / INIT_FILE, tensors, info)
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (out / "README.md").write_text(_model_card(meta), encoding="utf-8")
    return out


def _model_card(meta: dict[str, Any]) -> str:
    names = ", ".join(meta["label_names"][str(c)] for c in meta["meta_train_classes"])
    lines = [
        f"# Meta-learned soft-prompt init ({meta['prompt']['kind']}, {meta['verbalizer']['kind']} verbalizer)",
        "",
        f"- Base model: `{meta['base_model']['name']}` ({meta['base_model']['model_type']}, "
        f"hidden size {meta['base_model']['hidden_size']})",
        f"- Meta-trained on `{meta['dataset']}`, {meta['n_way']}-way {meta['k_shot']}-shot episodes of the classes: {names}",
        f"- Template: `{meta['template']}`",
        f"- Commit: `{meta['commit']}`",
    ]
    if meta["metrics"]:
        lines += ["", "| init | test accuracy (%) |", "|---|---|"]
        for init in ("pretrained", "meta"):
            if init in meta["metrics"]:
                m = meta["metrics"][init]
                lines.append(f"| {init} | {100 * m['accuracy_mean']:.1f} ± {100 * m['accuracy_ci95']:.1f} |")
        lines.append(f"\n({meta['metrics'].get('n_episodes')} fixed test episodes, mean ± 95% CI)")
    lines += ["", "Files: `init.safetensors` (tensors), `metaprompt.json` (everything else). "
              "Load with `metaprompt.load_init(DIR)`.", ""]
    return "\n".join(lines)
