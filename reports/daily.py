"""The daily digest: yesterday's spend of each organization, sent each morning (off by default).

With ``[reports] daily = true`` the worker sends, after each collection from ``[reports] time``
(local) on, the digest of the day before to ``[reports] channels``: the day's total, its change
against the same weekday a week earlier, the features and models that moved most against that
day, the alerts firing now, and the month so far. It goes through the alerts' outbox like the
weekly report (a :class:`alerts.model.Letter`: the same retries, delivery log and channels),
and once per organization and day: the ``digest_runs`` row and the queued letter are written in
one transaction, and the row's key (organization, day) refuses a second one, across restarts
and concurrent workers.

A day is told only once it is collected whole (usage and cost both cover it in
``sync_state``): a collector that is behind delays the digest rather than sending a short day.
Only the latest due day is sent: a digest that could not go out before the next one fell due
(the worker was down, the collectors behind) is left out, since the next one tells a fresher
day. Its cost may still change for ``collection.cost_lookback_hours``; the digest says until
when. Every figure comes from the read side, as on the dashboard and in the weekly report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable
from zoneinfo import ZoneInfo

import duckdb

from alerts.history import firing_alerts
from alerts.model import Letter
from alerts.outbox import queue
from alerts.states import State
from alerts.words import format_time, page_url, scope_detail
from reports.letter import (Sections, change_text, compose_html, compose_slack, compose_text,
                            month_section, mover_sections, one_line_slack)
from reports.summary import Mover, movers
from spendwatch import storage
from spendwatch.config import Config
from spendwatch.errors import SpendwatchError
from spendwatch.numbers import round_cents, usd
from spendwatch.warehouse.batch import Batch
from spendwatch.warehouse.figures import is_stored, month_to_date, total_spend
from spendwatch.timeutil import local_range, local_today

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class DailyDigest:
    """The digest of one organization's local ``day``, as its letter tells it.

    ``week_before_usd`` is the same weekday a week earlier, None (and no movers) when that day
    is not stored whole; ``alerts`` are the summaries of the alerts firing at ``at`` that
    concern the organization; ``provisional_until`` is when the day's cost stops changing.
    """

    organization: str
    day: date
    timezone: str
    total_usd: Decimal
    at: datetime
    week_before_usd: Decimal | None = None
    movers: tuple[Mover, ...] = ()
    alerts: tuple[str, ...] = ()
    month_to_date_usd: Decimal | None = None
    forecast_usd: Decimal | None = None
    provisional_until: datetime | None = None
    dashboard_url: str | None = None

    @property
    def day_text(self) -> str:
        """``Mon 23 Nov 2026``."""
        return day_text(self.day)

    @property
    def title(self) -> str:
        return f"[spendwatch] Daily digest {self.day_text}: {self.organization}"


def day_text(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b %Y}"


# --- when ------------------------------------------------------------------------------------

def due_day(config: Config, now: datetime) -> date:
    """The latest local day whose digest is due at ``now``: yesterday from ``[reports] time``
    on, the day before until then."""
    today = local_today(now, config.tz)
    due_today = datetime.combine(today, config.reports.time, tzinfo=config.tz) <= now
    return today - timedelta(days=1 if due_today else 2)


def stored_whole(batch: Batch, organization: str, day: date) -> bool:
    """Whether ``day``'s usage and cost of ``organization`` are both collected to its end."""
    start, end = local_range(day, day, batch.config.tz)
    return is_stored(batch, start, end, [organization])


# --- what ------------------------------------------------------------------------------------

def organization_alerts(batch: Batch, organization: str, now: datetime) -> tuple[str, ...]:
    """The alerts firing at ``now`` whose scope is ``organization`` or every organization,
    oldest first, each as its rule, its scope (``feature evals``) and its summary; a silenced
    one says so."""
    lines = []
    for alert in firing_alerts(batch.conn, now):
        if alert["state"] != State.FIRING or alert["summary"] is None:
            continue
        scope = json.loads(alert["scope_json"] or "{}")
        if scope.get("organization", organization) != organization:
            continue
        named = scope_detail(scope)
        lines.append(f"{alert['rule']}{f' ({named})' if named else ''}: {alert['summary']}"
                     + (" (silenced)" if alert["silenced"] else ""))
    return tuple(lines)


def digest(batch: Batch, organization: str, day: date, now: datetime) -> DailyDigest:
    """The digest of ``organization``'s local ``day`` at ``now``, read in ``batch``."""
    config = batch.config
    total = total_spend(batch, day, day, [organization])
    before: Decimal | None = None
    moved: tuple[Mover, ...] = ()
    earlier = day - WEEK
    if stored_whole(batch, organization, earlier):
        before, moved = movers(batch, organization, (day, day), (earlier, earlier))
    month = month_to_date(batch, now, [organization])
    hours = max(config.collection.cost_lookback_hours, config.collection.usage_lookback_hours)
    settles = local_range(day, day, config.tz)[1] + timedelta(hours=hours)
    return DailyDigest(
        organization=organization, day=day, timezone=config.timezone, total_usd=total, at=now,
        week_before_usd=before, movers=moved,
        alerts=organization_alerts(batch, organization, now),
        month_to_date_usd=month.month_to_date_usd if month.complete else None,
        forecast_usd=month.forecast_usd,
        provisional_until=settles if settles > now else None,
        dashboard_url=page_url(config.alerts.dashboard_url, "Spend",
                               {"period": [day.isoformat()], "organization": organization}))


# --- its words -------------------------------------------------------------------------------

