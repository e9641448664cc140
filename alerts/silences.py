"""Silences: a rule (one scope of it, or all) kept quiet until a moment. A notification an
active silence covers is stored as "silenced" and not sent; the episode is still recorded.
The CLI (``alerts silence``) and the dashboard create and end them here.
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import datetime

import duckdb

from spendwatch import storage
from spendwatch.config import Config
from spendwatch.errors import ConfigError

SCOPE_KEY = re.compile(r"^[a-z_]+=[^,=]+(,[a-z_]+=[^,=]+)*$")


def active_silences(conn: duckdb.DuckDBPyConnection, now: datetime
                    ) -> frozenset[tuple[str, str | None]]:
    """(rule, scope key, or None for every scope) of each silence active at ``now``: what
    :func:`covers` looks in (an alert check reads them once, not once per episode)."""
    return frozenset(conn.execute(
        "SELECT rule, scope_key FROM alert_silences WHERE created_at <= ? AND expires_at > ?",
        [now, now]).fetchall())


def covers(silences: frozenset[tuple[str, str | None]], rule: str, scope_key: str) -> bool:
    """Whether one of ``silences`` (:func:`active_silences`) covers ``rule`` for
    ``scope_key``: a silence of the rule's every scope, or of that one."""
    return (rule, None) in silences or (rule, scope_key) in silences


def os_user() -> str:
    """The name of the user running this process (who made a silence from the CLI)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name, no passwd entry (some containers)
        return f"uid {os.getuid()}"


def add_silence(config: Config, rule: str, scope_key: str | None, until: datetime,
                now: datetime, comment: str | None = None, *,
                created_by: str | None = None) -> int:
    """Silence ``rule`` (one scope, or all) until ``until``; the CLI and the dashboard use it.

    ``created_by`` is who made it: the dashboard passes the logged-in e-mail address; None
    (the CLI) records the OS user running this process (:func:`os_user`). Raises ConfigError
    for an unknown rule or a malformed scope key, DatabaseBusy when the file stays locked.
    """
    if rule not in {r.name for r in config.alerts.rules}:
        raise ConfigError(f"{config.path}: no alert rule named {rule!r}; rules: "
                          + (", ".join(r.name for r in config.alerts.rules) or "none"))
    if scope_key is not None and not SCOPE_KEY.match(scope_key):
        raise ConfigError(f"scope {scope_key!r} is not a scope key; use the form `alerts "
                          "check` shows in brackets, e.g. organization=acme,model=claude-opus-5-5")
    def insert(conn: duckdb.DuckDBPyConnection) -> int:
        silence = storage.next_id(conn, "alert_silences")
        conn.execute("INSERT INTO alert_silences (id, rule, scope_key, created_at, "
                     "expires_at, comment, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [silence, rule, scope_key, now, until, comment, created_by or os_user()])
        return silence
    return storage.written(config, insert, "adding the silence")


def expire_silence(config: Config, silence_id: int, now: datetime) -> bool:
    """End silence ``silence_id`` at ``now`` (its ``expires_at`` becomes ``now``).

    Returns False when it had already ended (or does not exist). Opens a writer for this one
    update; raises DatabaseBusy when the file stays locked.
    """
    def expire(conn: duckdb.DuckDBPyConnection) -> bool:
        row = conn.execute("UPDATE alert_silences SET expires_at = ? WHERE id = ? "
                           "AND expires_at > ?", [now, silence_id, now]).fetchone()
        return bool(row and row[0])
    return storage.written(config, expire, f"ending silence {silence_id}")
