"""Fetch Bao et al.'s processed data (``data.zip``) and convert it to metaprompt's JSON-lines format.

This needs internet access; machines without it can copy the converted
``<name>.jsonl.gz`` files (or ``data.zip`` itself, given as a ``file://`` URL or
a path) from one that has it.

Bao's files hold one JSON object per line: ``"text"`` a list of lower-cased
tokens, ``"label"`` an int and, for some data sets, ``"raw"`` the original
string. The converted text is ``raw`` when present, else the tokens joined by
spaces. Note that Bao's 20news is built from the ``20news-18828`` release, so a
downloaded ``20news.jsonl.gz`` differs from the copy rebuilt from
``20news-bydate`` that ships with this project's shared data (see its
PROVENANCE.md); its sha256, and so any episode file made from it, differ too.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Sequence

from .data import BAO_DATA_URL, BUILTIN_DATASETS, SPLITS_FILE, VERBALIZERS_FILE, data_file_names
from .errors import DataError, Problem, describe_value, raise_problems
from .paths import default_cache_dir, packaged_path
from .splits import is_json_int

__all__ = ["BAO_DATA_URL", "convert_bao_file", "convert_bao_zip", "download_datasets"]


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _convert_lines(lines: Iterable[bytes], source: str, out: IO[bytes]) -> int:
    """Convert Bao-format lines to gzip JSON lines written to ``out``; return how many examples were skipped."""
    problems: list[Problem] = []
    skipped = 0
    # Deterministic gzip: no file name and mtime 0, so the same input gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                problems.append(Problem(source, number, None, f"not a JSON line ({err})"))
                continue
            if not isinstance(obj, dict):
                problems.append(Problem(source, number, None, f"expected a JSON object, got {describe_value(obj)}"))
                continue
            label, tokens, text = obj.get("label"), obj.get("text"), obj.get("raw")
            if not is_json_int(label) or label < 0:
                problems.append(Problem(source, number, "label", f"expected a non-negative integer, got {describe_value(label)}"))
                continue
            if not isinstance(text, str) or not text.strip():
                if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
                    text = " ".join(tokens)
                elif isinstance(tokens, str):
                    text = tokens
                else:
                    problems.append(Problem(source, number, "text", f"expected a list of tokens, got {describe_value(tokens)}"))
                    continue
            if not text.strip():
                skipped += 1
                continue
            gz.write((json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n").encode("utf-8"))
    raise_problems(
        problems, source, what="Bao-format file",
        hint='Each line of Bao et al.\'s files is a JSON object like {"text": ["some", "tokens"], "label": 3}.',
    )
    return skipped


def _convert(lines: Iterable[bytes], source: str, target: Path) -> Path:
    skipped = 0

    def write(out: IO[bytes]) -> None:
        nonlocal skipped
        skipped = _convert_lines(lines, source, out)

    _atomic_write(target, write)
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} example(s) with empty text while writing {target}.", stacklevel=3)
    return target


def convert_bao_file(src: str | Path, dest: str | Path) -> Path:
    """Convert one of Bao et al.'s ``<name>.json`` files to a gzip JSON-lines file ``dest``."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as handle:
        return _convert(handle, str(src), dest)


def _find_member(archive: zipfile.ZipFile, name: str) -> str | None:
    """The shallowest member called ``<name>.json``, wherever it lies in the archive."""
    hits = [
        m for m in archive.namelist()
        if PurePosixPath(m).name == f"{name}.json" and not m.startswith("__MACOSX/")
    ]
    return min(hits, key=lambda m: (m.count("/"), m)) if hits else None


def _write_resources(dest: Path, force: bool) -> None:
    for file_name in (SPLITS_FILE, VERBALIZERS_FILE):
        target = dest / file_name
        if force or not target.exists():
            data = packaged_path(file_name).read_bytes()
            _atomic_write(target, lambda out, data=data: out.write(data))


