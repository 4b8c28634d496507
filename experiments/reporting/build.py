"""report.md: the sections of every study, the overview, warnings and provenance, in one file.

``python experiments/report.py RESULTS... --out DIR`` (:func:`main`) and :func:`build_report`.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from metaprompt.errors import UserError

from .baselines import attach_baselines, baselines_section, from_results, is_baseline_results, \
    load_baseline_dirs, study_table
from .describe import study_key
from .entries import Entry, ReportError, attach_pretrained, attach_references, find_results, load_entry, \
    read_json_or_none
from .plots import plot_bars, plot_baselines, plot_curves, slug
from .sections import ood_section, provenance_section, template_section
from .tables import accuracy_table, overview_table, significance_table

REPORT_FILE = "report.md"
#: The per-cell baselines of experiments/practitioner_baselines.py: read unless --baselines or --no-baselines.
DEFAULT_BASELINES = Path(__file__).resolve().parents[1] / "results" / "baselines"

HOW_TO_READ = (
    "How to read: accuracy is the mean over the test episodes ± the half-width of its 95% confidence "
    "interval (1.96·s/√n), in %. The pretrained and the meta-learned init of a row are scored on the same "
    "episodes, so **Δ (paired)** is the mean ± 95% CI of the per-episode differences (percentage points). "
    "**Bold**: the best value of the column among the rows on the same test episodes (same data set and "
    "shot). The reference is training-free (nearest class centroid of mean-pooled backbone embeddings); "
    "† marks a reference taken from another row on the same episodes, data, model and input length; "
    "‡ a pretrained-init score taken from the row of the same config on the same episodes (scored once: "
    "it does not depend on what the meta-learned init was trained on). "
    "Meta-training: wall time, episodes trained and the episode of the best validation point (the saved "
    "init).")


def _study_meta(entries: list[Entry]) -> dict[str, Any]:
    """The ``study.json`` (``{"title": ..., "description": ..., "notes": ...}``) in a study's folder."""
    for e in entries:
        for folder in (e.path.parent.parent, e.path.parent):
            meta = folder / "study.json"
            if meta.is_file():
                obj = read_json_or_none(meta)
                if isinstance(obj, dict) and (obj.get("study") in (None, e.study)):
                    return obj
    return {}


def _comparison(members: list[Entry]) -> list[str]:
    """The significance table of a study and the rows where the meta-learned init does not win."""
    both = [e for e in members if e.row("meta") and e.row("pretrained")]
    if not both and any(e.row("meta") for e in members):
        return ["", "Only the meta-learned init was scored, and no reported row of the same config on the same "
                    "episodes gives the pretrained init's score: no meta-learned vs pretrained comparison."]
    if not both:
        return ["", "Only the pretrained init was scored (no meta-learning): no meta-learned vs pretrained "
                    "comparison."]
    sig, misses = significance_table(members)
    lines = ["", "Significance of meta-learned vs pretrained init:", "", *sig, ""]
    if misses:
        return lines + [f"Where the meta-learned init does **not** win with non-overlapping 95% CIs "
                        f"({len(misses)} of {len(both)} rows):", "", *misses]
    return lines + [f"The meta-learned init wins in all {len(both)} rows with non-overlapping 95% CIs."]


def study_section(study: str, members: list[Entry], everything: list[Entry], out_dir: Path,
                  plots: bool) -> list[str]:
    meta = _study_meta(members)
    lines = [f"## {study}", ""]
    if meta.get("title"):
        lines += [f"**{meta['title']}.** {meta.get('description', '')}".rstrip(), ""]
    if meta.get("notes"):
        lines += [str(meta["notes"]), ""]
    lines += accuracy_table(members)
    lines += _comparison(members)
    lines += study_table(members)
    lines += template_section(members)
    lines += ood_section(members, everything)
    if plots:
        figures = [f for f in (plot_curves(study, members, out_dir), plot_bars(study, members, out_dir)) if f]
        if figures:
            lines += [""] + [f"![{f.stem}]({f.name})" for f in figures]
    return lines + [""]


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an --out that is, or lies below, a file (before any results file is read)."""
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file; give a folder" if probe == out_dir else f"cannot be created: {probe} is a file, not a directory"
        raise ReportError(f"--out {out_dir} {what}")


def build_report(paths: Sequence[str | Path], out_dir: str | Path, title: str | None = None,
                 plots: bool = True, command: str | None = None, baselines: Sequence[str | Path] = ()) -> Path:
    """Write ``out_dir/report.md`` (and PNG plots) for the results found under ``paths``, with the
    practitioner baselines of the per-cell JSON in the ``baselines`` folders (and of any
    ``metaprompt baseline`` results among ``paths``) beside the rows on the same episodes."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    found = find_results(paths)
    if not found:
        raise ReportError("no results JSON found")
    loaded = [load_entry(path, root) for path, root in found]
    entries = [e for e in loaded if not is_baseline_results(e.results)]
    practitioner = [b for e in loaded if is_baseline_results(e.results) for b in from_results(e)]
    practitioner += load_baseline_dirs(baselines)
    if not entries:
        raise ReportError("only practitioner baselines found: no results JSON of a run to compare them with")
    attach_references(entries)
    attach_pretrained(entries)
    unattached = attach_baselines(entries, practitioner)
    out_dir.mkdir(parents=True, exist_ok=True)
    studies: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=study_key):
        studies.setdefault(e.study, []).append(e)
    plot_note = None
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plots, plot_note = False, "Plots skipped: matplotlib is not installed (`pip install metaprompt[plots]`)."

    baseline_lines = baselines_section(entries, unattached, out_dir,
                                       plot_baselines(entries, out_dir) if plots else None)
    lines = [f"# {title or 'metaprompt report'}", "",
             f"{len(entries)} result(s) in {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}; generated "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}" + (f" by `{command}`" if command else "")
             + ".", "", HOW_TO_READ, ""]
    if plot_note:
        lines += [plot_note, ""]
    if len(studies) > 1:
        lines += ["## Contents", ""] + [f"- [{s}](#{slug(s).lower()})" for s in studies] + \
                 (["- [Practitioner baselines](#practitioner-baselines)"] if baseline_lines else []) + \
                 ["- [All rows by data set and shot](#all-rows-by-data-set-and-shot)",
                  "- [Provenance](#provenance)", ""]
    for study, members in studies.items():
        lines += study_section(study, members, entries, out_dir, plots)
    lines += baseline_lines
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python experiments/report.py",
                                     description="Aggregate results JSON into report.md with tables and plots.")
    parser.add_argument("paths", type=Path, nargs="+", metavar="RUN_DIR_OR_RESULTS",
                        help="run directories, results JSON files, or folders searched for them")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and the PNG plots")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--baselines", type=Path, action="append", metavar="DIR",
                        help="folder (or file) of per-cell practitioner-baseline JSON from "
                             "experiments/practitioner_baselines.py, paired with the rows on the same episodes; "
                             f"repeatable; default: {DEFAULT_BASELINES.relative_to(DEFAULT_BASELINES.parents[2])} "
                             "when it exists (results files of `metaprompt baseline` are read among the inputs)")
    parser.add_argument("--no-baselines", action="store_true", help="read no per-cell baselines JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a :class:`~metaprompt.errors.UserError` is one ``error: …`` line and status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = " ".join(["python experiments/report.py", *argv])
    try:
        if args.no_baselines:
            baselines = []
        else:
            baselines = args.baselines or ([DEFAULT_BASELINES] if DEFAULT_BASELINES.is_dir() else [])
        path = build_report(args.paths, args.out, title=args.title, plots=not args.no_plots, command=command,
                            baselines=baselines)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
