"""The weekly reports the worker wrote, and their delivery, for the dashboard."""

from __future__ import annotations

from typing import Any

import duckdb

from alerts.history import Row, records
from alerts.states import Kind


def report_runs(conn: duckdb.DuckDBPyConnection, limit: int = 20) -> list[Row]:
    """The weekly reports the worker wrote, newest week first: ``week``, ``organization``,
    ``written_at``, ``rows`` and ``total_usd`` (of the file as it is now), ``final_at`` (when it
    was written with settled data),
    ``path`` and ``deliveries`` (``"finance-email: sent, ops-slack: pending"``, None when it
    went to no channel). Empty for a database the worker has not opened since the upgrade."""
    try:
        return records(conn.execute("""
            SELECT r.week, r.organization, r.written_at, r.rows,
                   coalesce(r.final_total_usd, r.total_usd) AS total_usd, r.final_at,
                   r.path, string_agg(n.channel || ': ' || n.status, ', '
                                      ORDER BY n.channel) AS deliveries
            FROM report_runs r LEFT JOIN alert_notifications n ON n.kind = $report
                AND coalesce(json_extract_string(n.payload_json, '$.labels.week'),
                             json_extract_string(n.payload_json, '$.week')) = r.week
                AND coalesce(json_extract_string(n.payload_json, '$.labels.organization'),
                             json_extract_string(n.payload_json, '$.organization'))
                    = r.organization
            GROUP BY ALL ORDER BY r.week DESC, r.organization LIMIT $limit""",
                                     {"limit": limit, "report": Kind.REPORT}))
    except duckdb.CatalogException:
        return []
