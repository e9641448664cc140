"""The alert check: evaluate every rule, record what changed (:mod:`alerts.machine`), deliver
what is due (:mod:`alerts.outbox`). ``spendwatch alerts check`` and the worker run it."""

from __future__ import annotations

from datetime import datetime

from alerts import settings
from alerts.machine import evaluate_and_record
from alerts.model import CheckReport
from alerts.outbox import ChannelFactory, default_channel, deliver_pending
from spendwatch.config import Config


def check(config: Config, now: datetime, factory: ChannelFactory = default_channel
          ) -> CheckReport:
    """Evaluate, record, notify: what ``spendwatch alerts check`` and the worker run."""
    config = settings.validate(config)
    report = CheckReport()
    evaluate_and_record(config, now, report)
    deliver_pending(config, now, report, factory)
    return report

