"""Per-episode scores of a meta-test in progress, so that a killed ``metaprompt eval`` resumes.

A long evaluation (600 episodes × 2 inits can take two hours on 2 cores) appends one JSON line
per scored episode to ``results.partial.jsonl`` in the run directory. Run again, it skips the
episodes already scored (and the backbone step ``eval.select_backbone_lr`` chose for each init,
which would otherwise cost its validation episodes again) and deletes the file once
``results.json`` is written. The first line is
a fingerprint of everything that decides a score (the config without thread count and progress
bars, the test episodes, the bytes of the meta-learned init): a file written for another setting
is set aside with a warning, never mixed in. Each episode's adaptation is deterministic given
its index (see ``metaprompt.run.adaptation``), so a resumed evaluation scores what an
uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from episodes.jsonl import file_sha256
from metaprompt.config import without_runtime_keys
from metaprompt.run.rundir import PARTIAL_FILE  # noqa: F401 (re-exported: its historical home)

log = logging.getLogger(__name__)


def eval_fingerprint(config: dict[str, Any], episodes_sha256: str, init_file: Path | None) -> str:
    scored = without_runtime_keys(config)  # settings that change how fast it runs, not what it measures
    init = file_sha256(init_file) if init_file is not None and init_file.is_file() else None
    key = {"config": scored, "episodes_sha256": episodes_sha256, "init_sha256": init}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


class EpisodeScores:
    """The scores already on disk for one evaluation, and an append-only log of new ones."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self._scores: dict[str, list[tuple[float, float]]] = {}
        self._selected: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self._load()
        if not self.path.is_file():
            self.path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("fingerprint") != self.fingerprint:
            aside = self.path.with_name(self.path.name + ".stale")
            log.warning("%s was written for another config, init or episode set: moved to %s, scoring from the "
                        "first episode", self.path, aside.name)
            self.path.replace(aside)
            return
        for line in lines[1:]:
            try:
                row = json.loads(line)
                if "selected" in row:
                    self._selected[row["init"]] = dict(row["selected"])
                    continue
                init, index, score = row["init"], int(row["episode"]), (float(row["accuracy"]), float(row["seconds"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut off when the process was killed
            done = self._scores.setdefault(init, [])
            if index == len(done):  # only a gap-free prefix counts
                done.append(score)

    def done(self, init: str) -> list[tuple[float, float]]:
        """(accuracy, seconds) of the episodes of ``init`` scored so far, in episode order."""
        return list(self._scores.get(init, []))

    def record(self, init: str, index: int, accuracy: float, seconds: float) -> None:
        done = self._scores.setdefault(init, [])
        if index != len(done):
            raise ValueError(f"episode {index} of '{init}' recorded after {len(done)} episodes")
        done.append((accuracy, seconds))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"init": init, "episode": index, "accuracy": accuracy, "seconds": seconds}) + "\n")

    def selected(self, init: str) -> dict[str, Any] | None:
        """The backbone-step choice recorded for ``init`` (see ``record_selected``), or None."""
        return self._selected.get(init)

    def record_selected(self, init: str, selected: dict[str, Any]) -> None:
        self._selected[init] = selected
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"init": init, "selected": selected}) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
