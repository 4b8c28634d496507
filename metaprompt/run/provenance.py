"""What a result depends on: commit, package versions, machine, command line."""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("metaprompt", "torch", "transformers", "datasets", "peft", "higher", "safetensors", "numpy")


def git_commit(start: Path | None = None) -> str:
    """The commit of the checkout holding this package (``+dirty`` if it has local changes)."""
    here = Path(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


#: The packages whose version changes what a model computes: a run read with others may score differently.
NUMERIC_PACKAGES = ("torch", "transformers", "peft")


def version_drift(recorded: dict | None, current: dict | None = None) -> dict[str, tuple[str, str]]:
    """``{package: (recorded, current)}`` for the :data:`NUMERIC_PACKAGES` whose versions differ.

    ``recorded``: the ``versions`` a run or results file names; ``current``: this process's
    versions by default. A package is compared only where both name it."""
    recorded = recorded or {}
    current = versions() if current is None else current
    return {name: (str(recorded[name]), str(current[name])) for name in NUMERIC_PACKAGES
            if name in recorded and name in current and str(recorded[name]) != str(current[name])}


def drift_message(what: str, drift: dict[str, tuple[str, str]], now: str = "this process") -> str:
    """One line saying which versions ``what`` was made with and which ``now`` has."""
    changes = ", ".join(f"{name} {old} (now {new})" for name, (old, new) in sorted(drift.items()))
    return f"{what} was made with {changes}: {now} runs other versions, so scores may differ slightly"


def machine() -> dict[str, object]:
    import os

    import torch

    info: dict[str, object] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                               "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name] + sys.argv[1:])


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; NaN where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024.0 if sys.platform != "darwin" else usage / 2**20


def provenance() -> dict[str, object]:
    return {"command": command_line(), "commit": git_commit(), "versions": versions(), "machine": machine()}