def headline(d: DailyDigest) -> str:
    """``acme spent $412.30 on Mon 23 Nov 2026 (America/Chicago).``"""
    return f"{d.organization} spent {usd(d.total_usd)} on {d.day_text} ({d.timezone})."


def sections(d: DailyDigest) -> Sections:
    """The digest's sections after the headline: (heading, lines), empty ones left out but the
    alerts (that none fire is news too)."""
    out: Sections = []
    earlier = day_text(d.day - WEEK)
    if d.week_before_usd is not None:
        out.append(("Change", [f"{change_text(d.total_usd, d.week_before_usd)} on "
                               f"{earlier} ({usd(d.week_before_usd)})"]))
    out += mover_sections(d.movers, against=earlier)
    out.append(("Alerts firing", list(d.alerts) or ["None"]))
    out += month_section(d.at, d.timezone, d.month_to_date_usd, d.forecast_usd)
    if d.provisional_until is not None:
        until = d.provisional_until.astimezone(ZoneInfo(d.timezone))
        out.append(("Still settling", [f"The day's cost may still change until "
                                       f"{format_time(until)}"]))
    return out


def empty(d: DailyDigest) -> bool:
    return not round_cents(d.total_usd) and not d.alerts and not d.week_before_usd


def empty_line(d: DailyDigest) -> str:
    return (f"No spend recorded for {d.organization} on {d.day_text} ({d.timezone}), "
            "and no alert firing.")


def letter(d: DailyDigest) -> Letter:
    """The digest as the channels send it; its key is the organization's and the day's."""
    if empty(d):
        line = empty_line(d)
        text, page, slack = line + "\n", compose_html(line, [], None), one_line_slack(line)
    else:
        head, parts = headline(d), sections(d)
        text, page = compose_text(head, parts, d.dashboard_url), \
            compose_html(head, parts, d.dashboard_url)
        slack = compose_slack(f":spiral_calendar_pad: Daily spend {d.day_text}: "
                              f"{d.organization}", head, parts, d.dashboard_url)
    return Letter(key=f"digest|{d.organization}|{d.day.isoformat()}", title=d.title,
                  subject=f"{d.title} ({usd(d.total_usd)})", text=text, html=page, slack=slack,
                  at=d.at, labels={"organization": d.organization, "day": d.day.isoformat()})


# --- written and queued, once ----------------------------------------------------------------

@dataclass(frozen=True)
class DigestRun:
    """What :func:`write_due_digests` did for one organization."""

    organization: str
    day: date
    action: str              # "queued" | "already sent" | "waiting" | "failed"
    detail: str


def queue_digest(config: Config, organization: str, day: date, now: datetime) -> DigestRun:
    """Build ``day``'s digest of ``organization`` and queue it for ``[reports] channels``,
    unless it was queued before (by this process or another)."""
    with storage.reader(config) as conn:
        if conn.execute("SELECT count(*) FROM digest_runs WHERE organization = ? AND day = ?",
                        [organization, day]).fetchone() != (0,):
            return DigestRun(organization, day, "already sent", "once a day")
        batch = Batch(conn, config)
        if not stored_whole(batch, organization, day):
            return DigestRun(organization, day, "waiting",
                             "the day is not collected to its end yet")
        told = digest(batch, organization, day, now)
    channels = config.reports.channels
    def record(conn: duckdb.DuckDBPyConnection) -> bool:
        # The lock: another writer recording a digest at the same time (a thread, another
        # worker) conflicts, is retried and finds this day's row: its letter is not sent.
        storage.lock(conn, "digests")
        if conn.execute("SELECT count(*) FROM digest_runs WHERE organization = ? AND day = ?",
                        [organization, day]).fetchone() != (0,):
            return False
        conn.execute("INSERT INTO digest_runs (organization, day, written_at, total_usd, "
                     "channels) VALUES (?, ?, ?, ?, ?)",
                     [organization, day, now, told.total_usd, ",".join(channels)])
        queue(conn, letter(told), channels, now)
        return True
    if not storage.written(config, record, f"recording the digest of {day}"):
        return DigestRun(organization, day, "already sent", "by another writer")
    return DigestRun(organization, day, "queued", usd(told.total_usd))


def write_due_digests(config: Config, now: datetime,
                      step: Callable[[Config, str, date, datetime], DigestRun] = queue_digest
                      ) -> list[DigestRun]:
    """The worker's daily step (``reports.runs.send_queued`` then sends what waits): queue the
    due day's digest of each organization not queued yet. Nothing unless ``[reports] daily``
    (and reports) are on. One organization failing never stops the others."""
    if not (config.reports.enabled and config.reports.daily):
        return []
    day = due_day(config, now)
    runs = []
    for org in config.organizations:
        try:
            runs.append(step(config, org.name, day, now))
        except SpendwatchError as exc:
            runs.append(DigestRun(org.name, day, "failed", str(exc)))
        except Exception as exc:
            log.exception("daily digest %s of %s", day, org.name)
            runs.append(DigestRun(org.name, day, "failed", f"unexpected {type(exc).__name__}"))
    return runs


def log_digest(run: DigestRun) -> None:
    """Queued at INFO (its delivery is logged by the outbox), a failure as an error."""
    if run.action == "failed":
        log.error("daily digest %s of %s not sent: %s", run.day, run.organization, run.detail)
    elif run.action == "queued":
        log.info("daily digest %s of %s queued (%s)", run.day, run.organization, run.detail)
    else:
        log.debug("daily digest %s of %s: %s", run.day, run.organization, run.action)