def convert_bao_zip(
    zip_path: str | Path,
    dest: str | Path,
    names: Sequence[str] = BUILTIN_DATASETS,
    force: bool = False,
    origin: str | None = None,
) -> dict[str, Path]:
    """Convert the data sets ``names`` found in Bao's ``data.zip`` to ``dest/<name>.jsonl.gz``.

    Data sets already in ``dest`` are kept unless ``force``. ``origin`` (the URL) is only used in messages.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    label = origin or str(zip_path)
    written: dict[str, Path] = {}
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"The file from {label} is not a readable zip archive ({err}); the server may have sent an error page "
            f"instead. Download Bao et al.'s data.zip ({BAO_DATA_URL}) again, by hand if need be, and pass its path."
        ) from None
    with archive:
        for name in names:
            target = dest / data_file_names(name)[0]
            if target.exists() and not force:
                written[name] = target
                continue
            member = _find_member(archive, name)
            if member is None:
                found = sorted(m for m in archive.namelist() if m.endswith(".json"))
                shown = ", ".join(found[:12]) + (" …" if len(found) > 12 else "") or "no .json files"
                raise DataError(
                    f"The archive from {label} has no {name}.json (it holds: {shown}). "
                    f"Is it Bao et al.'s data.zip ({BAO_DATA_URL})?"
                )
            with archive.open(member) as handle:
                written[name] = _convert(io.BufferedReader(handle), f"{label}:{member}", target)
    _write_resources(dest, force)
    return written


def _fetch(url: str, folder: Path, timeout: float, progress: bool) -> Path:
    """Download ``url`` to a temporary file in ``folder``, then rename it; return the path."""
    from tqdm.auto import tqdm

    manual = (
        f"Without internet access, download {BAO_DATA_URL} elsewhere and pass the saved file as the URL "
        f"(a path or file:// URL), or put converted <name>.jsonl.gz files in {folder}."
    )
    request = urllib.request.Request(url, headers={"User-Agent": "metaprompt"})
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=".data.zip.", suffix=".part", delete=False)
    try:
        with handle, urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="data.zip", disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    handle.write(chunk)
                    bar.update(len(chunk))
        final = folder / ".bao-data.zip"
        os.replace(handle.name, final)
        return final
    except urllib.error.HTTPError as err:
        err.close()  # an HTTPError holds the open response
        Path(handle.name).unlink(missing_ok=True)
        raise DataError(f"Downloading {url} failed: the server answered HTTP {err.code} ({err.reason}). {manual}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        Path(handle.name).unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DataError(f"Downloading {url} failed: {reason}. Check the network connection. {manual}") from None
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def download_datasets(
    dest: str | Path | None = None,
    url: str = BAO_DATA_URL,
    names: Sequence[str] = BUILTIN_DATASETS,
    timeout: float = 60,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Download Bao et al.'s ``data.zip`` and write ``<dest>/<name>.jsonl.gz`` for each data set in ``names``.

    ``dest`` defaults to the download cache (``default_cache_dir() / "data"``), the
    last folder :func:`episodes.data.resolve_data_dir` searches. Data sets already
    there are skipped (nothing is downloaded if all are) unless ``force``. The
    packaged ``splits.json`` and ``verbalizers.json`` are written beside them.
    ``url`` may also be a local path or ``file://`` URL of a saved ``data.zip``.
    Returns the path of every requested data set.
    """
    unknown = [n for n in names if n not in BUILTIN_DATASETS]
    if unknown:
        raise DataError(f"Unknown data set {unknown[0]!r}; data.zip holds {', '.join(BUILTIN_DATASETS)}.")
    folder = Path(dest) if dest is not None else default_cache_dir() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if force or not (folder / data_file_names(n)[0]).exists()]
    if not todo:
        _write_resources(folder, force=False)
        return {n: folder / data_file_names(n)[0] for n in names}
    if "://" not in url and Path(url).expanduser().is_file():
        return convert_bao_zip(Path(url).expanduser(), folder, names, force, origin=url)
    archive = _fetch(url, folder, timeout, progress)
    try:
        return convert_bao_zip(archive, folder, names, force, origin=url)
    finally:
        archive.unlink(missing_ok=True)
