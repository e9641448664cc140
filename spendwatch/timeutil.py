"""Time: UTC buckets, local days, and the clock.

A "day" is a day in the configured time zone, built from hourly UTC buckets. Command-line
ranges include both ends: ``--since 2026-11-01 --until 2026-11-30`` is all of November.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC. Read once per job and pass it down."""
    return datetime.now(UTC)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour holding ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    """The first whole UTC hour at or after ``moment``."""
    floored = floor_hour(moment)
    return floored if floored == moment else floored + HOUR


def floor_day(moment: datetime) -> datetime:
    """The UTC midnight at or before ``moment``."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(moment: datetime) -> datetime:
    """The first UTC midnight at or after ``moment``."""
    floored = floor_day(moment)
    return floored if floored == moment else floored + DAY


def local_day_start(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local ``day`` begins in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def local_range(since: date, until: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC [start, end) covering local days ``since`` through ``until``, both included."""
    return local_day_start(since, tz), local_day_start(until + DAY, tz)


def local_today(now: datetime, tz: ZoneInfo) -> date:
    """Today's date in ``tz``."""
    return now.astimezone(tz).date()


def parse_utc(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime. Raises ValueError."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """Format as ``2026-11-24T12:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
