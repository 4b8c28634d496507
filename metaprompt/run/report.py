"""Aggregate results JSON into a Markdown report with plots.

    metaprompt report RUN_DIR_OR_RESULTS... --out DIR

Each argument is a run directory (its ``results.json``), a results JSON file, or a folder
searched recursively for them. ``DIR/report.md`` gets, per study:

- a table of accuracy (mean ± 95% CI over the test episodes) of the pretrained and the
  meta-learned init, their paired difference, the training-free reference, trainable
  parameters, meta-training time and seconds per test episode; the best value of each
  accuracy column among the rows on the same test episodes (same data set and shot) is bold;
- significance: whether the meta-learned init beats the pretrained init with non-overlapping
  95% CIs, and the paired difference (mean ± CI of the per-episode differences on the same
  episodes), with the rows where it does not win listed;
- template robustness (mean and standard deviation across templates) when rows differ only by
  ``prompt.template_id``; out-of-distribution rows against the in-distribution init;
- plots: validation accuracy against meta-training episodes (with CI bands) and bars of the
  pretrained vs meta-learned init with CI whiskers;

and, for all of them, the commands, commits, models and data (sha256) they come from.

A study is the results' ``label`` (config key ``label``), else the first folder below the
searched folder (``results/<study>/<cell>/results.json``). A run directory's
``train_summary.json`` (or ``metrics.jsonl``) and ``run.json`` next to the results file give
the validation curve, the meta-training time and the training command. A ``study.json``
(``{"title": ..., "description": ...}``) in a study's folder adds its title and description.
"""
from __future__ import annotations

import json
import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from metaprompt.config import Config, ConfigError
from metaprompt.run.provenance import drift_message, version_drift
from metaprompt.errors import UserError
from metaprompt.run.stats import mean_ci95

REPORT_FILE = "report.md"
DATASET_ORDER = ("huffpost", "amazon", "reuters", "20news")
STUDY_ORDER = ("main", "frozen", "ood", "templates", "peft")  # the studies of experiments/run_study.py first
SKIP_DIRS = {".git", ".venv", "__pycache__", "wandb", "export"}

log = logging.getLogger(__name__)


class ReportError(UserError, ValueError):
    """Nothing to report, or an input that is not a results JSON."""


# ------------------------------------------------------------------------------------- loading
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

    def row(self, init: str) -> dict[str, Any] | None:
        own = next((r for r in self.results.get("results", []) if r.get("init") == init), None)
        return own if own is not None else self.borrowed.get(init)

    @property
    def dataset(self) -> str:
        return str(self.results.get("dataset", "?"))

    @property
    def k_shot(self) -> int:
        return int(self.results.get("k_shot", 0))

    @property
    def block(self) -> tuple:
        """Rows with the same block are scored on the same test episodes."""
        return (self.dataset, self.results.get("n_way"), self.k_shot, self.results.get("episodes_sha256"))

    @property
    def out_of_distribution(self) -> bool:
        trained = self.results.get("meta_train_dataset")
        return bool(trained) and trained != self.dataset


def is_results(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("results"), list) and "episodes_sha256" in obj \
        and "dataset" in obj


def _read_json(path: Path) -> Any:
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
            if not is_results(_read_json(path)):
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
                if candidate.name in ("train_summary.json", "run.json", "study.json", "costs.json"):
                    continue
                if is_results(_read_json(candidate)):
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
    results = _read_json(path)
    folder = path.parent
    sibling = (lambda name: folder / name) if path.name == "results.json" else \
        (lambda name: folder / f"{path.stem}.{name}")
    summary = _read_json(sibling("train_summary.json")) if sibling("train_summary.json").is_file() else None
    run_info = _read_json(sibling("run.json")) if sibling("run.json").is_file() else None
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


# ------------------------------------------------------------------------------- descriptions
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


