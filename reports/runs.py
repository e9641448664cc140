"""The weekly report written, queued and sent: once per organization and week.

After every collection, once the alerts are checked, the worker (:func:`write_due_reports`)
writes each due organization's CSV into the reports folder, then records the run in
``report_runs`` and queues the report's letter (:mod:`reports.letter`) for ``[reports]
channels`` in the alerts' outbox, in one transaction: the table's key (organization, week) is
what makes it once, across restarts and concurrent processes. :func:`send_queued` then sends
it (the worker's report step, and ``spendwatch report send``) under the alerts' retry rules and
delivery log (``alerts.outbox.deliver_pending``). A queued report whose file was cleaned away
meanwhile has it written again from the warehouse before it goes out (:func:`restore_files`).

Cost keeps changing for ``collection.cost_lookback_hours`` after the week ends: the summary
says so, and once the collectors have read past that moment the worker writes the file again,
once. One organization failing never stops another, nor the alerts.

Report files are the organization's spending: each is written 0600, and the folders made for
them 0700, whatever the umask (:func:`write_private`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import duckdb

from alerts.model import CheckReport, Letter
from alerts.outbox import ChannelFactory, default_channel, deliver_pending, queue, \
    queued_letters
from alerts.states import Kind, Status
from reports.letter import letter
from reports.schedule import LATE, coverage_gap, due_at, settled, weeks_due
from reports.summary import Mover, WeeklyReport, summarise
from reports.weekly import default_report_path, iso_week_range, total_cost, week_name, \
    weekly_rows, write_csv
from spendwatch import storage
from spendwatch.config import Config
from spendwatch.errors import ConfigError, ReportError, SpendwatchError
from spendwatch.files import make_private, private_folder
from spendwatch.numbers import tokens, usd
from spendwatch.warehouse.batch import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportRun:
    """What :func:`write_due_reports` did for one organization."""

    organization: str
    week: str
    # "written" | "rewritten final" | "already written" | "waiting" | "not collected" | "failed"
    action: str
    detail: str
    path: Path | None = None


def write_private(rows: list[dict[str, Any]], path: Path) -> Path:
    """:func:`reports.weekly.write_csv` into a folder created 0700 when missing, the file
    then 0600. Raises ReportError (one line) when it cannot be written."""
    try:
        private_folder(path.parent)
    except OSError:
        pass  # write_csv says why, in its one line
    target = write_csv(rows, path)
    make_private(target)
    return target


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
        batch = Batch(conn, config)
        rows = weekly_rows(batch, monday, sunday, organization)
        final = settled(conn, config, organization, week)
        summary = summarise(batch, organization, week, rows, path, now, final)
    write_private(rows, path)
    summary = replace(summary, csv_size=path.stat().st_size)
    return summary, ReportRun(organization, week, "written",
                              f"{usd(summary.total_usd)}, {tokens(len(rows))} rows", path)


def write_report(config: Config, organization: str, week: str, now: datetime,
                 again: bool = False) -> ReportRun:
    """Write ``week``'s report of ``organization`` and queue its delivery, unless it was
    written before (then nothing happens: it is sent once). ``again`` (a person asking, with
    ``report send --again``) writes it from the data as it is now and sends it once more."""
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
    def record(conn: duckdb.DuckDBPyConnection) -> bool:
        # The lock: another writer recording a week at the same time (a thread, another
        # worker) conflicts, is retried and finds this week's row: its letter is not sent.
        storage.lock(conn, "reports")
        if again:
            conn.execute("DELETE FROM report_runs WHERE organization = ? AND week = ?",
                         [organization, week])
        elif conn.execute("SELECT count(*) FROM report_runs WHERE organization = ? AND "
                          "week = ?", [organization, week]).fetchone() != (0,):
            return False
        conn.execute("INSERT INTO report_runs (organization, week, written_at, path, rows, "
                     "total_usd, channels, final_at, final_total_usd) VALUES (?, ?, ?, ?, ?, "
                     "?, ?, ?, ?)", values)
        queue(conn, letter(summary), channels, now)
        return True
    if not storage.written(config, record, f"recording the report of {week}"):
        return ReportRun(organization, week, "already written", "by another writer")
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
        rows = weekly_rows(Batch(conn, config), monday, sunday, organization)
    total = total_cost(rows)
    target, error = Path(path), None
    try:
        write_private(rows, target)
    except ReportError as exc:
        error = str(exc)
        fallback = default_report_path(config, organization, week)
        if fallback != target:
            try:
                target, error = write_private(rows, fallback), None
            except ReportError:
                pass
    def settle(conn: duckdb.DuckDBPyConnection) -> None:
        if error is None:
            conn.execute("UPDATE report_runs SET final_at = ?, final_total_usd = ?, rows = ?, "
                         "path = ? WHERE organization = ? AND week = ?",
                         [now, total, len(rows), str(target), organization, week])
        else:
            conn.execute("UPDATE report_runs SET final_at = ? WHERE organization = ? AND "
                         "week = ?", [now, organization, week])
    storage.written(config, settle, f"recording {organization!r}'s settled week {week}")
    if error is not None:
        return ReportRun(organization, week, "failed", f"the settled week: {error}")
    return ReportRun(organization, week, "rewritten final",
                     f"{usd(total)}, {tokens(len(rows))} rows", target)


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
    """The worker's weekly step (then :func:`send_queued` sends what waits): write (and queue)
    each organization's due weeks not written yet (:func:`weeks_due`), write settled weeks
    again, and write again the files of queued reports that are gone (:func:`restore_files`).
    Nothing when disabled. One organization failing (its file cannot be written, ...) never
    stops the others."""
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
    restore_files(config)
    return [r for r in runs if r is not None]


def check_reports_folder(config: Config) -> Config:
    """At the worker's start: the config, with reports turned off (and one warning) when the
    reports folder cannot be written and the file has no [reports] table (nobody asked for
    them: the alerts must not stop for it). Raises ConfigError, one line, when it has one."""
    if not config.reports.enabled:
        return config
    folder = config.reports_folder
    try:
        private_folder(folder)
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
        log.info("weekly report %s of %s %s: %s (%s)", run.week, run.organization,
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


def summary_of_earlier_version(payload: str) -> WeeklyReport:
    """A report queued by spendwatch before letters (its summary's fields as JSON), read back.
    Raises ValueError when ``payload`` is not one."""
    def dec(value: str | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    try:
        d = json.loads(payload)
        return WeeklyReport(
            organization=d["organization"], week=d["week"],
            since=date.fromisoformat(d["since"]), until=date.fromisoformat(d["until"]),
            timezone=d["timezone"], total_usd=Decimal(d["total_usd"]), rows=int(d["rows"]),
            csv_name=d["csv_name"], csv_path=d["csv_path"],
            at=datetime.fromisoformat(d["at"]), previous_usd=dec(d["previous_usd"]),
            movers=tuple(Mover(m[0], m[1], Decimal(m[2]), Decimal(m[3])) for m in d["movers"]),
            cache_hit_ratio=dec(d["cache_hit_ratio"]),
            savings=tuple((label, Decimal(value)) for label, value in d["savings"]),
            provisional_until=(None if d["provisional_until"] is None
                               else datetime.fromisoformat(d["provisional_until"])),
            dashboard_url=d["dashboard_url"])
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError) as exc:
        raise ValueError(f"not a stored weekly report ({type(exc).__name__})") from None


def upgrade_queued(config: Config) -> int:
    """Turn the reports that an earlier spendwatch queued (a summary, not a letter) and that
    still wait into letters, so an upgrade loses no report. Returns how many; the writer is
    taken only when there is one."""
    with storage.reader(config) as conn:
        waiting = conn.execute("SELECT id, payload_json FROM alert_notifications WHERE kind = ? "
                               "AND status = ?", [Kind.REPORT, Status.PENDING]).fetchall()
    upgraded = []
    for notification_id, payload in waiting:
        try:
            Letter.from_json(payload)
            continue
        except ValueError:
            pass
        try:
            upgraded.append((letter(summary_of_earlier_version(payload)).to_json(),
                             notification_id))
        except ValueError:
            continue  # neither: the outbox says it cannot be read when it comes to it
    if upgraded:
        storage.written(config, lambda conn: conn.executemany(
            "UPDATE alert_notifications SET payload_json = ? WHERE id = ?", upgraded),
            "upgrading queued reports")
    return len(upgraded)


def restore_files(config: Config) -> None:
    """Write again, from the warehouse, the file of every queued report (a letter waiting in
    the outbox) that is gone since it was written: the email that carries it goes out whole.
    A file that cannot be written is logged; the outbox then says it cannot be read. Reports
    queued by an earlier spendwatch are made letters first (:func:`upgrade_queued`)."""
    try:
        upgrade_queued(config)
        letters = queued_letters(config)
    except SpendwatchError as exc:
        log.error("the queued weekly reports cannot be read: %s", exc)
        return
    for queued in letters:
        attachment = queued.attachment
        organization, week = queued.labels.get("organization"), queued.labels.get("week")
        if attachment is None or organization is None or week is None:
            continue
        path = Path(attachment.path)
        if path.exists():
            continue
        log.warning("the report file %s is gone; writing it again", path)
        monday, sunday = iso_week_range(week)
        try:
            with storage.reader(config) as conn:
                rows = weekly_rows(Batch(conn, config), monday, sunday, organization)
            write_private(rows, path)
        except SpendwatchError as exc:
            log.error("the report file %s cannot be written again: %s", path, exc)
        except Exception:
            log.exception("writing the report file %s again failed", path)


def send_queued(config: Config, now: datetime, report: CheckReport,
                factory: ChannelFactory = default_channel) -> None:
    """Send the queued reports now (``spendwatch report send``), their files written again
    first when gone; pending alerts are left to the alert check."""
    restore_files(config)
    deliver_pending(config, now, report, factory, kinds=(Kind.REPORT,))
