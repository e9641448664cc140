"""The worker, assembled: collect on schedule, then after each collection write the weekly
reports that are due, then check the alerts (which also sends the reports' summaries)."""

from __future__ import annotations

import logging
from datetime import datetime

from alerts.engine import check_after_collection
from collectors.scheduler import run_worker
from reports.schedule import check_reports_folder, log_run, write_due_reports
from spendwatch.config import Config

log = logging.getLogger(__name__)


def after_collection(config: Config, now: datetime) -> None:
    """What the worker runs after each collection: due reports, then the alert check (which
    also sends the reports' summaries). A failing report step never stops the alerts."""
    try:
        for run in write_due_reports(config, now):
            log_run(run, config, now)
    except Exception:
        log.exception("writing the weekly reports failed")
    check_after_collection(config, now)


def run(config: Config) -> None:
    """Run the worker until SIGINT or SIGTERM (``spendwatch run``)."""
    run_worker(check_reports_folder(config), after=after_collection)
