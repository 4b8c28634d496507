"""The errors a user can fix, and the one base class the command line catches.

Every error whose message tells a user what to change derives from :class:`UserError`; the
``metaprompt`` command prints it as one ``error: …`` line and exits with status 2. Anything else
that escapes is a bug and keeps its traceback. This module imports nothing, so any module (also
the ``episodes`` package and components that must not import the config layer) can use it.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input, a refused request or a fault the user can act on; the message says which and what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is invalid; the message names the key (``config key 'train.lr': …``)."""


__all__ = ["ConfigError", "UserError"]
