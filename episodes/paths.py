"""Where data lives: the data-directory search order, the download cache and packaged files."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DataError


def default_cache_dir() -> Path:
    """The metaprompt cache: ``$METAPROMPT_CACHE``, else ``$XDG_CACHE_HOME/metaprompt``, else ``~/.cache/metaprompt``.

    Downloaded data sets go to its ``data`` sub-folder.
    """
    if os.environ.get("METAPROMPT_CACHE"):
        return Path(os.environ["METAPROMPT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "metaprompt"
    return Path.home() / ".cache" / "metaprompt"


def search_dirs(explicit: str | Path | None) -> list[tuple[Path, str]]:
    """The data folders to search, in order, each with the reason it is searched (for messages)."""
    if explicit is not None and str(explicit) != "":
        return [(Path(explicit).expanduser(), "data.dir")]
    found: list[tuple[Path, str]] = []
    if os.environ.get("METAPROMPT_DATA"):
        found.append((Path(os.environ["METAPROMPT_DATA"]).expanduser(), "$METAPROMPT_DATA"))
    found.append((Path.cwd() / "data", "./data"))
    found.append((default_cache_dir() / "data", "download cache"))
    return found


def resolve_data_dir(explicit: str | Path | None) -> list[Path]:
    """The folders searched for data files, in order.

    An explicit folder (the config's ``data.dir``) is the only one searched. Otherwise:
    ``$METAPROMPT_DATA`` if set, then ``./data``, then the download cache
    (``default_cache_dir() / "data"``).
    """
    return [path for path, _ in search_dirs(explicit)]


def packaged_path(name: str) -> Any:
    """A file shipped in ``episodes/resources`` (a Traversable; use ``read_text``)."""
    return resources.files("episodes").joinpath("resources", name)


def read_json_file(path: Path | Any, what: str, nan_as_null: bool = False) -> Any:
    """Read a whole JSON file, turning syntax errors into a DataError that names the line.

    ``nan_as_null``: read NaN and Infinity (not JSON, but what files written before metaprompt
    wrote strict JSON may hold) as null."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: the {what} is not valid UTF-8 text ({err.reason} at byte {err.start}).") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what}: {err.strerror or err}.") from None
    try:
        return json.loads(text, parse_constant=(lambda name: None) if nan_as_null else None)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}: the {what} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})."
        ) from None
