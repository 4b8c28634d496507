"""A run directory: its layout, who may write into it, and checks of output paths.

A run directory holds::

    config.yaml              the resolved config: the truth of the run (what `eval`, `export` and
                             `--resume` read; `--resume` refuses a --set that would change it)
    run.json                 provenance: command, commit, versions, machine, parameter counts, the
                             config that trained the run (a later hand edit of config.yaml is refused),
                             and one entry per resume (command, runtime settings it changed)
    checkpoint.safetensors   latest state (params, optimiser, scheduler, RNG, episode cursor)
    best.safetensors         best-on-validation meta-parameters (the learned init)
    metrics.jsonl            one line per outer step and per validation
    train_summary.json       written when training ends
    results.json             the run's own evaluation (`metaprompt eval RUN`: both inits, eval.episodes
                             episodes, config.yaml unchanged), or the run's first evaluation until that
                             one is made; any other evaluation is written beside it as
                             results.<init>-<N>ep[.<hash of the changed keys>].json (metaprompt.run.evaluate)
    results.partial.jsonl    per-episode scores of an evaluation in progress (one per results file)
    .metaprompt.lock         the OS lock (flock) held by the one process writing into the run
    .metaprompt.lock.owner   pid, command and start time of that process (to name it in a refusal)

Ownership: every command that writes into a run directory (`train`, `train --resume`, `eval`,
`baseline`, and `export` when its --out lies inside the run) holds the lock from before its first
write to its end, and a second one is refused with the holder's pid. The lock is the kernel's:
it dies with its process, so a killed run never blocks the next command (a stale owner file is
simply overwritten). The lock file itself stays (deleting it would let two processes lock two
different files of the same name). The lock is taken once per command: nothing per step.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from metaprompt.errors import UserError

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
BEST_FILE = "best.safetensors"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
RESULTS_FILE = "results.json"
PARTIAL_FILE = "results.partial.jsonl"
LOCK_FILE = ".metaprompt.lock"
OWNER_FILE = ".metaprompt.lock.owner"
#: Files that do not make a directory "used": a lock left by a command that wrote nothing else.
BOOKKEEPING = (LOCK_FILE, OWNER_FILE)


class RunDirError(UserError, ValueError):
    """A run directory cannot be created, continued or written (the message says why)."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory's lock."""


def partial_file(results_name: str) -> str:
    """The per-episode progress file of a results file (``results.json`` -> ``results.partial.jsonl``)."""
    return PARTIAL_FILE if results_name == RESULTS_FILE else results_name[:-len(".json")] + ".partial.jsonl"


def used_entries(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` other than the lock's bookkeeping (empty for a new or missing directory)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in BOOKKEEPING)


def check_run_dir(run_dir: Path, resume: bool, need_mb: float = 50.0) -> None:
    """Refuse to overwrite a run, and fail early on an unwritable or full disk."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CHECKPOINT_FILE).is_file():
            hint = (f" (the run stopped before its first checkpoint: delete {run_dir} and start it again)"
                    if (run_dir / CONFIG_FILE).is_file() else "")
            raise RunDirError(f"cannot resume: {run_dir / CHECKPOINT_FILE} does not exist{hint}")
        probe_dir = run_dir
    else:
        if run_dir.exists() and (not run_dir.is_dir() or used_entries(run_dir)):
            holder = in_use_by(run_dir)
            if holder:
                raise RunDirBusy(f"{run_dir} is in use by another metaprompt process ({holder}); choose another --out")
            raise RunDirError(f"run directory {run_dir} already exists and is not empty; "
                              "choose another --out, or continue it with --resume")
        probe_dir = run_dir
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
    check_writable(run_dir, probe_dir, need_mb)


def check_writable(run_dir: Path, probe_dir: Path, need_mb: float = 50.0) -> None:
    """Fail early when ``probe_dir`` (``run_dir`` or its nearest existing parent) cannot take a run."""
    if not probe_dir.is_dir():
        raise RunDirError(f"cannot create {run_dir}: {probe_dir} is a file, not a directory")
    if not os.access(probe_dir, os.W_OK):
        raise RunDirError(f"cannot write to {probe_dir} (permission denied)")
    try:  # a real write: os.access says yes to root, and on some read-only or network mounts
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as err:
        raise RunDirError(f"cannot write to {probe_dir}: {err.strerror or err}") from None
    free_mb = shutil.disk_usage(probe_dir).free / 2**20
    if free_mb < need_mb:
        raise RunDirError(f"only {free_mb:.0f} MB free on the disk of {probe_dir}; a run needs about {need_mb:.0f} MB")


# -- ownership -------------------------------------------------------------------------------------
# Locks this process holds: resolved run directory -> [lock, depth]. A command that calls another
# (baseline: train, then eval) re-enters its own lock instead of being refused by it (flock
# locks of two open files conflict even within one process).
_HELD: dict[str, list] = {}


def _holder(run_dir: Path) -> str:
    """Who holds the lock, from the owner file (which the holder writes right after locking)."""
    for _ in range(20):  # the holder may be between taking the lock and writing the file
        try:
            owner = json.loads((run_dir / OWNER_FILE).read_text(encoding="utf-8"))
            if isinstance(owner, dict) and owner.get("pid"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    else:
        return "a process whose pid is not recorded"
    where = "" if owner.get("host") in (None, socket.gethostname()) else f" on host {owner['host']}"
    action = f", `metaprompt {owner['action']}`" if owner.get("action") else ""
    since = f", since {owner['since']}" if owner.get("since") else ""
    return f"pid {owner['pid']}{where}{action}{since}"


@contextlib.contextmanager
def owned(run_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` (created if missing) for the ``with`` block.

    Raises :class:`RunDirBusy`, naming the holder's pid, when another process holds it."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield run_dir
        finally:
            _HELD[key][1] -= 1
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(run_dir / LOCK_FILE), timeout=0)
        lock.acquire()
    except Timeout:
        raise RunDirBusy(f"{run_dir} is in use by another metaprompt process ({_holder(run_dir)}); "
                         f"`metaprompt {command}` would write into it: wait until that process ends "
                         "(or stop it), then run this command again") from None
    except OSError as err:
        raise RunDirError(f"cannot lock {run_dir}: {err.strerror or err}") from None
    _HELD[key] = [lock, 1]
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(
            [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"] + sys.argv[1:]),
            "action": command, "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        (run_dir / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")
        yield run_dir
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            (run_dir / OWNER_FILE).unlink()
        lock.release()


def in_use_by(run_dir: str | Path) -> str | None:
    """The process that holds the lock of ``run_dir`` (in words), or None when no other process does."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    if str(run_dir.resolve()) in _HELD or not (run_dir / LOCK_FILE).is_file():
        return None
    probe = FileLock(str(run_dir / LOCK_FILE), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return _holder(run_dir)
    except OSError:
        return None
    probe.release()
    return None


# -- output paths ----------------------------------------------------------------------------------
def check_output_file(path: str | Path, option: str, force: bool = False, force_flag: str = "--force",
                      example: str = "results.json") -> Path:
    """Check, before any work, that ``path`` can be written as a new file; returns it.

    Refused: a directory, a parent that is a file, an unwritable folder, and an existing file
    unless ``force`` (the message names ``force_flag``). A missing parent folder is created."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give the path of a file (e.g. {path / example})")
    if path.exists() and not force:
        raise UserError(f"{option} {path}: the file already exists; choose another name, or add {force_flag} "
                        "to replace it")
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{option} {path}: {probe} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise UserError(f"{option} {path}: cannot write to {parent}: {err.strerror or err}") from None
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: readers see the old or the new text."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
