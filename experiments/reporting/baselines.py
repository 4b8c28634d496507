"""Practitioner baselines (``metaprompt baseline --method centroid | linear_probe | setfit``, each
with or without the class's label words as extra support) beside the meta-learned rows.

Two sources, read the same way:

- results files written by ``metaprompt baseline`` (``method`` is ``baseline:<method>``, the score
  is a row of ``references`` and ``results`` is empty), given among the report's inputs or found
  in the folders searched; they are taken out of the studies (they have no init to show);
- the per-cell JSON of ``experiments/practitioner_baselines.py``
  (``experiments/results/baselines/<cell>.json``: a list ``baselines`` of scores on the cell's
  test episodes), in the folders given by ``--baselines``.

A baseline is attached to a row with a meta-learned init only when both were scored on the same
test episodes (``dataset``, ``n_way``, ``k_shot``, ``n_episodes``, ``episodes_sha256``), with the
same model and the same text truncation (``data.max_text_tokens`` word pieces) and, where both
name it, the same data (``data_sha256``): then their per-episode accuracies pair up. Anything
else is not attached, and the report lists it as such.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .compare import paired, pct
from .describe import config_text, order_key, study_key
from .entries import Entry, ReportError, read_json_or_none
from .tables import table

METHOD_ORDER = ("centroid", "linear_probe", "setfit")
CELL_FIELDS = ("dataset", "n_way", "k_shot", "n_episodes", "episodes_sha256", "model", "truncation", "baselines")


@dataclass(eq=False)  # the same score twice is two objects; compared by identity
class Baseline:
    """One baseline's score on one set of test episodes, and what must match for it to pair up."""

    name: str  # e.g. "linear_probe + label words"
    method: str
    label_words: bool
    row: dict[str, Any]  # accuracy_mean, accuracy_ci95, accuracies_per_episode, seconds
    settings: str
    source: Path
    command: str | None
    commit: str | None
    key: tuple  # (dataset, n_way, k_shot, n_episodes, episodes_sha256, model, truncation)
    data_sha256: str | None = None

    @property
    def order(self) -> tuple:
        rank = METHOD_ORDER.index(self.method) if self.method in METHOD_ORDER else len(METHOD_ORDER)
        return (rank, self.method, self.label_words, self.name)


def display_name(method: str, label_words: bool) -> str:
    return f"{method}{' + label words' if label_words else ''}"


def truncation(entry: Entry) -> int | None:
    """The word pieces of text a row's classifier read (``data.max_text_tokens``), if its config says."""
    value = (entry.cfg.get("data") or {}).get("max_text_tokens")
    return int(value) if isinstance(value, int) else None


def entry_key(entry: Entry) -> tuple:
    r = entry.results
    return (r.get("dataset"), r.get("n_way"), r.get("k_shot"), r.get("n_episodes"), r.get("episodes_sha256"),
            r.get("model"), truncation(entry))


def is_baseline_results(results: dict[str, Any]) -> bool:
    """A results file of ``metaprompt baseline --method centroid | linear_probe | setfit``."""
    return str(results.get("method") or "").startswith("baseline:")


def from_results(entry: Entry) -> list[Baseline]:
    """The baseline(s) of a results file written by ``metaprompt baseline``."""
    r = entry.results
    adapt = r.get("adaptation") or {}
    method = str(adapt.get("mode") or str(r["method"]).split(":", 1)[1])
    words = bool(adapt.get("label_words"))
    prov = r.get("provenance") or {}
    return [Baseline(display_name(method, words), method, words, ref, str(adapt.get("settings") or {}),
                     entry.path, prov.get("command"), r.get("commit"), entry_key(entry), r.get("data_sha256"))
            for ref in r.get("references") or []]


def _tokens(text: Any) -> int | None:
    """``"40 word pieces of text + [CLS]/[SEP] …"`` (a per-cell file's ``truncation``) → 40."""
    if isinstance(text, int):
        return text
    match = re.match(r"\s*(\d+) word pieces", str(text or ""))
    return int(match.group(1)) if match else None


