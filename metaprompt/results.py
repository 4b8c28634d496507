"""The results JSON: what ``metaprompt eval`` (and ``metaprompt baseline``) write, what readers may use.

A results file is one evaluation of a run on a fixed set of test episodes::

    {"dataset": "huffpost", "n_way": 5, "k_shot": 1, "n_query": 15, "n_episodes": 600,
     "episodes_sha256": "…", "data_sha256": "…", "model": "minilm-offline",
     "results": [{"init": "pretrained", "accuracy_mean": 0.41, "accuracy_ci95": 0.01,
                  "accuracies_per_episode": [...], "seconds_per_episode": 0.9}, {"init": "meta", ...}],
     "references": [{"name": "nearest_centroid_mean_pooled", ...}], "provenance": {...}, "config": {...}, ...}

:data:`FIELDS` lists every field with its kind (see :data:`metaprompt.fields.KINDS`; ``?``:
may be missing, ``?null``: missing or null). The required ones are those every results file
ever committed has; the optional ones were added later or are written only sometimes (e.g.
``data_change_warnings`` only with ``--allow-data-change``), so a reader must not assume them.
Accuracies are fractions in [0, 1]; a CI is null where it cannot be computed (one episode),
never NaN. Rows of ``results`` and ``references`` with the same ``episodes_sha256`` were
scored on the same episodes in the same order, so their ``accuracies_per_episode`` pair up.

Evaluation checks its output against this schema before writing it (:func:`check_results`);
the model card (``metaprompt export``) and any report read files through :func:`read_results`.
How results are aggregated into tables and plots is not the library's business (this
repository's own report is ``experiments/report.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from episodes import DataError
from episodes.paths import read_json_file
from metaprompt.fields import FileFormatError, check_fields

#: Every top-level field of a results file: {field: kind}.
FIELDS = {
    # what was scored: the test episodes (their sha256 identifies them) and the data they come from
    "dataset": "str", "n_way": "size", "k_shot": "size", "n_query": "size", "n_episodes": "int",
    "episodes_sha256": "str", "episodes_seed": "int?null", "episodes_file": "str?null", "split": "str?",
    "test_classes": "ints?", "data_sha256": "str", "data_files": "dict?", "data_change_warnings": "strs?",
    # what was scored with: the model, the learned init and the settings
    "model": "str", "label": "str?", "seed": "int?null", "seeds": "dict?", "commit": "str?null",
    "method": "str?", "algorithm": "str?", "engine": "str?", "prompt": "str?", "verbalizer": "str?",
    "trainable_params": "int?", "meta_train_dataset": "str?null", "meta_init": "dict?null",
    "adaptation": "dict?", "config": "dict?",
    # the scores
    "results": "list", "references": "list?",
    # how it ran
    "peak_rss_mb": "number?null", "provenance": "dict?", "provenance.command": "str?",
    "provenance.versions": "dict?", "version_drift": "dict?", "results_file": "str?",
    # written by experiments/run_study.py into a copied cell: where its rows come from
    "copied_from": "str?", "init_from": "str?",
}

#: The fields of one row of ``results`` (one init).
SCORE_FIELDS = {"init": "str", "accuracy_mean": "number", "accuracy_ci95": "number?null",
                "accuracy_ci95_note": "str?", "accuracies_per_episode": "list?", "seconds": "number?",
                "seconds_per_episode": "number?", "selected": "dict?", "episodes_resumed": "int?"}

#: The fields of one row of ``references`` (a training-free score on the same episodes).
REFERENCE_FIELDS = {"name": "str", "accuracy_mean": "number", "accuracy_ci95": "number?null",
                    "accuracy_ci95_note": "str?", "accuracies_per_episode": "list?", "seconds": "number?",
                    "description": "str?"}

INITS = ("pretrained", "meta")  # the values of a score row's ``init``


def is_results(obj: Any) -> bool:
    """Whether parsed JSON looks like a results file (before :func:`check_results` says what is wrong with it)."""
    return isinstance(obj, dict) and isinstance(obj.get("results"), list) and "episodes_sha256" in obj \
        and "dataset" in obj


def check_results(results: Any, path: str | Path) -> None:
    """Raise :class:`~metaprompt.fields.FileFormatError` naming ``path`` and the field that is
    missing or of the wrong kind."""
    hint = " (a hand-edited file? `metaprompt eval` writes it again)"
    check_fields(results, FIELDS, path, hint)
    for i, row in enumerate(results["results"]):
        check_fields(row, SCORE_FIELDS, path, hint, f"results[{i}].")
    for i, row in enumerate(results.get("references") or []):
        check_fields(row, REFERENCE_FIELDS, path, hint, f"references[{i}].")


def read_results(path: str | Path) -> dict[str, Any]:
    """The checked results file at ``path``; :class:`~metaprompt.fields.FileFormatError` if it is
    none. NaN, which files written before strict JSON may hold, is read as null."""
    try:
        results = read_json_file(Path(path), "results file", nan_as_null=True)
    except DataError as err:
        raise FileFormatError(str(err)) from None
    check_results(results, path)
    return results


def score(results: dict[str, Any], init: str) -> dict[str, Any] | None:
    """The row of ``results`` that scored ``init`` (``"pretrained"`` or ``"meta"``), if any."""
    return next((row for row in results["results"] if row.get("init") == init), None)


__all__ = ["FIELDS", "INITS", "REFERENCE_FIELDS", "SCORE_FIELDS", "check_results", "is_results", "read_results",
           "score"]
