"""Describing rows: the settings that tell them apart, as short text, and the order they are shown in.

The order is this project's: the data sets and studies in the order of ``experiments/studies.py``.
"""
from __future__ import annotations

from typing import Sequence

from studies import DATASETS, STUDIES

from .entries import Entry


def describe(entry: Entry) -> dict[str, str | None]:
    """The settings that tell rows apart, as short strings."""
    cfg = entry.cfg
    prompt, verb, meta = cfg.get("prompt") or {}, cfg.get("verbalizer") or {}, cfg.get("meta") or {}
    model, peft = cfg.get("model") or {}, cfg.get("peft") or {}
    method = entry.results.get("method") or peft.get("method") or "metaprompting"
    kind = entry.results.get("prompt") or prompt.get("kind", "?")
    length = prompt.get("length")
    if method not in ("metaprompting", "none") and not length and kind == "embedding":
        prompt_text = "no prompt"
    else:
        prompt_text = f"{kind}×{length}" + (f"×{prompt.get('pool_size')}" if kind == "pool" else "")
    template = prompt.get("template_id")
    adapt = entry.results.get("adaptation") or {}
    adapt_text = adapt.get("mode", "?")
    if adapt.get("mode") == "sgd":
        adapt_text += f" {adapt.get('steps')}×{adapt.get('lr'):g}" if adapt.get("lr") is not None else ""
    out = {
        "method": None if method in ("metaprompting", "none") else method,  # a PEFT baseline's name
        "prompt": prompt_text,
        "verbalizer": entry.results.get("verbalizer") or verb.get("kind", "?"),
        # a PEFT method names what it adapts of the backbone itself
        "backbone": None if method not in ("metaprompting", "none")
        else ("frozen" if model.get("freeze_backbone", True) else "tuned"),
        # no meta-learned init scored: the algorithm played no part
        "algorithm": (entry.results.get("algorithm") or meta.get("algorithm", "?")) if entry.row("meta") else None,
        "template": f"T{template}" if template is not None else "custom",
        "adaptation": adapt_text,
    }
    if entry.out_of_distribution:
        out["meta-trained on"] = str(entry.results.get("meta_train_dataset"))
    return out


def config_text(entry: Entry, keys: Sequence[str] | None = None) -> str:
    d = describe(entry)
    keys = keys or list(d)
    parts = []
    for key in keys:
        value = d.get(key)
        if value is None:
            continue
        if key == "method":
            parts.append(value)
        elif key == "prompt":
            parts.append(value)
        elif key == "verbalizer":
            parts.append(f"{value} verb.")
        elif key == "backbone":
            parts.append(f"backbone {value}")
        elif key == "meta-trained on":
            parts.append(f"meta-trained on {value}")
        else:
            parts.append(value)
    return ", ".join(parts)


def varying_keys(entries: Sequence[Entry]) -> list[str]:
    """Description fields that differ between entries (for short plot labels)."""
    descs = [describe(e) for e in entries]
    keys = list(dict.fromkeys(k for d in descs for k in d))
    return [k for k in keys if len({d.get(k) for d in descs}) > 1]



def _rank(name: str, order: Sequence[str]) -> int:
    return order.index(name) if name in order else len(order)


def dataset_key(name: str) -> tuple:
    return (_rank(name, DATASETS), name)


def order_key(entry: Entry) -> tuple:
    """Rows in the order of this project's data sets, then shot, then config."""
    return (*dataset_key(entry.dataset), entry.k_shot, config_text(entry), entry.cell)


def study_key(entry: Entry) -> tuple:
    """Studies in the order of experiments/studies.py (others after them, by name), then rows."""
    return (_rank(entry.study, STUDIES), entry.study, *order_key(entry))