def _from_cell_file(path: Path, obj: dict[str, Any]) -> list[Baseline]:
    missing = [f for f in CELL_FIELDS if f not in obj]
    if missing:
        raise ReportError(f"{path}: not a per-cell baselines JSON (missing {', '.join(missing)})")
    key = (obj["dataset"], obj["n_way"], obj["k_shot"], obj["n_episodes"], obj["episodes_sha256"], obj["model"],
           _tokens(obj["truncation"]))
    prov = obj.get("provenance") or {}
    out = []
    for i, b in enumerate(obj["baselines"]):
        if not isinstance(b, dict) or not isinstance(b.get("accuracy_mean"), (int, float)) or "method" not in b:
            raise ReportError(f"{path}: baselines[{i}] has no method or numeric accuracy_mean")
        words = bool(b.get("label_words"))
        row = {k: b.get(k) for k in ("accuracy_mean", "accuracy_ci95", "accuracies_per_episode", "seconds")}
        out.append(Baseline(display_name(str(b["method"]), words), str(b["method"]), words, row,
                            str(b.get("settings") or {}), path, prov.get("command"), prov.get("commit"), key,
                            obj.get("data_sha256")))
    return out


def load_baseline_dirs(paths: Sequence[str | Path]) -> list[Baseline]:
    """The baselines of the per-cell JSON in each folder (or file) given."""
    found: list[Baseline] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportError(f"--baselines {path} does not exist")
        files = [path] if path.is_file() else sorted(path.glob("*.json"))
        cells = [(f, obj) for f in files for obj in [read_json_or_none(f)]
                 if isinstance(obj, dict) and isinstance(obj.get("baselines"), list)]
        if not cells:
            raise ReportError(f"--baselines {path}: no per-cell baselines JSON (from "
                              f"experiments/practitioner_baselines.py) there")
        for f, obj in cells:
            found += _from_cell_file(f, obj)
    return found


def _same(a: Baseline, b: Baseline) -> bool:
    return a.name == b.name and a.key == b.key and \
        a.row.get("accuracies_per_episode") == b.row.get("accuracies_per_episode")


def matches(entry: Entry, b: Baseline) -> bool:
    """Whether ``b`` was scored on the entry's test episodes, model and truncation (and data)."""
    d = entry.results.get("data_sha256")
    return b.key[-1] is not None and b.key == entry_key(entry) and (not d or not b.data_sha256 or d == b.data_sha256)


def attach_baselines(entries: list[Entry], baselines: list[Baseline]) -> list[Baseline]:
    """Give every entry with a meta-learned init the baselines on its episodes (one copy of each
    identical score); return the baselines attached to no entry."""
    unique: list[Baseline] = []
    for b in baselines:
        if not any(_same(b, u) for u in unique):
            unique.append(b)
    names = {}
    for b in unique:  # the same name twice on one set of episodes, with other scores: say which file
        names.setdefault((b.key, b.name), []).append(b)
    for same_name in names.values():
        if len(same_name) > 1:
            for b in same_name:
                b.name = f"{b.name} ({b.source.stem})"
    used = set()
    for e in entries:
        if e.row("meta") is None:
            continue
        e.baselines = sorted((b for b in unique if matches(e, b)), key=lambda b: b.order)
        used |= {id(b) for b in e.baselines}
    return [b for b in unique if id(b) not in used]


def strongest(entry: Entry) -> Baseline | None:
    """The entry's baseline with the highest mean accuracy (the first of equals)."""
    return max(entry.baselines, key=lambda b: b.row["accuracy_mean"], default=None)


def _delta(entry: Entry, b: Baseline) -> str:
    d = paired(entry.row("meta"), b.row)
    return f"{pct(d['mean'], d['ci'], signed=True)} ({d['better']} / {d['worse']})" if d else "–"


def study_table(members: list[Entry]) -> list[str]:
    """The meta-learned init of each row against the strongest baseline on its episodes."""
    rows = []
    for e in members:
        best = strongest(e)
        if best is None:
            continue
        meta = e.row("meta")
        rows.append([e.dataset, f"{e.k_shot}-shot", config_text(e), pct(meta["accuracy_mean"], meta["accuracy_ci95"]),
                     f"{best.name}: {pct(best.row['accuracy_mean'], best.row.get('accuracy_ci95'))}",
                     _delta(e, best)])
    if not rows:
        return []
    return ["", "Against the strongest practitioner baseline on the same test episodes (all baselines: "
                "[Practitioner baselines](#practitioner-baselines)):", "",
            *table(["data set", "shot", "config", "meta-learned init", "strongest baseline",
                    "Δ meta − strongest (paired; episodes better / worse)"], rows)]


