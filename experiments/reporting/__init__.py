"""This project's report: results JSON → ``report.md`` with tables and PNG plots.

    python experiments/report.py RUN_DIR_OR_RESULTS... --out DIR [--title T] [--no-plots]
        [--baselines DIR ... | --no-baselines]

Each argument is a run directory (its ``results.json``), a results JSON file (the schema is
:mod:`metaprompt.results`), or a folder searched recursively for them. ``DIR/report.md`` gets,
per study:

- a table of accuracy (mean ± 95% CI over the test episodes) of the pretrained and the
  meta-learned init, their paired difference, the training-free reference, trainable
  parameters, meta-training time and seconds per test episode; the best value of each
  accuracy column among the rows on the same test episodes (same data set and shot) is bold;
- significance: whether the meta-learned init beats the pretrained init with non-overlapping
  95% CIs, and the paired difference (mean ± CI of the per-episode differences on the same
  episodes), with the rows where it does not win listed;
- template robustness (mean and standard deviation across templates) when rows differ only by
  ``prompt.template_id``; out-of-distribution rows against the in-distribution init;
- against the practitioner baselines on the same test episodes, model and truncation (the
  per-cell JSON of ``experiments/practitioner_baselines.py`` in the ``--baselines`` folders,
  by default ``experiments/results/baselines``, and ``metaprompt baseline`` results files among
  the inputs): the meta-learned init's paired difference against the strongest of them;
- plots: validation accuracy against meta-training episodes (with CI bands) and bars of the
  pretrained vs meta-learned init with CI whiskers;

then a section per cell (same episodes) with every baseline's accuracy, every meta-learned
row's paired difference against each of them, the strongest baseline named, and a plot of
the paired difference against the strongest; and, for all of them, the commands, commits,
models and data (sha256) they come from. Studies and data sets appear in the order of
``experiments/studies.py``; a ``study.json`` (``{"title": ..., "description": ...}``) in a
study's folder adds its title and description.

Modules: :mod:`.entries` (loading), :mod:`.describe` (row descriptions and order),
:mod:`.compare` (numbers and verdicts), :mod:`.tables`, :mod:`.sections`, :mod:`.baselines`
(practitioner baselines: loading, pairing, their tables), :mod:`.plots`,
:mod:`.build` (report.md and the command line). It is not part of the installed package: it
imports ``studies`` from ``experiments/``, which must be on ``sys.path``.
"""
from .build import REPORT_FILE, build_report, main
from .entries import Entry, ReportError

__all__ = ["REPORT_FILE", "Entry", "ReportError", "build_report", "main"]