# ------------------------------------------------------------------------------------ numbers
def pct(mean: float | None, ci: float | None = None, signed: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    if ci is not None and not math.isnan(ci):
        text += f" ± {100 * ci:.1f}"
    return text


def paired(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-episode differences a − b on the same episodes: mean, CI, and how often a is better."""
    if not a or not b:
        return None
    xs, ys = a.get("accuracies_per_episode"), b.get("accuracies_per_episode")
    if not xs or not ys or len(xs) != len(ys):
        return None
    diffs = [x - y for x, y in zip(xs, ys)]
    mean, ci = mean_ci95(diffs)
    return {"mean": mean, "ci": ci, "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "n": len(diffs)}


def ci_relation(meta: dict[str, Any], pre: dict[str, Any]) -> str:
    """'above', 'below' or 'overlap': the meta-learned init's 95% CI against the pretrained one's."""
    m, mc, p, pc = meta["accuracy_mean"], meta["accuracy_ci95"], pre["accuracy_mean"], pre["accuracy_ci95"]
    if any(v is None or math.isnan(v) for v in (mc, pc)):  # no CI (one episode): null in the JSON
        return "overlap"
    if m - mc > p + pc:
        return "above"
    if m + mc < p - pc:
        return "below"
    return "overlap"


def verdict(entry: Entry) -> tuple[str, bool]:
    """A sentence on meta vs pretrained, and whether the meta-learned init wins outright
    (non-overlapping 95% CIs)."""
    meta, pre = entry.row("meta"), entry.row("pretrained")
    if not meta or not pre:
        return ("only the " + ("meta-learned" if meta else "pretrained") + " init was scored", False)
    rel = ci_relation(meta, pre)
    d = paired(meta, pre)
    if d is None:
        paired_text = "no per-episode accuracies for a paired test"
        sig = 0
    else:
        ci = d["ci"] if d["ci"] is not None else math.inf  # one episode: no CI, nothing is significant
        sig = 1 if d["mean"] - ci > 0 else (-1 if d["mean"] + ci < 0 else 0)
        paired_text = {1: "paired Δ > 0", -1: "paired Δ < 0", 0: "paired Δ not different from 0"}[sig]
    if rel == "above":
        return f"**wins**: 95% CIs do not overlap; {paired_text}", True
    if rel == "below":
        return f"**loses**: 95% CIs do not overlap; {paired_text}", False
    if sig > 0:
        return f"better only on the paired test: 95% CIs overlap; {paired_text}", False
    if sig < 0:
        return f"worse on the paired test: 95% CIs overlap; {paired_text}", False
    return f"no significant difference: 95% CIs overlap; {paired_text}", False


def _order_key(entry: Entry) -> tuple:
    ds = entry.dataset
    return (DATASET_ORDER.index(ds) if ds in DATASET_ORDER else len(DATASET_ORDER), ds, entry.k_shot,
            config_text(entry), entry.cell)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _peak_memory(entry: Entry) -> str:
    """Peak resident memory of the meta-training process and of the evaluation process (MB)."""
    def mb(value: Any) -> str:
        return f"{value:,.0f}" if isinstance(value, (int, float)) else "–"
    return f"{mb((entry.summary or {}).get('peak_rss_mb'))} / {mb(entry.results.get('peak_rss_mb'))}"


def _bold_best(rows: list[list[str]], values: list[list[float | None]], columns: Sequence[int],
               groups: list[tuple]) -> None:
    """Bold the best value of each column among rows of the same group (when a group has ≥ 2 rows)."""
    for col in columns:
        by_group: dict[tuple, list[int]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        for members in by_group.values():
            scored = [(values[i][col], i) for i in members if values[i][col] is not None
                      and not math.isnan(values[i][col])]
            if len(scored) < 2:
                continue
            best = max(round(100 * v, 1) for v, _ in scored)
            for v, i in scored:
                if round(100 * v, 1) == best:
                    rows[i][col] = f"**{rows[i][col]}**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------------- sections
def _step(result: dict[str, Any] | None) -> str:
    """The meta-test backbone step ``eval.select_backbone_lr`` chose for this init, if any."""
    selected = (result or {}).get("selected")
    return f" (step {selected['inner_lr_backbone']:g})" if selected else ""


def accuracy_table(entries: list[Entry], keys: Sequence[str] | None = None) -> list[str]:
    header = ["data set", "shot", "config", "pretrained init", "meta-learned init", "Δ meta − pretrained (paired)",
              "reference (no training)", "trainable params", "meta-training", "s / test episode",
              "peak RSS MB (train / test)", "test episodes"]
    rows, values, groups = [], [], []
    for e in entries:
        pre, meta = e.row("pretrained"), e.row("meta")
        d = paired(meta, pre)
        ref = e.reference
        s = e.summary or {}
        if s:
            train = (f"{_minutes(s.get('train_seconds'))}, {s.get('episodes', '?')} ep. "
                     f"(best @ {s.get('best_episodes', '?')})")
        else:
            train = "–" if meta is None else "(no train_summary.json)"
        timing = meta or pre
        ref_text = "–" if ref is None else pct(ref["accuracy_mean"], ref.get("accuracy_ci95")) + \
            (" †" if e.reference_from else "")
        rows.append([e.dataset, f"{e.results.get('n_way')}-way {e.k_shot}-shot", config_text(e, keys),
                     (pct(pre["accuracy_mean"], pre["accuracy_ci95"]) + _step(pre) + (" ‡" if e.pretrained_from else ""))
                     if pre else "–",
                     pct(meta["accuracy_mean"], meta["accuracy_ci95"]) + _step(meta) if meta else "–",
                     pct(d["mean"], d["ci"], signed=True) if d else "–", ref_text,
                     f"{e.results.get('trainable_params', 0):,}", train,
                     f"{timing['seconds_per_episode']:.2f}" if timing and "seconds_per_episode" in timing else "–",
                     _peak_memory(e), str(e.results.get("n_episodes", "?"))])
        values.append([None, None, None, pre["accuracy_mean"] if pre else None,
                       meta["accuracy_mean"] if meta else None, d["mean"] if d else None, None])
        groups.append(e.block)
    _bold_best(rows, values, (3, 4, 5), groups)
    notes = []
    if any(_step(e.row(init)) for e in entries for init in ("pretrained", "meta")):
        notes = ["", "(step s): the backbone's SGD step at meta-test, chosen for that init on validation episodes "
                 "(`eval.select_backbone_lr`); rows without it adapt with `meta.inner_lr_backbone`."]
    return _table(header, rows) + notes


def significance_table(entries: list[Entry], keys: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    header = ["data set", "shot", "config", "meta vs pretrained: 95% CIs", "paired Δ (pts)",
              "episodes meta better / worse", "paired Δ meta − reference (pts)", "verdict"]
    rows, misses = [], []
    for e in entries:
        pre, meta = e.row("pretrained"), e.row("meta")
        d = paired(meta, pre)
        dref = paired(meta, e.reference)  # a borrowed reference is on the same episodes, in the same order
        text, wins = verdict(e)
        rel = ci_relation(meta, pre) if meta and pre else None
        rel_text = {"above": "disjoint (meta above)", "below": "disjoint (meta below)", "overlap": "overlap",
                    None: "–"}[rel]
        rows.append([e.dataset, f"{e.k_shot}-shot", config_text(e, keys), rel_text,
                     pct(d["mean"], d["ci"], signed=True) if d else "–",
                     f"{d['better']} / {d['worse']} of {d['n']}" if d else "–",
                     pct(dref["mean"], dref["ci"], signed=True) if dref else "–", text])
        if not wins and meta and pre:
            detail = (f"{pct(meta['accuracy_mean'], meta['accuracy_ci95'])} vs "
                      f"{pct(pre['accuracy_mean'], pre['accuracy_ci95'])}")
            if d:
                detail += f", paired Δ {pct(d['mean'], d['ci'], signed=True)} pts"
            misses.append(f"- {e.dataset} {e.k_shot}-shot, {config_text(e, keys)} (`{e.cell}`): "
                          f"{text.replace('**', '')} ({detail}).")
    return _table(header, rows), misses


def template_section(entries: list[Entry]) -> list[str]:
    """Mean and standard deviation across templates, for rows that differ only by template."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        d = describe(e)
        key = (e.dataset, e.k_shot, e.results.get("model"), tuple((k, v) for k, v in d.items() if k != "template"))
        groups.setdefault(key, []).append(e)
    rows = []
    for (dataset, k, _model, _), members in groups.items():
        templates = {describe(m)["template"] for m in members}
        if len(templates) < 2:
            continue
        members = sorted(members, key=lambda m: describe(m)["template"])

        def stats(init: str) -> tuple[str, list[float]]:
            accs = [m.row(init)["accuracy_mean"] for m in members if m.row(init)]
            if len(accs) < 2:
                return "–", accs
            return f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f}", accs

        pre_text, pre = stats("pretrained")
        meta_text, meta = stats("meta")
        per = "; ".join(f"{describe(m)['template']}: " + " → ".join(pct(m.row(i)["accuracy_mean"]) for i in
                                                                    ("pretrained", "meta") if m.row(i))
                        for m in members)
        gain = "–"
        if len(pre) == len(meta) == len(members) >= 2:
            deltas = [b - a for a, b in zip(pre, meta)]
            gain = f"{100 * statistics.mean(deltas):+.1f} ± {100 * statistics.stdev(deltas):.1f}"
        keys = [x for x in describe(members[0]) if x != "template"]
        rows.append([dataset, f"{k}-shot", config_text(members[0], keys),
                     str(len(members)), pre_text, meta_text, gain, per])
    if not rows:
        return []
    return ["", "**Template robustness** (mean ± standard deviation across templates of the per-template mean "
            "accuracy; per template: pretrained → meta-learned):", "",
            *_table(["data set", "shot", "config", "templates", "pretrained init", "meta-learned init",
                     "Δ meta − pretrained", "per template"], rows)]


def _signature(e: Entry) -> tuple:
    d = describe(e)
    d.pop("meta-trained on", None)
    return (e.results.get("model"), e.block, tuple(sorted(d.items())))


def ood_section(entries: list[Entry], everything: list[Entry]) -> list[str]:
    """Each out-of-distribution row against the in-distribution init of the same config on the
    same test episodes (found among all the reported results)."""
    rows = []
    for e in entries:
        if not e.out_of_distribution:
            continue
        meta = e.row("meta")
        match = next((o for o in everything if not o.out_of_distribution and o.row("meta")
                      and _signature(o) == _signature(e)), None)
        if match is None:
            rows.append([e.dataset, f"{e.k_shot}-shot", str(e.results.get("meta_train_dataset")),
                         pct(meta["accuracy_mean"], meta["accuracy_ci95"]) if meta else "–", "(none reported)",
                         "–"])
            continue
        inn = match.row("meta")
        d = paired(meta, inn)
        rows.append([e.dataset, f"{e.k_shot}-shot", str(e.results.get("meta_train_dataset")),
                     pct(meta["accuracy_mean"], meta["accuracy_ci95"]) if meta else "–",
                     f"{pct(inn['accuracy_mean'], inn['accuracy_ci95'])} (`{match.study}/{match.cell}`)",
                     pct(d["mean"], d["ci"], signed=True) if d else "–"])
    if not rows:
        return []
    return ["", "**Out of distribution vs in distribution** (meta-learned init on the same test episodes; paired "
            "Δ = out-of-distribution − in-distribution):", "",
            *_table(["test data", "shot", "meta-trained on", "meta-learned init (OOD)",
                     "meta-learned init (in distribution)", "paired Δ (pts)"], rows)]


def overview_table(entries: list[Entry]) -> list[str]:
    """Every row of every study on the same test episodes side by side."""
    header = ["data set", "shot", "study", "config", "pretrained init", "meta-learned init",
              "Δ meta − pretrained (paired)"]
    rows, values, groups = [], [], []
    for e in sorted((x for x in entries if not x.results.get("copied_from")), key=_order_key):
        pre, meta = e.row("pretrained"), e.row("meta")
        d = paired(meta, pre)
        rows.append([e.dataset, f"{e.k_shot}-shot", e.study, config_text(e),
                     pct(pre["accuracy_mean"], pre["accuracy_ci95"]) if pre else "–",
                     pct(meta["accuracy_mean"], meta["accuracy_ci95"]) if meta else "–",
                     pct(d["mean"], d["ci"], signed=True) if d else "–"])
        values.append([None, None, None, None, pre["accuracy_mean"] if pre else None,
                       meta["accuracy_mean"] if meta else None, d["mean"] if d else None])
        groups.append(e.block)
    _bold_best(rows, values, (4, 5, 6), groups)
    return _table(header, rows)


def provenance_section(entries: list[Entry], out_dir: Path) -> list[str]:
    lines = ["## Provenance", "",
             "Every row above comes from one results JSON. Commands are as run (the training command from the "
             "run's `run.json`, the evaluation command from the results' `provenance`).", ""]
    rows = []
    for e in sorted(entries, key=lambda x: (x.study, _order_key(x))):
        r = e.results
        train_cmd = (e.run_info or {}).get("command")
        eval_cmd = (r.get("provenance") or {}).get("command", "–")
        try:
            where = e.path.resolve().relative_to(out_dir.resolve())
        except ValueError:
            where = e.path
        copied = f" (copied from `{r['copied_from']}`)" if r.get("copied_from") else \
            (f" (init of `{r['init_from']}`)" if r.get("init_from") else "")
        if e.pretrained_from:
            copied += f"; pretrained init: `{e.pretrained_from}`"
        if e.reference_from:
            copied += f"; reference: `{e.reference_from}`"
        rows.append([f"{e.study}/{e.cell}", f"`{where}`{copied}", f"`{train_cmd}`" if train_cmd else "–",
                     f"`{eval_cmd}`", f"`{str(r.get('commit', '?'))[:12]}`", str(r.get("model", "?")),
                     f"`{str(r.get('data_sha256', '?'))[:12]}`", f"`{str(r.get('episodes_sha256', '?'))[:12]}`"])
    lines += _table(["cell", "results file", "train command", "eval command", "commit", "model", "data sha256",
                     "episodes sha256"], rows)
    data = {}
    for e in entries:
        r = e.results
        data.setdefault((e.dataset, r.get("data_sha256")), set()).add(
            (r.get("n_way"), e.k_shot, r.get("n_query"), r.get("n_episodes"), r.get("episodes_seed"),
             r.get("episodes_sha256")))
    lines += ["", "**Data and test episodes** (full sha256):", ""]
    drows = []
    for (dataset, sha), episode_sets in sorted(data.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        for n_way, k, q, n, seed, esha in sorted(episode_sets, key=lambda t: tuple(str(x) for x in t)):
            drows.append([dataset, f"`{sha}`", f"{n_way}-way {k}-shot, {q} queries/class", str(n), str(seed),
                          f"`{esha}`"])
    lines += _table(["data set", "data sha256", "episodes", "count", "seed", "episodes sha256"], drows)
    commits = sorted({str(e.results.get("commit", "?")) for e in entries})
    models = sorted({str(e.results.get("model", "?")) for e in entries})
    versions = sorted({json.dumps({k: v for k, v in ((e.results.get("provenance") or {}).get("versions") or {}).items()
                                   if k in ("python", "torch", "transformers", "metaprompt")}, sort_keys=True)
                       for e in entries})
    machines = sorted({json.dumps(((e.results.get("provenance") or {}).get("machine") or {}), sort_keys=True)
                       for e in entries})
    lines += ["", f"- Commits: {', '.join(f'`{c}`' for c in commits)}" +
              (" (some with local changes: `+dirty`)" if any(c.endswith("+dirty") for c in commits) else ""),
              f"- Models: {', '.join(models)}",
              f"- Package versions: {'; '.join(versions)}",
              f"- Machines: {'; '.join(machines)}"]
    return lines


# ------------------------------------------------------------------------------------- plots
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "runs"


def _short_label(e: Entry, keys: Sequence[str], with_data: bool = True) -> str:
    parts = [f"{e.dataset} {e.k_shot}-shot"] if with_data else []
    if keys:
        parts.append(config_text(e, keys))
    return "\n".join(parts) if parts else e.cell


def plot_curves(study: str, entries: list[Entry], out_dir: Path) -> Path | None:
    """Validation accuracy against meta-training episodes, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_curve = [e for e in entries if len(e.curve) >= 1 and not e.out_of_distribution]
    if not with_curve:
        return None
    datasets = sorted({e.dataset for e in with_curve},
                      key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 9, d))
    keys = varying_keys(with_curve)
    ncols = min(len(datasets), 2) if len(datasets) > 1 else 1
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        members = sorted([e for e in with_curve if e.dataset == dataset], key=_order_key)
        for e in members:
            pts = sorted(e.curve, key=lambda p: p.get("episodes", p.get("step", 0)))
            xs = [p.get("episodes", p.get("step", 0)) for p in pts]
            ys = [100 * p["val_accuracy"] for p in pts]
            cis = [100 * (p.get("val_ci95") or 0.0) for p in pts]
            label = f"{e.k_shot}-shot" + (f", {config_text(e, keys)}" if keys else "")
            line, = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
            ax.fill_between(xs, [y - c for y, c in zip(ys, cis)], [y + c for y, c in zip(ys, cis)],
                            color=line.get_color(), alpha=0.15, linewidth=0)
            best = max(range(len(ys)), key=lambda i: ys[i])
            ax.plot([xs[best]], [ys[best]], marker="*", markersize=11, color=line.get_color(),
                    markeredgecolor="black", markeredgewidth=0.5)
        ax.set_title(dataset, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("meta-training episodes", fontsize=9)
        ax.set_ylabel("validation accuracy (%)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        n = len(members)
        if n <= 4:
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
        else:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.suptitle(f"{study}: validation accuracy during meta-training\n(band: 95% CI; star: best point = saved init)",
                 fontsize=10)
    fig.tight_layout()
    path = out_dir / f"curves_{_slug(study)}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_bars(study: str, entries: list[Entry], out_dir: Path) -> Path | None:
    """Pretrained vs meta-learned init (and the reference) per row, with 95% CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in entries if e.row("pretrained") or e.row("meta")]
    if not rows:
        return None
    keys = varying_keys(rows)
    with_data = len({(e.dataset, e.k_shot) for e in rows}) > 1 or not keys
    labels = [_short_label(e, keys, with_data) for e in rows]
    series = [("pretrained init", "pretrained", "#8da0cb", None), ("meta-learned init", "meta", "#fc8d62", None),
              ("reference (no training)", "reference", "#bbbbbb", "//")]
    series = [s for s in series if any((e.reference if s[1] == "reference" else e.row(s[1])) for e in rows)]
    width = 0.8 / len(series)
    longest = max(len(line) for label in labels for line in label.split("\n"))
    per_group = max(1.05, 0.075 * longest)  # inches: an 8-pt character is about 0.07 in wide
    rotate = per_group * len(rows) + 2.0 > 26  # too wide for level labels: slant them instead
    fig_w = max(6.0, (1.05 if rotate else per_group) * len(rows) + 2.0)
    fig, ax = plt.subplots(figsize=(min(fig_w, 26), 4.8 + (1.2 if rotate else 0)))
    for j, (name, init, color, hatch) in enumerate(series):
        xs, ys, errs = [], [], []
        for i, e in enumerate(rows):
            row = e.reference if init == "reference" else e.row(init)
            if not row:
                continue
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            ys.append(100 * row["accuracy_mean"])
            ci = row.get("accuracy_ci95")
            errs.append(100 * ci if ci is not None and not math.isnan(ci) else 0.0)
        if xs:
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=name, color=color, hatch=hatch,
                   edgecolor="black", linewidth=0.5, error_kw={"elinewidth": 1})
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("test accuracy (%), mean ± 95% CI", fontsize=9)
    ax.set_ylim(0, min(100, max(5.0, ax.get_ylim()[1] * 1.12)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    common = "" if with_data else f" ({rows[0].dataset} {rows[0].k_shot}-shot)"
    what = "pretrained vs meta-learned init" if any(e.row("meta") for e in rows) else "test accuracy"
    ax.set_title(f"{study}: {what}{common}", fontsize=11)
    fig.tight_layout()
    path = out_dir / f"bars_{_slug(study)}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ report
def _study_meta(entries: list[Entry]) -> dict[str, Any]:
    for e in entries:
        for folder in (e.path.parent.parent, e.path.parent):
            meta = folder / "study.json"
            if meta.is_file():
                obj = _read_json(meta)
                if isinstance(obj, dict) and (obj.get("study") in (None, e.study)):
                    return obj
    return {}


def build_report(paths: Sequence[str | Path], out_dir: str | Path, title: str | None = None,
                 plots: bool = True, command: str | None = None) -> Path:
    """Write ``out_dir/report.md`` (and PNG plots) for the results found under ``paths``."""
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():  # checked before any results file is read
        what = "is a file; give a folder" if probe == out_dir else f"cannot be created: {probe} is a file, not a directory"
        raise ReportError(f"--out {out_dir} {what}")
    found = find_results(paths)
    if not found:
        raise ReportError("no results JSON found")
    entries = [load_entry(path, root) for path, root in found]
    attach_references(entries)
    attach_pretrained(entries)
    out_dir.mkdir(parents=True, exist_ok=True)
    studies: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=lambda x: (STUDY_ORDER.index(x.study) if x.study in STUDY_ORDER
                                            else len(STUDY_ORDER), x.study, *_order_key(x))):
        studies.setdefault(e.study, []).append(e)
    plot_note = None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plots, plot_note = False, "Plots skipped: matplotlib is not installed (`pip install metaprompt[plots]`)."

    lines = [f"# {title or 'metaprompt report'}", "",
             f"{len(entries)} result(s) in {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}; generated "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}" + (f" by `{command}`" if command else "")
             + ".", "",
             "How to read: accuracy is the mean over the test episodes ± the half-width of its 95% confidence "
             "interval (1.96·s/√n), in %. The pretrained and the meta-learned init of a row are scored on the same "
             "episodes, so **Δ (paired)** is the mean ± 95% CI of the per-episode differences (percentage points). "
             "**Bold**: the best value of the column among the rows on the same test episodes (same data set and "
             "shot). The reference is training-free (nearest class centroid of mean-pooled backbone embeddings); "
             "† marks a reference taken from another row on the same episodes, data, model and input length; "
             "‡ a pretrained-init score taken from the row of the same config on the same episodes (scored once: "
             "it does not depend on what the meta-learned init was trained on). "
             "Meta-training: wall time, episodes trained and the episode of the best validation point (the saved "
             "init).", ""]
    if plot_note:
        lines += [plot_note, ""]
    if len(studies) > 1:
        lines += ["## Contents", ""] + [f"- [{s}](#{_slug(s).lower()})" for s in studies] + \
                 ["- [All rows by data set and shot](#all-rows-by-data-set-and-shot)",
                  "- [Provenance](#provenance)", ""]
    for study, members in studies.items():
        meta = _study_meta(members)
        lines += [f"## {study}", ""]
        if meta.get("title"):
            lines += [f"**{meta['title']}.** {meta.get('description', '')}".rstrip(), ""]
        if meta.get("notes"):
            lines += [str(meta["notes"]), ""]
        lines += accuracy_table(members)
        both = [e for e in members if e.row("meta") and e.row("pretrained")]
        if both:
            sig, misses = significance_table(members)
            lines += ["", "Significance of meta-learned vs pretrained init:", "", *sig, ""]
        if not both and any(e.row("meta") for e in members):
            lines += ["", "Only the meta-learned init was scored, and no reported row of the same config on the same "
                          "episodes gives the pretrained init's score: no meta-learned vs pretrained comparison."]
        elif not both:
            lines += ["", "Only the pretrained init was scored (no meta-learning): no meta-learned vs pretrained "
                          "comparison."]
        elif misses:
            lines += [f"Where the meta-learned init does **not** win with non-overlapping 95% CIs "
                      f"({len(misses)} of {len(both)} rows):", "", *misses]
        else:
            lines += [f"The meta-learned init wins in all {len(both)} rows with non-overlapping 95% CIs."]
        lines += template_section(members)
        lines += ood_section(members, entries)
        if plots:
            figures = [plot_curves(study, members, out_dir), plot_bars(study, members, out_dir)]
            figures = [f for f in figures if f is not None]
            if figures:
                lines += [""] + [f"![{f.stem}]({f.name})" for f in figures]
        lines += [""]
    if len(studies) > 1:
        lines += ["## All rows by data set and shot", "",
                  "Rows of every study on the same test episodes side by side (bold: best of the column within a "
                  "data set and shot; rows copied from another study are left out).", "", *overview_table(entries),
                  ""]
    changed = [(e, w) for e in entries for w in e.results.get("data_change_warnings") or []]
    if changed:  # scored with --allow-data-change: said where nobody can miss it
        lines += ["## Warning: rows scored on changed data", "",
                  *[f"- {e.study} / {e.cell}: {w}" for e, w in changed], ""]
    lines += provenance_section(entries, out_dir)
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
