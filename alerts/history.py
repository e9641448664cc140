"""What the dashboard and the CLI show of the alerts: episodes, deliveries, channels, silences.

Every function takes an open connection (a reader is enough) and returns plain rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from alerts.states import Kind, State
from spendwatch.timeutil import DAY

Row = dict[str, Any]


def records(cursor: duckdb.DuckDBPyConnection) -> list[Row]:
    """The rows of an executed query as dicts keyed by column name."""
    columns = [d[0] for d in cursor.description or []]
    return [dict(zip(columns, values)) for values in cursor.fetchall()]


def firing_alerts(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[Row]:
    """Alerts firing or pending now: ``rule``, ``kind``, ``scope_key``, ``level``, ``state``,
    ``since``, ``value``, ``threshold``, ``unit``, ``summary``, ``episode_id``, ``scope_json``
    (the scope as JSON) and ``silenced`` (an active silence covers it now). Firing first,
    oldest first."""
    return records(conn.execute("""
        SELECT s.rule, e.rule_kind AS kind, s.scope_key, e.scope_json, s.level, s.state, s.since,
               s.last_value AS value, e.threshold, e.unit, e.summary, s.episode_id,
               EXISTS (SELECT 1 FROM alert_silences x WHERE x.rule = s.rule
                       AND (x.scope_key IS NULL OR x.scope_key = s.scope_key)
                       AND x.created_at <= $now AND x.expires_at > $now) AS silenced
        FROM alert_states s LEFT JOIN alert_episodes e ON e.id = s.episode_id
        WHERE s.state IN ($firing, $pending)
        ORDER BY s.state = $pending, s.since, s.rule, s.scope_key, s.level""",
                                 {"now": now, "firing": State.FIRING,
                                  "pending": State.PENDING}))


def recent_episodes(conn: duckdb.DuckDBPyConnection, since: datetime,
                    limit: int = 100) -> list[Row]:
    """Episodes open at any moment since ``since``, newest first: ``id``, ``rule``, ``kind``,
    ``scope_key``, ``level``, ``started_at``, ``firing_at``, ``ended_at``, ``end_reason``,
    ``silenced``, ``threshold``, ``peak_value``, ``unit``, ``summary``."""
    return records(conn.execute("""
        SELECT id, rule, rule_kind AS kind, scope_key, level, started_at, firing_at, ended_at,
               end_reason, silenced, threshold, peak_value, unit, summary
        FROM alert_episodes WHERE ended_at IS NULL OR ended_at >= $since
        ORDER BY started_at DESC, id DESC LIMIT $limit""", {"since": since, "limit": limit}))


def delivery_attempts(conn: duckdb.DuckDBPyConnection, limit: int = 100) -> list[Row]:
    """The latest delivery attempts with the channel's answer, newest first:
    ``attempted_at``, ``channel``, ``kind`` (firing, reminder, resolved, test, report),
    ``rule`` ("weekly report 2026-W47" for a report),
    ``scope_key``, ``ok``, ``permanent``, ``answer``, ``status`` (of the notification now)."""
    return records(conn.execute("""
        SELECT d.attempted_at, d.channel, n.kind,
               coalesce(e.rule, CASE WHEN n.kind = $report AND json_extract_string(
                   n.payload_json, '$.labels.day') IS NOT NULL THEN 'daily digest '
                   || json_extract_string(n.payload_json, '$.labels.day')
                   WHEN n.kind = $report THEN 'weekly report ' || coalesce(
                   json_extract_string(n.payload_json, '$.labels.week'),
                   json_extract_string(n.payload_json, '$.week')) END) AS rule,
               coalesce(e.scope_key, CASE n.kind WHEN $report THEN 'organization=' || coalesce(
                   json_extract_string(n.payload_json, '$.labels.organization'),
                   json_extract_string(n.payload_json, '$.organization')) END) AS scope_key,
               d.ok, d.permanent, d.answer, n.status
        FROM alert_deliveries d JOIN alert_notifications n ON n.id = d.notification_id
             LEFT JOIN alert_episodes e ON e.id = n.episode_id
        ORDER BY d.attempted_at DESC, n.id DESC LIMIT $limit""",
                                 {"limit": limit, "report": Kind.REPORT}))


def notification_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Notifications per status: pending, sent, failed, silenced."""
    return {status: int(n) for status, n in conn.execute(
        "SELECT status, count(*) FROM alert_notifications GROUP BY 1").fetchall()}


def broken_channels(conn: duckdb.DuckDBPyConnection) -> list[Row]:
    """Channels marked broken by a permanent failure: ``channel``, ``reason``, ``since``."""
    return records(conn.execute(
        "SELECT channel, reason, since FROM alert_channels WHERE broken ORDER BY channel"))


def silences(conn: duckdb.DuckDBPyConnection, now: datetime,
             ended_since: datetime | None = None) -> list[Row]:
    """Silences active at ``now`` or ended after ``ended_since`` (default: a day before now):
    ``id``, ``rule``, ``scope_key`` (None: every scope), ``created_at``, ``expires_at``,
    ``comment``, ``created_by`` (who made it: an e-mail address or an OS user; None before
    spendwatch recorded it), ``active``. Active ones first, ending soonest first."""
    return records(conn.execute("""
        SELECT id, rule, scope_key, created_at, expires_at, comment, created_by,
               created_at <= $now AND expires_at > $now AS active
        FROM alert_silences WHERE expires_at > $ended_since
        ORDER BY active DESC, expires_at, id""",
                                 {"now": now, "ended_since": ended_since or now - DAY}))


def alert_scopes(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """The scopes each rule has been evaluated for (for silencing one scope)."""
    out: dict[str, list[str]] = {}
    for rule, scope_key in conn.execute(
            "SELECT DISTINCT rule, scope_key FROM alert_states ORDER BY 1, 2").fetchall():
        out.setdefault(rule, []).append(scope_key)
    return out
