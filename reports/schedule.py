"""The weekly report on schedule: written by the worker, summarised, and sent once.

Last week's report is *due* from ``[reports] weekday`` at ``time`` (local, in the configured
time zone) of the following week. After every collection the worker (:func:`after_collection`)
writes each due organization's CSV into the reports folder, then records the run in
``report_runs`` and queues the summary for ``[reports] channels`` in the alerts' outbox, in one
transaction: the table's key (organization, week) is what makes it once, across restarts and
concurrent processes. ``alerts.engine.deliver_pending`` then sends it with the alerts, under
their retry rules and delivery log.

A week is written only once it is collected whole (both streams cover it in ``sync_state``):
a collector that is down delays the report rather than sending a short one. Weeks the worker
missed (it was down) are caught up, up to CATCH_UP_WEEKS; a first install starts with the due
week, and a week that began before the data did is left to ``spendwatch report send``. Cost
keeps changing for ``collection.cost_lookback_hours`` after the week ends: the summary says
so, and once the collectors have read past that moment the worker writes the file again, once.
One organization failing never stops another, nor the alerts.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

import duckdb

from alerts.model import Mover, WeeklyReport
from spendwatch import storage
from spendwatch.config import WEEKDAYS, Config
from spendwatch.errors import ConfigError, ReportError, SpendwatchError
from reports.weekly import (default_report_path, iso_week_range, total_cost, week_name,
                                weekly_rows, write_csv)
from spendwatch.timeutil import local_range, local_today

log = logging.getLogger(__name__)
MOVERS = 3  # per dimension
CATCH_UP_WEEKS = 4
LATE = timedelta(days=1)  # a week still unwritten this long after it fell due is a warning


@dataclass(frozen=True)
class ReportRun:
    """What :func:`write_due_reports` did for one organization."""

    organization: str
    week: str
    # "written" | "rewritten final" | "already written" | "waiting" | "not collected" | "failed"
    action: str
    detail: str
    path: Path | None = None


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


def _movers(conn: duckdb.DuckDBPyConnection, config: Config, organization: str,
            monday: date, sunday: date) -> tuple[Decimal, tuple[Mover, ...]]:
    """Last week's total, and the features and models whose spend changed most against it
    (MOVERS of each): two queries, by feature and model, one per week."""
    from spendwatch.warehouse.figures import label_of, spend_grouped

    weeks = ((monday, sunday), (monday - timedelta(days=7), sunday - timedelta(days=7)))
    spent: dict[tuple[str, str], list[Decimal]] = {}
    previous = Decimal(0)
    for index, (since, until) in enumerate(weeks):
        for row in spend_grouped(conn, config, since, until, ["feature", "model"],
                                 {"organization": [organization]}):
            if index:
                previous += row["cost_usd"]
            for dimension in ("feature", "model"):
                pair = spent.setdefault((dimension, label_of(row, dimension)),
                                        [Decimal(0), Decimal(0)])
                pair[index] += row["cost_usd"]
    movers: list[Mover] = []
    for dimension in ("feature", "model"):
        changed = [Mover(dimension, label, now, was)
                   for (dim, label), (now, was) in spent.items() if dim == dimension
                   and now.quantize(Decimal("0.01")) != was.quantize(Decimal("0.01"))]
        changed.sort(key=lambda m: (-abs(m.change_usd), m.label))
        movers += changed[:MOVERS]
    return previous, tuple(movers)


def _savings(conn: duckdb.DuckDBPyConnection, config: Config, organization: str,
             monday: date, sunday: date) -> tuple[tuple[str, Decimal], ...]:
    """The savings ledger's figures for the week that are not zero, labelled."""
    from spendwatch.savings import ledger

    totals = ledger(conn, config, monday, sunday, [organization]).totals
    figures = [("Prompt caching saved this week (estimated)", totals.cache_savings_usd),
               ("The Batch API saved this week (estimated)", totals.batch_savings_usd),
               ("Cache writes never read cost this week", totals.waste_usd)]
    for lever, words in (("caching", "more prompt caching"), ("batch", "the Batch API"),
                         ("routing", "routing to cheaper models")):
        figures.append((f"Could save a month with {words}",
                        totals.potential_monthly_usd.get(lever, Decimal(0))))
    return tuple((label, value) for label, value in figures
                 if value.quantize(Decimal("0.01")) > 0)