def _where(path: Path, out_dir: Path) -> str:
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:  # another drive
        return str(path)


def baselines_section(entries: list[Entry], unattached: list[Baseline], out_dir: Path,
                      figure: Path | None = None) -> list[str]:
    """Per cell (the same test episodes, model and truncation): every baseline, and every
    meta-learned row against each of them, paired; the strongest baseline named."""
    with_baselines = [e for e in entries if e.baselines and not e.results.get("copied_from")]
    if not with_baselines and not unattached:
        return []
    lines = ["## Practitioner baselines", "",
             "What a practitioner tries first, on the same test episodes as the meta-learned rows (`metaprompt "
             "baseline --method centroid | linear_probe | setfit`, or `experiments/practitioner_baselines.py`): "
             "a classifier on frozen mean-pooled backbone embeddings of the support set, without and with each "
             "class's label words as one more support example, reading the text the meta-learned classifier "
             "reads. A baseline is paired with a row only where both were scored on the same episodes "
             "(episodes sha256), model and truncation. **Δ meta − baseline** is the mean ± 95% CI of the "
             "per-episode differences (points), with the episodes where the meta-learned init is better / worse. "
             "The strongest baseline of a cell is the one with the highest mean accuracy."]
    cells: dict[tuple, list[Entry]] = {}
    for e in sorted(with_baselines, key=order_key):
        cells.setdefault(entry_key(e), []).append(e)
    for key, members in cells.items():
        dataset, n_way, k, n, sha, model, tokens = key
        members.sort(key=study_key)
        found = sorted({id(b): b for e in members for b in e.baselines}.values(), key=lambda b: b.order)
        best = max(found, key=lambda b: b.row["accuracy_mean"])
        lines += ["", f"### {dataset} {n_way}-way {k}-shot", "",
                  f"{n} test episodes (sha256 `{sha[:12]}`), {model}, {tokens} word pieces of text. Strongest "
                  f"baseline: **{best.name}** ({pct(best.row['accuracy_mean'], best.row.get('accuracy_ci95'))}).", "",
                  *table(["baseline", "accuracy", "settings", "scoring time", "file"],
                         [[f"**{b.name}**" if b is best else b.name,
                           pct(b.row["accuracy_mean"], b.row.get("accuracy_ci95")), f"`{b.settings}`",
                           f"{b.row['seconds']:.0f} s" if isinstance(b.row.get("seconds"), (int, float)) else "–",
                           f"`{_where(b.source, out_dir)}`"] for b in found]), ""]
        header = ["study", "config", "meta-learned init"] + \
            [f"Δ meta − {b.name}" + (" (strongest)" if b is best else "") for b in found]
        rows = []
        for e in members:
            meta = e.row("meta")
            rows.append([e.study, config_text(e), pct(meta["accuracy_mean"], meta["accuracy_ci95"])] +
                        [_delta(e, b) if any(b is x for x in e.baselines) else "–" for b in found])
        lines += table(header, rows)
    if figure is not None:
        lines += ["", f"![{figure.stem}]({figure.name})"]
    if unattached:
        lines += ["", "Not paired with any row of this report (no row scored on the same episodes, model and "
                      "truncation):", ""]
        lines += [f"- {b.name} ({b.key[0]} {b.key[1]}-way {b.key[2]}-shot, {b.key[3]} episodes, sha256 "
                  f"`{str(b.key[4])[:12]}`, {b.key[5]}, {b.key[6]} word pieces): `{_where(b.source, out_dir)}`"
                  for b in sorted(unattached, key=lambda b: (str(b.source), b.order))]
    sources = sorted({(b.source, b.command, b.commit) for e in entries for b in e.baselines},
                     key=lambda s: str(s[0]))
    if sources:
        lines += ["", "Baseline files paired above (command and commit as recorded in each):", "",
                  *table(["file", "command", "commit"],
                         [[f"`{_where(p, out_dir)}`", f"`{c}`" if c else "–", f"`{str(h)[:12]}`" if h else "–"]
                          for p, c, h in sources])]
    return lines + [""]
