"""Errors and problem reports shared by the ``episodes`` modules.

A :class:`DataError` is what the user sees: its message is printed as is, so it
must say what is wrong, where (file, line, field) and what to do about it.
A :class:`Problem` is one finding of a checker; checkers return lists of them
instead of raising, so that a user sees every problem of a file in one go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from metaprompt.errors import UserError  # the one class the metaprompt command catches

Severity = Literal["error", "warning", "info"]

#: How many problems a DataError message lists before it summarises the rest.
MAX_LISTED = 10


class DataError(UserError, ValueError):
    """A problem with the user's data, split file, episode file or data directory."""


@dataclass(frozen=True)
class Problem:
    """One finding of a data check.

    ``line`` is 1-based and ``None`` for file-level findings; ``field`` is the
    JSON field concerned, if any. ``severity`` is ``"error"`` (the file cannot
    be used), ``"warning"`` (usable, but probably not what was meant) or
    ``"info"`` (a note, such as a data set that is not downloaded).
    """

    path: str
    line: int | None
    field: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        tag = "" if self.severity == "error" else f"{'note' if self.severity == 'info' else 'warning'}: "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}: {tag}{field}{self.message}"


def errors_only(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def describe_value(value: object, limit: int = 40) -> str:
    """Render a JSON value the way it appeared in the file, shortened for messages."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


DATA_HINT = (
    'Each line must be a JSON object like {"text": "some text", "label": 3}. '
    "Run `metaprompt data check {path}` to list every problem."
)


def raise_problems(problems: list[Problem], path: str | Path, what: str = "data file", hint: str = DATA_HINT) -> None:
    """Raise one DataError listing the first few error-level problems, if there are any."""
    errors = errors_only(problems)
    if not errors:
        return
    listed = "\n".join(f"  {p}" for p in errors[:MAX_LISTED])
    rest = len(errors) - MAX_LISTED
    more = f"\n  … and {rest} more problem{'s' if rest != 1 else ''}." if rest > 0 else ""
    raise DataError(
        f"The {what} {path} cannot be used: {len(errors)} problem{'s' if len(errors) != 1 else ''} found.\n"
        f"{listed}{more}\n" + hint.replace("{path}", str(path))
    )
