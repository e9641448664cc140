"""When a weekly report is due, and whether its week can be reported yet.

Last week's report is *due* from ``[reports] weekday`` at ``time`` (local, in the configured
time zone) of the following week. A week is written only once it is collected whole (both
streams cover it in ``sync_state``): a collector that is down delays the report rather than
sending a short one. Weeks the worker missed (it was down) are caught up, up to
CATCH_UP_WEEKS; a first install starts with the due week, and a week that began before the
data did is left to ``spendwatch report send``. Cost keeps changing for
``collection.cost_lookback_hours`` after the week ends (:func:`final_at`, :func:`settled`).

Writing and sending them is :mod:`reports.runs`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from reports.weekly import iso_week_range, week_name
from spendwatch.config import WEEKDAYS, Config
from spendwatch.timeutil import local_range, local_today

CATCH_UP_WEEKS = 4
LATE = timedelta(days=1)  # a week still unwritten this long after it fell due is a warning


# --- when ------------------------------------------------------------------------------------

def due_at(config: Config, week: str) -> datetime:
    """The moment ``week``'s report is due: its next ``[reports] weekday`` at ``time``."""
    _, sunday = iso_week_range(week)
    day = sunday + timedelta(days=1 + WEEKDAYS.index(config.reports.weekday))
    return datetime.combine(day, config.reports.time, tzinfo=config.tz)


def due_week(config: Config, now: datetime) -> str:
    """The latest week whose report is due at ``now``."""
    today = local_today(now, config.tz)
    monday = today - timedelta(days=today.weekday())
    week = week_name(monday - timedelta(days=7))
    if due_at(config, week) > now:
        week = week_name(monday - timedelta(days=14))
    return week


def final_at(config: Config, week: str) -> datetime:
    """From when the week's usage and cost no longer change (the collectors' re-read windows)."""
    monday, sunday = iso_week_range(week)
    hours = max(config.collection.cost_lookback_hours, config.collection.usage_lookback_hours)
    return local_range(monday, sunday, config.tz)[1] + timedelta(hours=hours)


def settled(conn: duckdb.DuckDBPyConnection, config: Config, organization: str,
            week: str) -> bool:
    """Whether both streams were collected past the week's settling moment (:func:`final_at`):
    the clock alone is not enough when the collector was down."""
    row = conn.execute("SELECT count(*) FILTER (WHERE covered_until >= ?), count(*) "
                       "FROM sync_state WHERE organization = ?",
                       [final_at(config, week), organization]).fetchone()
    return bool(row and row[1] >= 2 and row[0] == row[1])


def weeks_due(conn: duckdb.DuckDBPyConnection, config: Config, organization: str,
              now: datetime) -> list[str]:
    """The weeks to write for ``organization`` at ``now`` and not written yet, oldest first:
    the due week, and every week of the CATCH_UP_WEEKS before it that fell due since the first
    report was written (the worker was down, the collectors were behind, a write failed).
    A first install starts with the due week only; a week older than that window is left to
    ``spendwatch report send --week``."""
    latest = due_week(config, now)
    row = conn.execute("SELECT min(written_at) FROM report_runs WHERE organization = ?",
                       [organization]).fetchone()
    first = row[0] if row else None
    written = {w for (w,) in conn.execute("SELECT week FROM report_runs WHERE organization = ?",
                                          [organization]).fetchall()}
    monday = iso_week_range(latest)[0]
    weeks = [latest] if latest not in written else []
    for back in range(1, CATCH_UP_WEEKS):
        week = week_name(monday - timedelta(days=7 * back))
        if first is not None and due_at(config, week) > first and week not in written:
            weeks.append(week)
    return weeks[::-1]


# --- what ------------------------------------------------------------------------------------

def coverage_gap(conn: duckdb.DuckDBPyConnection, config: Config, organization: str,
                 week: str) -> tuple[str, str] | None:
    """Why ``week`` of ``organization`` cannot be reported yet: ("waiting", why) while the
    collectors have not reached its end, ("not collected", why) when its start never was;
    None when both streams cover it whole."""
    monday, sunday = iso_week_range(week)
    start, end = local_range(monday, sunday, config.tz)
    states = conn.execute("SELECT stream, covered_from, covered_until FROM sync_state "
                          "WHERE organization = ?", [organization]).fetchall()
    if len(states) < 2:
        return "waiting", "nothing collected yet"
    for stream, covered_from, covered_until in sorted(states):
        if covered_from > start:
            return "not collected", (f"{stream} is stored from {covered_from:%Y-%m-%d %H:%M} UTC "
                               f"only; run `spendwatch collect --since {monday}`, then "
                               f"`spendwatch report send --week {week}`")
        if covered_until < end:
            return "waiting", (f"{stream} is collected up to {covered_until:%Y-%m-%d %H:%M} "
                               "UTC, before the week's end")
    return None
