"""Value checks shared by the config layer and the components: each failure is a
:class:`~metaprompt.errors.ConfigError` that names the key (``config key 'prompt.length': …``).

Components take plain arguments, and name the setting as it appears in a config file, so the
same message reads right for ``--set prompt.length=-1`` and for ``SoftPrompt(length=-1)``."""
from __future__ import annotations

import difflib
import math
from typing import Iterable

from metaprompt.errors import ConfigError


def check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {message}")


def positive(value: float, key: str, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    bound = "≥ 0" if allow_zero else "> 0"
    check(ok and math.isfinite(value), key, f"must be a finite number {bound}, got {value!r}")


def text(value: str, key: str) -> None:
    check(bool(value.strip()), key, f"must not be empty, got {value!r}")


def choice(value: str, key: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"config key '{key}': unknown value {value!r}; choose one of {', '.join(choices)}.{hint}")


def names(values: list[str], key: str) -> None:
    """Module-name suffixes (``query``, ``output.dense``)."""
    for name in values:
        check(isinstance(name, str) and bool(name.strip()) and not name.startswith("."), key,
              f"module-name suffixes must be non-empty names like 'query' or 'output.dense', got {name!r}")
