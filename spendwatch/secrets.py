"""Secrets: the one resolver, and the :class:`Secret` wrapper that never shows its value.

A secret (an organization's Admin API key, the Models API key, a Slack webhook URL, an SMTP
password) never lives in the config file: the file names where it is, and
:func:`resolve_secret` reads it, in this order:

1. the file, when one is named (``admin_key_file``, a channel's ``*_file``): its whole text,
   surrounding whitespace stripped (keep it mode 600);
2. else the environment variable that is named (``admin_key_env``, default
   ``ANTHROPIC_ADMIN_KEY``; ``[models] api_key_env``; a channel's ``*_env``).

A file that cannot be read, and a file or variable that is empty or unset, is a ConfigError of
one line that says where it looked and what belongs there, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from spendwatch.errors import ConfigError


class Secret:
    """A secret string whose repr and str never show it (safe in logs and tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it only to the client that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def resolve_secret(owner: str, noun: str, meant: str, *, file: str | None = None,
                   env: str | None = None,
                   environ: Callable[[str], str | None] = os.environ.get) -> Secret:
    """The secret from ``file`` if one is named, else from the environment variable ``env``.

    ``owner`` starts the error line (``/etc/spendwatch.toml: organization 'acme'``), ``noun``
    names the secret (``admin key``) and ``meant`` says what belongs there (``the
    organization's Admin API key (sk-ant-admin01-...)``). Raises ConfigError, one line naming
    where it looked, when the file cannot be read, when the file or the variable holds nothing,
    or when neither is named.
    """
    if file:
        path = Path(file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{owner}: the {noun} file {path} cannot be read "
                              f"({exc.strerror or type(exc).__name__}); create it holding "
                              f"{meant} (mode 600)") from None
        if not value:
            raise ConfigError(f"{owner}: no {noun} in file {path}; put {meant} in it")
        return Secret(value)
    if not env:
        raise ConfigError(f"{owner}: no {noun} configured; name the environment variable or "
                          f"the file that holds {meant}")
    value = (environ(env) or "").strip()
    if not value:
        raise ConfigError(f"{owner}: no {noun} in environment variable {env}; set it to {meant}")
    return Secret(value)
