"""Loading: the results files under the given paths, each with what lies next to it.

Each path is a run directory (its ``results.json``), a results JSON file, or a folder searched
recursively for them. A study is the results' ``label`` (config key ``label``), else the first
folder below the searched folder (``results/<study>/<cell>/results.json``). A run directory's
``train_summary.json`` (or ``metrics.jsonl``) and ``run.json`` next to the results file give the
validation curve, the meta-training time and the training command.

Two rows may borrow from another one scored on the same episodes (:func:`attach_references`,
:func:`attach_pretrained`): scores that depend on nothing the two rows differ in are computed once.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from metaprompt.config import Config, ConfigError
from metaprompt.errors import UserError
from metaprompt.fields import FileFormatError
from metaprompt.results import is_results, read_results, score
from metaprompt.run.provenance import drift_message, version_drift

SKIP_DIRS = {".git", ".venv", "__pycache__", "wandb", "export"}
NOT_RESULTS = ("train_summary.json", "run.json", "study.json", "costs.json")  # JSON files beside results

log = logging.getLogger(__name__)


class ReportError(UserError, ValueError):
    """Nothing to report, or an input that is not a results JSON."""


@dataclass
class Entry:
    """One results JSON and what lies next to it."""

    path: Path
    results: dict[str, Any]
    study: str
    cell: str
    summary: dict[str, Any] | None = None  # train_summary.json
    run_info: dict[str, Any] | None = None  # run.json
    curve: list[dict[str, Any]] = field(default_factory=list)  # validation points
    reference: dict[str, Any] | None = None
    reference_from: str | None = None  # cell whose identical reference row is borrowed
    pretrained_from: str | None = None  # cell whose identical pretrained-init row is borrowed
    borrowed: dict[str, dict[str, Any]] = field(default_factory=dict)
    cfg: dict[str, Any] = field(default_factory=dict)  # the run's config, see effective_config
    baselines: list[Any] = field(default_factory=list)  # practitioner baselines on its episodes (.baselines)

    def row(self, init: str) -> dict[str, Any] | None:
        own = score(self.results, init)
        return own if own is not None else self.borrowed.get(init)

    @property
    def dataset(self) -> str:
        return str(self.results["dataset"])

    @property
    def k_shot(self) -> int:
        return int(self.results["k_shot"])

    @property
    def block(self) -> tuple:
        """Rows with the same block are scored on the same test episodes."""
        return (self.dataset, self.results.get("n_way"), self.k_shot, self.results.get("episodes_sha256"))

    @property
    def out_of_distribution(self) -> bool:
        trained = self.results.get("meta_train_dataset")
        return bool(trained) and trained != self.dataset



def read_json_or_none(path: Path) -> Any:
    """Parsed JSON, or None for a file that is unreadable or not JSON (while searching for results)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_results(paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(results file, the searched folder it was found under) for every argument."""
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if not is_results(read_json_or_none(path)):
                raise ReportError(f"{path} is not a results JSON (from `metaprompt eval` or `metaprompt baseline`)")
            found.append((path, path.parent))
        elif path.is_dir():
            if (path / "results.json").is_file():
                found.append((path / "results.json", path))
                continue
            hits = []
            for candidate in sorted(path.rglob("*.json")):
                if SKIP_DIRS & set(candidate.relative_to(path).parts):
                    continue
                if candidate.name in NOT_RESULTS:
                    continue
                if is_results(read_json_or_none(candidate)):
                    hits.append((candidate, path))
            if not hits:
                raise ReportError(f"no results JSON under {path}")
            found += hits
        else:
            raise ReportError(f"{path} does not exist")
    unique, seen = [], set()
    for item in found:
        key = item[0].resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _curve(folder: Path, summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    if summary and summary.get("validation"):
        return list(summary["validation"])
    metrics = folder / "metrics.jsonl"
    points = []
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "val_accuracy" in record:
                points.append(record)
    return points


def effective_config(results: dict[str, Any]) -> dict[str, Any]:
    """The config stored in a results file, rebuilt through ``Config`` so that settings the file
    lacks take today's defaults: a file written before an option existed (e.g.
    ``eval.select_backbone_lr``) was scored as that option's default scores, and every comparison
    and description in the report should see it so. A config this version no longer builds is
    used as stored, and a file without one gets none (it is matched with nothing)."""
    stored = results.get("config") or {}
    if not stored:
        return {}
    try:
        return Config.from_dict(stored, source="results config").to_dict()
    except ConfigError:
        return stored


def load_entry(path: Path, root: Path) -> Entry:
    """The results file at ``path`` (found under ``root``) with its neighbours; a file that
    breaks the results schema (:mod:`metaprompt.results`) is refused, naming the field."""
    try:
        results = read_results(path)
    except FileFormatError as err:
        raise ReportError(str(err)) from None
    folder = path.parent
    sibling = (lambda name: folder / name) if path.name == "results.json" else \
        (lambda name: folder / f"{path.stem}.{name}")
    summary = read_json_or_none(sibling("train_summary.json")) if sibling("train_summary.json").is_file() else None
    run_info = read_json_or_none(sibling("run.json")) if sibling("run.json").is_file() else None
    cell = folder.name if path.name == "results.json" else path.stem
    label = results.get("label") or (results.get("config") or {}).get("label") or ""
    if not label:
        try:
            parts = path.parent.relative_to(root).parts
        except ValueError:
            parts = ()
        label = parts[0] if len(parts) >= 2 else ""
    curve = _curve(folder, summary) if path.name == "results.json" or summary else []
    drift = version_drift((run_info or {}).get("versions"), (results.get("provenance") or {}).get("versions") or {})
    if drift:
        log.warning(drift_message(f"the run behind {path}", drift, "its evaluation"))
    return Entry(path, results, label or "runs", cell, summary, run_info, curve, cfg=effective_config(results))


def _same_reference_inputs(a: Entry, b: Entry) -> bool:
    ra, rb = a.results, b.results
    return (ra.get("episodes_sha256") == rb.get("episodes_sha256") and ra.get("model") == rb.get("model")
            and ra.get("data_sha256") == rb.get("data_sha256") and ra.get("n_episodes") == rb.get("n_episodes")
            and (a.cfg.get("model") or {}).get("max_length") == (b.cfg.get("model") or {}).get("max_length"))


def attach_references(entries: list[Entry]) -> None:
    """The training-free reference of each entry; an entry scored with ``eval.reference=false``
    borrows it from an entry on the same episodes, data, model and input length (it depends on
    nothing else)."""
    for e in entries:
        refs = e.results.get("references") or []
        e.reference = refs[0] if refs else None
    for e in entries:
        if e.reference is None:
            donor = next((d for d in entries if d.reference is not None and d.reference_from is None
                          and _same_reference_inputs(e, d)), None)
            if donor is not None:
                e.reference, e.reference_from = donor.reference, f"{donor.study}/{donor.cell}"


def _pretrained_signature(e: Entry) -> str:
    """Everything the pretrained init's score depends on (not the data the meta-learned init saw)."""
    cfg = e.cfg
    model = {k: (cfg.get("model") or {}).get(k) for k in ("name", "max_length", "freeze_backbone", "mlm_head")}
    meta = {k: (cfg.get("meta") or {}).get(k) for k in ("algorithm", "inner_steps", "inner_lr", "inner_lr_backbone")}
    evals = {k: v for k, v in (cfg.get("eval") or {}).items() if k not in ("reference", "episodes", "batch_size")}
    return json.dumps([e.block, e.results.get("model"), e.results.get("data_sha256"), cfg.get("seed"),
                       (cfg.get("data") or {}).get("max_text_tokens"), cfg.get("prompt"), cfg.get("verbalizer"),
                       cfg.get("peft"), model, meta, evals], sort_keys=True, default=str)


def attach_pretrained(entries: list[Entry]) -> None:
    """An entry that scored only its meta-learned init (``metaprompt eval --init meta``, e.g. an
    init evaluated on another data set) borrows the pretrained-init row of an entry with the
    same config on the same episodes: that row does not depend on what was meta-learned."""
    signatures = {id(e): _pretrained_signature(e) for e in entries if e.cfg}
    for e in entries:
        if e.row("pretrained") is not None or e.row("meta") is None or not e.cfg:
            continue
        donor = next((d for d in entries if d is not e and not d.pretrained_from and d.cfg
                      and any(r.get("init") == "pretrained" for r in d.results.get("results", []))
                      and signatures[id(d)] == signatures[id(e)]), None)
        if donor is not None:
            e.borrowed["pretrained"] = donor.row("pretrained")
            e.pretrained_from = f"{donor.study}/{donor.cell}"
