"""Named components: one registry per kind (prompt kinds, verbalizers, tuners, algorithms...).

A component registers itself under a name with a decorator in the module that defines it::

    from metaprompt.prompts.base import PROMPTS

    @PROMPTS.register("mine")
    class MyPrompt(PromptSpec): ...

and each component package imports all of its modules when it is imported
(:func:`import_members`, called from the package's ``__init__``), so adding a component is
adding one file to its package. Config validation and error messages take their choices from
the registries (:meth:`Registry.names`); no list of names is written down twice.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterable, TypeVar

from metaprompt.errors import UserError

T = TypeVar("T")


class UnknownComponentError(UserError, LookupError):
    """A name that no component of a kind is registered under; the message lists the choices."""


class Registry(Generic[T]):
    """Components of one ``kind`` ("prompt kind", "verbalizer"...) by name, in registration order.

    ``attribute``: when set, :meth:`register` also stores the name on the registered object under
    this attribute (a spec class then knows its own ``kind``)."""

    def __init__(self, kind: str, attribute: str | None = None):
        self.kind = kind
        self.attribute = attribute
        self._members: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (a second, different object under
        the same name is a programming error)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")

        def decorate(obj: T) -> T:
            old = self._members.get(name)
            if old is not None and _qualname(old) != _qualname(obj):
                raise ValueError(f"{self.kind} {name!r} is registered twice: {_qualname(old)} and {_qualname(obj)}")
            if self.attribute is not None:
                setattr(obj, self.attribute, name)
            self._members[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def unknown(self, name: object) -> UnknownComponentError:
        near = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        return UnknownComponentError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}.{hint}")

    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def items(self) -> Iterable[tuple[str, T]]:
        return tuple(self._members.items())

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def import_members(package: str, path: Iterable[str], first: Iterable[str] = ()) -> list[str]:
    """Import every module of a component package (``package``: its ``__name__``, ``path``: its
    ``__path__``) so that each registers itself; modules whose name starts with ``_`` are skipped.
    ``first``: modules to import before the others (the order in which choices are listed), the
    rest follow in file-name order. Returns the module names in import order."""
    found = sorted(m.name for m in pkgutil.iter_modules(list(path)) if not m.name.startswith("_"))
    names = [n for n in first if n in found] + [n for n in found if n not in first]
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


__all__ = ["Registry", "UnknownComponentError", "import_members"]
