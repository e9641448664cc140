"""Secrets: the one resolver, and the :class:`Secret` wrapper that never shows its value.

A secret (an organization's Admin API key, the Models API key, a Slack webhook URL, an SMTP
password) never lives in the config file: the file names where it is, and
:func:`resolve_secret` reads it, in this order:

1. the file, when one is named (``admin_key_file``, a channel's ``*_file``): its whole text,
   surrounding whitespace stripped; a file open to group or others is refused (``chmod 600``,
   :func:`spendwatch.files.check_private`);
2. else the environment variable that is named (``admin_key_env``, default
   ``ANTHROPIC_ADMIN_KEY``; ``[models] api_key_env``; a channel's ``*_env``).

A file that cannot be read, and a file or variable that is empty or unset, is a ConfigError of
one line that says where it looked and what belongs there, never the value.

Every secret resolved is also remembered, so that :class:`RedactingFilter` can take it out of
any log record, whoever logs it (an HTTP library logging a webhook URL or its path, an SDK's
debug output): logs never hold a secret, whatever the log level.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from spendwatch.errors import ConfigError
from spendwatch.files import check_private


_known: set[str] = set()
_known_lock = threading.Lock()
#: A remembered piece shorter than this is not redacted (it would blank ordinary words).
MIN_SECRET_LENGTH = 8
REDACTED = "[redacted]"


def remember(value: str) -> None:
    """Have :func:`redact` take ``value`` out of text from now on; for a URL, its path (and
    query) too, which is what some libraries log."""
    pieces = {value}
    try:
        url = urlsplit(value)
    except ValueError:
        url = None
    if url is not None and url.scheme and url.netloc and len(url.path) > 1:
        pieces |= {url.path + (f"?{url.query}" if url.query else ""), url.path}
    with _known_lock:
        _known.update(p for p in pieces if len(p) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``[redacted]``."""
    with _known_lock:
        pieces = sorted(_known, key=len, reverse=True)
    for piece in pieces:
        if piece in text:
            text = text.replace(piece, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: a record's message (its arguments merged in) and its traceback with
    every remembered secret replaced, before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info))
                                     ).rstrip("\n")
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class Secret:
    """A secret string whose repr and str never show it (safe in logs and tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        remember(value)

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
    where it looked, when the file cannot be read or is open to group or others, when the file
    or the variable holds nothing, or when neither is named.
    """
    if file:
        path = Path(file).expanduser()
        check_private(path, f"{owner}: the {noun} file")
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
