"""The worker's schedule: collect every few minutes with APScheduler.

The collection job never overlaps itself (``max_instances=1``), missed runs coalesce into one
(``coalesce=True``), and it also runs once at start. Each run opens and closes its own
database connections (see DESIGN.md), so the dashboard and one-off commands can read between
windows.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.schedulers.base import BaseScheduler

from collectors.sync import CollectOptions, OrgResult, collect, record_run
from spendwatch.errors import SpendwatchError
from spendwatch.config import Config, resolve_admin_key
from spendwatch.timeutil import utcnow

log = logging.getLogger(__name__)
COLLECT_JOB = "collect"


def collection_job(config: Config, stop: threading.Event | None = None,
                   after: Callable[[Config, datetime], None] | None = None) -> None:
    """One scheduled collection; ``after`` (alert evaluation, later) runs once it is stored.

    Never raises: a failed run is logged and recorded, and the next run tries again. Setting
    ``stop`` ends it at the next window boundary.
    """
    now = utcnow()
    try:
        results = collect(config, CollectOptions(stop=stop), now=now)
        for result in results:
            if result.ok:
                log.info("%s: %d windows, %d usage rows, %d cost rows", result.organization,
                         result.windows, result.usage_rows, result.cost_rows)
    except Exception as exc:
        # Nothing ran (a key file gone, the database locked): say so where data_stale looks.
        log.error("collection run failed: %s", exc if isinstance(exc, SpendwatchError)
                  else type(exc).__name__)
        record_failed_runs(config, now, str(exc) if isinstance(exc, SpendwatchError)
                           else f"unexpected {type(exc).__name__}")
    finally:
        if after is not None:
            try:
                after(config, utcnow())  # a fresh clock: silences made meanwhile count
            except Exception:
                log.exception("alert check after the collection failed")


def record_failed_runs(config: Config, now: datetime, error: str) -> None:
    """A failed run for every organization, when the collection could not even start."""
    for org in config.organizations:
        try:
            record_run(config.database_path, config.storage.lock_timeout_seconds,
                       OrgResult(org.name, error=error), now, utcnow())
        except SpendwatchError as exc:
            log.error("could not record the failed run of %r: %s", org.name, exc)


def schedule(scheduler: BaseScheduler, config: Config, start_now: bool = True,
             stop: threading.Event | None = None,
             after: Callable[[Config, datetime], None] | None = None) -> None:
    """Add the worker's jobs to ``scheduler``; ``after`` runs after each collection."""
    interval = config.collection.interval_minutes * 60
    scheduler.add_job(collection_job, "interval", args=[config, stop, after], id=COLLECT_JOB,
                      seconds=interval, max_instances=1, coalesce=True,
                      misfire_grace_time=interval,
                      next_run_time=utcnow() if start_now else None, replace_existing=True)


def run_worker(config: Config, after: Callable[[Config, datetime], None] | None = None) -> None:
    """Block, collecting on schedule (then ``after``), until SIGINT or SIGTERM."""
    for org in config.organizations:
        resolve_admin_key(config, org)  # fail at start, not at the first run
    scheduler = BlockingScheduler(timezone="UTC")
    stopping = threading.Event()
    schedule(scheduler, config, stop=stopping, after=after)

    def stop(signum: int, frame: Any) -> None:
        log.warning("stopping the worker (signal %d): a running collection ends after its "
                    "current window", signum)
        stopping.set()
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    log.warning("spendwatch worker started: collecting %d organization(s) every %d minutes",
                len(config.organizations), config.collection.interval_minutes)
    try:
        scheduler.start()
    except KeyboardInterrupt:
        stopping.set()
        scheduler.shutdown(wait=False)


def start_background_worker(config: Config, stop: threading.Event | None = None,
                            after: Callable[[Config, datetime], None] | None = None
                            ) -> BackgroundScheduler:
    """The same schedule in a background thread (the demo runs it beside the dashboard)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule(scheduler, config, start_now=False, stop=stop, after=after)
    scheduler.start()
    return scheduler