def summarise(conn: duckdb.DuckDBPyConnection, config: Config, organization: str, week: str,
              rows: Sequence[dict[str, Any]], path: Path, now: datetime,
              final: bool = False) -> WeeklyReport:
    """The summary channels send of ``rows`` (the week's report of ``organization``)."""
    from spendwatch.warehouse.figures import INPUT_TOKEN_METRICS, hit_ratio, stored_from

    monday, sunday = iso_week_range(week)
    total = total_cost(rows)
    previous: Decimal | None = None
    movers: tuple[Mover, ...] = ()
    begins = stored_from(conn, [organization])
    if begins is not None and begins <= local_range(monday - timedelta(days=7), monday,
                                                    config.tz)[0]:
        previous, movers = _movers(conn, config, organization, monday, sunday)
    tokens = {m: sum(r[m] for r in rows) for m in INPUT_TOKEN_METRICS}
    base = config.alerts.dashboard_url
    return WeeklyReport(
        organization=organization, week=week, since=monday, until=sunday,
        timezone=config.timezone, total_usd=total, rows=len(rows), csv_name=path.name,
        csv_path=str(path), at=now, previous_usd=previous, movers=movers,
        cache_hit_ratio=hit_ratio(tokens),
        savings=_savings(conn, config, organization, monday, sunday) if rows else (),
        provisional_until=None if final else final_at(config, week),
        dashboard_url=base.rstrip("/") + "/Reports" if base else None)


# --- doing it --------------------------------------------------------------------------------

def _already(config: Config, organization: str, week: str) -> tuple[Any, ...] | None:
    with storage.reader(config) as conn:
        return conn.execute("SELECT written_at, path, final_at FROM report_runs "
                            "WHERE organization = ? AND week = ?",
                            [organization, week]).fetchone()


def _write(config: Config, organization: str, week: str, now: datetime
           ) -> tuple[WeeklyReport | None, ReportRun]:
    monday, sunday = iso_week_range(week)
    path = default_report_path(config, organization, week)
    with storage.reader(config) as conn:
        gap = coverage_gap(conn, config, organization, week)
        if gap is not None:
            return None, ReportRun(organization, week, gap[0], gap[1])
        rows = weekly_rows(conn, config, monday, sunday, organization)
        final = settled(conn, config, organization, week)
        summary = summarise(conn, config, organization, week, rows, path, now, final)
    write_csv(rows, path)
    return summary, ReportRun(organization, week, "written",
                              f"${summary.total_usd:,.2f}, {len(rows):,} rows", path)


def write_report(config: Config, organization: str, week: str, now: datetime,
                 again: bool = False) -> ReportRun:
    """Write ``week``'s report of ``organization`` and queue its delivery, unless it was
    written before (then nothing happens: it is sent once). ``again`` (a person asking, with
    ``report send --again``) writes it from the data as it is now and sends it once more."""
    from alerts.engine import queue_report

    week = week_name(iso_week_range(week)[0])  # one spelling per week: the record's key
    if _already(config, organization, week) and not again:
        return ReportRun(organization, week, "already written", "sent once; not again")
    summary, run = _write(config, organization, week, now)
    if summary is None:
        return run
    channels = config.reports.channels
    final = summary.provisional_until is None
    values = [organization, week, now, summary.csv_path, summary.rows, summary.total_usd,
              ",".join(channels), now if final else None, summary.total_usd if final else None]
    with storage.writer(config) as conn, \
            storage.transaction(conn):
        if again:
            conn.execute("DELETE FROM report_runs WHERE organization = ? AND week = ?",
                         [organization, week])
        inserted = conn.execute(
            "INSERT INTO report_runs (organization, week, written_at, path, rows, total_usd, "
            "channels, final_at, final_total_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING week", values).fetchall()
        if not inserted:  # another process got there first: it sends it
            return ReportRun(organization, week, "already written", "by another process")
        queue_report(conn, summary, channels, now)
    return run


