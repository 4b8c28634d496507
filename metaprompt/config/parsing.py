"""From YAML data and ``--set key=value`` strings to config dataclasses: typing each value by its
field, and suggesting the nearest key when one does not exist."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

import yaml

from metaprompt.errors import ConfigError


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key the config dataclass ``cls`` accepts (used for suggestions and documentation)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


#: Names from other tools, mapped to ours (a suggestion spelling-distance does not find).
_SYNONYMS = {"learning_rate": "lr", "num_episodes": "episodes", "epochs": "episodes", "steps": "inner_steps",
             "shots": "k_shot", "ways": "n_way", "queries": "n_query", "model_name": "name"}


def _unknown_key(key: str, source: str, keys: list[str]) -> ConfigError:
    section, _, leaf = key.rpartition(".")
    alias = [k for k in keys if k.rpartition(".")[2] == _SYNONYMS.get(leaf) and k.startswith(section)]
    near = alias[:1] or difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"{source}: unknown config key '{key}'.{hint}")


def apply_override(data: dict[str, Any], item: str, keys: list[str]) -> None:
    """Apply one ``section.key=value`` string to a nested dict (the value is typed later);
    ``keys``: the dotted keys that exist."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    key = key.strip()
    if key not in keys:
        raise _unknown_key(key, "--set", keys)
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = _RawString(value)


class _RawString(str):
    """A value typed on the command line: parsed by the field's type, not by YAML rules."""


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            return None
        return _coerce(value, args[0], key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, _RawString):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_tp, key, source) for v in value]
    where = "--set" if isinstance(value, _RawString) else source  # where the user typed the value
    bad = ConfigError(f"{where}: config key '{key}': expected {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))  # exact: float() would round a seed above 2**53
            except ValueError:
                pass
            try:
                number = float(value)
            except ValueError:
                raise bad from None
            if number.is_integer() and abs(number) < 2**53:  # "1e3", "3.0"; beyond 2**53 a float is not exact
                return int(number)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise bad


def build(cls: type, data: dict[str, Any], prefix: str, source: str, keys: list[str]) -> Any:
    """An instance of the config dataclass ``cls`` from a nested dict, every value typed by its
    field (``keys``: every dotted key of the root config, for suggestions)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: section '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise _unknown_key(prefix + str(key), source, keys)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build(tp, data[f.name] or {}, prefix + f.name + ".", source, keys)
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, prefix + f.name, source)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if source not in ("config", "defaults") and not str(err).startswith(source):
            raise ConfigError(f"{source}: {err}") from None
        raise
