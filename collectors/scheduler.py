"""The worker's schedule: one job, run every ``collection.interval_minutes`` with APScheduler.

The job never overlaps itself (``max_instances=1``), missed runs coalesce into one
(``coalesce=True``), and it also runs once at start. What the job does is the caller's (the
worker's round: ``spendwatch.cli.worker``); this module only runs it and stops it. Stopping
(SIGTERM, Ctrl-C) sets the ``stop`` event the job was given, so a running collection ends at
once (its HTTP calls wait on the stop flag, see :mod:`collectors.bounds`), and shuts the
scheduler down; a round that is still busy :data:`STOP_GRACE_SECONDS` later (an alert channel
retrying, say) is abandoned and the process exits anyway, so SIGTERM always ends the worker
within seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from spendwatch.config import Config
from spendwatch.timeutil import utcnow

log = logging.getLogger(__name__)
COLLECT_JOB = "collect"

#: How often the main thread looks for a stop (see :func:`run_schedule`).
STOP_POLL_SECONDS = 1.0
#: How long a stop waits for a running round before the process exits without it.
STOP_GRACE_SECONDS = 10.0
#: The scheduled job: called with the config and the stop event; it must never raise. It
#: returns True when its work could not start (the warehouse locked or unreachable): the
#: schedule then runs it again after :data:`RETRY_SECONDS`, doubling per failure in a row up
#: to the interval, rather than an interval later.
Job = Callable[[Config, threading.Event], "bool | None"]
RETRY_JOB = "collect-retry"
RETRY_SECONDS = 15


def schedule(scheduler: BaseScheduler, config: Config, job: Job, start_now: bool = True,
             stop: threading.Event | None = None) -> threading.Event:
    """Add ``job`` to ``scheduler`` on the collection interval; returns the stop event it gets."""
    stop = stop if stop is not None else threading.Event()
    interval = config.collection.interval_minutes * 60
    running = threading.Lock()
    failures = [0]

    def guarded(config: Config, stop: threading.Event) -> None:
        if not running.acquire(blocking=False):
            return  # a retry came round with the interval's run: one round at a time
        try:
            failed = job(config, stop)
        finally:
            running.release()
        if not failed or stop.is_set():
            failures[0] = 0
            return
        failures[0] += 1
        delay = min(interval, RETRY_SECONDS * 2 ** min(failures[0] - 1, 16))
        log.info("the collection could not start; trying again in %d s", delay)
        scheduler.add_job(guarded, "date", args=[config, stop], id=RETRY_JOB,
                          run_date=utcnow() + timedelta(seconds=delay),
                          misfire_grace_time=interval, replace_existing=True)

    scheduler.add_job(guarded, "interval", args=[config, stop], id=COLLECT_JOB,
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
    idle = threading.Event()
    idle.set()

    def tracked(config: Config, stop: threading.Event) -> bool | None:
        idle.clear()
        try:
            return job(config, stop)
        finally:
            idle.set()

    stopping = schedule(scheduler, config, tracked)

    def stop(signum: int, frame: Any) -> None:
        log.info("stopping the worker (signal %d): a running collection stops now; "
                 "windows stored so far are kept", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    log.info("spendwatch worker started: collecting %d organization(s) every %d minutes",
             len(config.organizations), config.collection.interval_minutes)
    scheduler.start()
    try:
        while not stopping.wait(STOP_POLL_SECONDS):
            pass
    except KeyboardInterrupt:
        stopping.set()
    finally:
        scheduler.shutdown(wait=False)
        if not idle.wait(STOP_GRACE_SECONDS):
            # The scheduler's threads are not daemons: the interpreter would wait for them.
            log.error("the running round did not end within %.0f s of the stop; exiting "
                      "without it (stored windows are whole; the next start goes on)",
                      STOP_GRACE_SECONDS)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def start_background_schedule(config: Config, job: Job,
                              stop: threading.Event | None = None) -> BackgroundScheduler:
    """The same schedule in a background thread, first run after one interval (the demo runs
    it beside the dashboard)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule(scheduler, config, job, start_now=False, stop=stop)
    scheduler.start()
    return scheduler