def _rewrite_final(config: Config, organization: str, week: str, path: str,
                   now: datetime) -> ReportRun | None:
    """Write the report again, once, when its week has settled since it was written: to its
    file, or to the reports folder's file when that one cannot be written any more. When
    neither can, it is marked final anyway (the error is the run's), not tried for ever."""
    monday, sunday = iso_week_range(week)
    with storage.reader(config) as conn:
        if not settled(conn, config, organization, week):
            return None
        rows = weekly_rows(conn, config, monday, sunday, organization)
    total = total_cost(rows)
    target, error = Path(path), None
    try:
        write_csv(rows, target)
    except ReportError as exc:
        error = str(exc)
        fallback = default_report_path(config, organization, week)
        if fallback != target:
            try:
                target, error = write_csv(rows, fallback), None
            except ReportError:
                pass
    with storage.writer(config) as conn:
        if error is None:
            conn.execute("UPDATE report_runs SET final_at = ?, final_total_usd = ?, rows = ?, "
                         "path = ? WHERE organization = ? AND week = ?",
                         [now, total, len(rows), str(target), organization, week])
        else:
            conn.execute("UPDATE report_runs SET final_at = ? WHERE organization = ? AND "
                         "week = ?", [now, organization, week])
    if error is not None:
        return ReportRun(organization, week, "failed", f"the settled week: {error}")
    return ReportRun(organization, week, "rewritten final", f"${total:,.2f}, {len(rows):,} rows",
                     target)


def guarded(organization: str, week: str, step: Callable[[], ReportRun | None]
             ) -> ReportRun | None:
    """Run one organization's step; a failure is its run's outcome, never the others'."""
    try:
        return step()
    except SpendwatchError as exc:
        return ReportRun(organization, week, "failed", str(exc))
    except Exception as exc:
        log.exception("weekly report %s of %s", week, organization)
        return ReportRun(organization, week, "failed", f"unexpected {type(exc).__name__}")


def write_due_reports(config: Config, now: datetime) -> list[ReportRun]:
    """The worker's weekly step: write (and queue) each organization's due weeks not written
    yet (:func:`weeks_due`), and write settled weeks again. Nothing when disabled. One
    organization failing (its file cannot be written, ...) never stops the others."""
    if not config.reports.enabled:
        return []
    runs: list[ReportRun | None] = []
    names = [o.name for o in config.organizations]
    for name in names:
        with storage.reader(config) as conn:
            weeks = weeks_due(conn, config, name, now)
        for week in weeks:
            runs.append(guarded(name, week, lambda: write_report(config, name, week, now)))
    with storage.reader(config) as conn:
        unsettled = conn.execute("SELECT organization, week, path FROM report_runs "
                                 "WHERE final_at IS NULL ORDER BY week, organization").fetchall()
    for name, week, path in unsettled:
        if name in names:
            runs.append(guarded(name, week,
                                 lambda: _rewrite_final(config, name, week, path, now)))
    return [r for r in runs if r is not None]


def check_reports_folder(config: Config) -> Config:
    """At the worker's start: the config, with reports turned off (and one warning) when the
    reports folder cannot be written and the file has no [reports] table (nobody asked for
    them: the alerts must not stop for it). Raises ConfigError, one line, when it has one."""
    if not config.reports.enabled:
        return config
    folder = config.reports_folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".spendwatch-check-"):
            pass
    except OSError as exc:
        problem = (f"the reports folder {folder} cannot be written "
                   f"({exc.strerror or type(exc).__name__})")
        if config.reports.configured:
            raise ConfigError(f"{config.path}: {problem}; set [reports] folder to a writable "
                              "folder, or enabled = false") from None
        log.warning("%s: weekly reports are off; add a [reports] table with a writable "
                    "folder to have them", problem)
        return replace(config, reports=replace(config.reports, enabled=False))
    return config


_warned: set[tuple[str, str, str]] = set()  # (organization, week, action), once per process


def log_run(run: ReportRun, config: Config, now: datetime) -> None:
    """Log a run's outcome: what was written, what failed; a week that stays unwritten is
    said once as a warning (when it is late or cannot come), else at INFO."""
    if run.action in ("written", "rewritten final"):
        log.warning("weekly report %s of %s %s: %s (%s)", run.week, run.organization,
                    run.action, run.path, run.detail)
    elif run.action == "failed":
        log.error("weekly report %s of %s not written: %s", run.week, run.organization,
                  run.detail)
    elif run.action in ("waiting", "not collected"):
        late = run.action == "not collected" or now - due_at(config, run.week) > LATE
        key = (run.organization, run.week, run.action)
        if late and key not in _warned:
            _warned.add(key)
            log.warning("weekly report %s of %s not written yet: %s", run.week,
                        run.organization, run.detail)
        else:
            log.info("weekly report %s of %s waits: %s", run.week, run.organization,
                     run.detail)
