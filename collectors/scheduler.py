"""The worker's schedule: one job, run every ``collection.interval_minutes`` with APScheduler.

The job never overlaps itself (``max_instances=1``), missed runs coalesce into one
(``coalesce=True``), and it also runs once at start. What the job does is the caller's (the
worker's round: ``spendwatch.cli.worker``); this module only runs it and stops it. Stopping
(SIGTERM, Ctrl-C) sets the ``stop`` event the job was given, so a running collection ends at
its next window boundary, and shuts the scheduler down.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from spendwatch.config import Config
from spendwatch.timeutil import utcnow

log = logging.getLogger(__name__)
COLLECT_JOB = "collect"

#: How often the main thread looks for a stop (see :func:`run_schedule`).
STOP_POLL_SECONDS = 1.0
#: The scheduled job: called with the config and the stop event; it must never raise.
Job = Callable[[Config, threading.Event], None]


def schedule(scheduler: BaseScheduler, config: Config, job: Job, start_now: bool = True,
             stop: threading.Event | None = None) -> threading.Event:
    """Add ``job`` to ``scheduler`` on the collection interval; returns the stop event it gets."""
    stop = stop if stop is not None else threading.Event()
    interval = config.collection.interval_minutes * 60
    scheduler.add_job(job, "interval", args=[config, stop], id=COLLECT_JOB,
                      seconds=interval, max_instances=1, coalesce=True,
                      misfire_grace_time=interval,
                      next_run_time=utcnow() if start_now else None, replace_existing=True)
    return stop


def run_schedule(config: Config, job: Job) -> None:
    """Block, running ``job`` now and on schedule, until SIGINT or SIGTERM; then wait for a
    running job to end (a collection ends at its next window boundary).

    The schedule runs in a background thread and the main thread only waits for a stop,
    waking every second. That is on purpose: the kernel may hand SIGTERM to any thread, and
    Python runs the handler in the main thread only once that thread runs again, so a main
    thread asleep until the next job (an interval away) would not stop until then.
    """
    scheduler = BackgroundScheduler(timezone="UTC")
    stopping = schedule(scheduler, config, job)

    def stop(signum: int, frame: Any) -> None:
        log.warning("stopping the worker (signal %d): a running collection ends after its "
                    "current window", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    log.warning("spendwatch worker started: collecting %d organization(s) every %d minutes",
                len(config.organizations), config.collection.interval_minutes)
    scheduler.start()
    try:
        while not stopping.wait(STOP_POLL_SECONDS):
            pass
    except KeyboardInterrupt:
        stopping.set()
    finally:
        scheduler.shutdown(wait=True)


def start_background_schedule(config: Config, job: Job,
                              stop: threading.Event | None = None) -> BackgroundScheduler:
    """The same schedule in a background thread, first run after one interval (the demo runs
    it beside the dashboard)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule(scheduler, config, job, start_now=False, stop=stop)
    scheduler.start()
    return scheduler
