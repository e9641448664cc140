"""The worker (``spendwatch run``), assembled in one place: what it does every few minutes.

:func:`worker_round` is the whole of it: collect every organization, then check the alerts,
then write the weekly reports that are due and send them. Alerts come before reports because
they are the urgent part: a week's report (seconds of queries on a large organization) never
delays an alert, and a report step that fails never holds one back. The report step sends
what it queued in the outbox (each report's summary) itself, so a report still goes out in the
round it is written. Each step logs its own failure and never stops the next:
a collection that cannot even start is recorded as a failed run, which is how the
``data_stale`` rule of the alert check then notices it; a failing report never holds back an
alert. :mod:`collectors.scheduler` runs the round on its interval; it knows nothing of what a
round does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial

from alerts.check import check
from alerts.model import CheckReport
from collectors.scheduler import run_schedule
from collectors.sync import CollectOptions, OrgResult, collect, record_run
from reports.daily import log_digest, write_due_digests
from reports.runs import check_reports_folder, log_run, send_queued, write_due_reports
from spendwatch.config import Config, resolve_admin_key
from spendwatch import storage
from spendwatch.errors import SpendwatchError
from spendwatch.timeutil import utcnow

log = logging.getLogger(__name__)


def worker_round(config: Config, stop: threading.Event | None = None,
                 only: Sequence[str] = ()) -> bool:
    """One round of the worker: collect, then the alerts, then the weekly reports.

    ``only``: the organizations this worker collects and reports (``spendwatch run --org``;
    empty: all). Several such workers share one warehouse (a DuckLake), so each checks every
    alert rule over all of it: a rule across organizations sees them all, and two checks at
    once are serialized by the alert lock and send each notification once (the outbox).
    Never raises. Setting ``stop`` ends the collection at once (windows stored so far are
    kept) and skips the rest of the round: the worker is shutting down. True when the
    collection could not even start (the warehouse locked or unreachable): the schedule tries
    again soon rather than an interval later.
    """
    own = only_organizations(config, only)
    failed = collect_step(own, stop)
    if stop is not None and stop.is_set():
        return failed
    after_collection(config, utcnow(), only)  # a fresh clock: what was stored meanwhile counts
    return failed


def only_organizations(config: Config, only: Sequence[str]) -> Config:
    """``config`` with its organizations narrowed to ``only`` (all when empty)."""
    if not only:
        return config
    return replace(config, organizations=tuple(o for o in config.organizations
                                               if o.name in set(only)))


def after_collection(config: Config, now: datetime, only: Sequence[str] = ()) -> None:
    """The rest of a round at a given clock: the alerts (over every organization), then the
    reports of ``only``'s organizations (tests use it with the simulator's clock)."""
    alert_step(config, now)
    report_step(only_organizations(config, only), now)
    maintenance_step(config)


#: How often a worker does a DuckLake's housekeeping (storage.maintain), in seconds.
MAINTENANCE_SECONDS = 3600
_last_maintenance: dict[str, float] = {}


def maintenance_step(config: Config) -> None:
    """A DuckLake's housekeeping, at most hourly per worker. Never raises."""
    last = _last_maintenance.get("at")
    if not config.storage.is_lake or (last is not None
                                      and time.monotonic() - last < MAINTENANCE_SECONDS):
        return
    _last_maintenance["at"] = time.monotonic()
    try:
        storage.maintain(config)
    except Exception as exc:
        log.error("the DuckLake's housekeeping failed: %s", exc if isinstance(
            exc, SpendwatchError) else type(exc).__name__)


def collect_step(config: Config, stop: threading.Event | None = None) -> bool:
    """Collect every organization; a run that cannot even start (a key file gone, the database
    locked) is recorded as a failed run of each organization. An organization's run past
    ``collection.job_deadline_seconds`` stops and is recorded failed with the reason (see
    :func:`collectors.sync.collect`), so the alert check always follows. Never raises; True
    when the run could not start."""
    now = utcnow()
    try:
        for result in collect(config, CollectOptions(stop=stop), now=now):
            if result.ok:
                log.info("%s: %d windows, %d usage rows, %d cost rows", result.organization,
                         result.windows, result.usage_rows, result.cost_rows)
            elif not result.stopped:
                log.error("collection failed: %s", result.error)
        return False
    except Exception as exc:
        error = str(exc) if isinstance(exc, SpendwatchError) else f"unexpected {type(exc).__name__}"
        log.error("collection run failed: %s", error)
        for org in config.organizations:
            try:
                record_run(config,
                           OrgResult(org.name, error=error), now, utcnow())
            except SpendwatchError as record_error:
                log.error("could not record the failed run of %r: %s", org.name, record_error)
        return True


def failed(what: str, exc: Exception) -> None:
    """Log a step's failure: one line for one of spendwatch's own errors (the warehouse
    locked, a channel misconfigured: the message says what to do), the traceback for a bug."""
    if isinstance(exc, SpendwatchError):
        log.error("%s: %s", what, exc)
    else:
        log.error(what, exc_info=exc)


def report_step(config: Config, now: datetime) -> None:
    """Write the weekly reports that are due and the daily digests (``[reports] daily``),
    queue them in the outbox and send them (with any still pending from an earlier round).
    Never raises."""
    try:
        for run in write_due_reports(config, now):
            log_run(run, config, now)
    except Exception as exc:
        failed("writing the weekly reports failed", exc)
    try:
        for digest_run in write_due_digests(config, now):
            log_digest(digest_run)
    except Exception as exc:
        failed("writing the daily digests failed", exc)
    try:
        send_queued(config, now, CheckReport())  # it logs what it could not deliver
    except Exception as exc:
        failed("sending the weekly reports failed", exc)


def alert_step(config: Config, now: datetime) -> None:
    """Evaluate the alert rules and deliver what is due; log what changed and the channels
    that are broken. Never raises."""
    try:
        report = check(config, now)
    except Exception as exc:
        failed("the alert check failed", exc)
        return
    for line in report.transitions:
        log.info("alert %s", line)
    for channel, reason in report.broken_channels.items():
        log.error("alert channel %r is broken: %s", channel, reason)


def run(config: Config, only: Sequence[str] = ()) -> None:
    """Run the worker until SIGINT or SIGTERM (``spendwatch run [--org NAME ...]``).

    Raises ConfigError at start, before anything is scheduled, when the reports folder cannot
    be written (and [reports] asks for reports) or an organization's admin key is missing.
    """
    config = check_reports_folder(config)
    for org in only_organizations(config, only).organizations:
        resolve_admin_key(config, org)  # fail at start, not at the first run
    run_schedule(config, partial(worker_round, only=tuple(only)))
