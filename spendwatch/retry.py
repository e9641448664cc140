"""Bounded retries, one loop for every call that leaves the process: the collectors' API
pages, Slack posts, SMTP sends.

What is worth retrying is the caller's to say (each client classifies its own failures); how
is said here once: at most ``max_attempts`` attempts; between them a capped exponential
backoff (``base_delay * 2 ** (attempt - 1)``, at most ``max_delay``) with jitter, or the wait
the other side asked for (``Retry-After``, as seconds or an HTTP date), capped at
``max_retry_after`` (an API that says ``retry-after: 3600`` does not stall a job for an hour);
and never a wait that would run past ``deadline``.

An attempt asks for another by raising :class:`TryAgain` (any other exception goes straight
through: not retryable); :func:`call_with_retries` raises :class:`GaveUp` when the attempts or
the time run out.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TryAgain(Exception):
    """Raised by an attempt that failed in a way another attempt may not: ``reason`` is one
    line safe to log (no secret); ``retry_after`` the seconds the other side asked to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class GaveUp(Exception):
    """:func:`call_with_retries` stopped retrying: after ``attempts`` attempts, or earlier
    when the next wait would pass the deadline (``out_of_time``). ``last`` is the last
    attempt's :class:`TryAgain`."""

    def __init__(self, last: TryAgain, attempts: int, out_of_time: bool) -> None:
        super().__init__(last.reason)
        self.last = last
        self.attempts = attempts
        self.out_of_time = out_of_time


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``jitter`` is the part of each backoff that is random (0.5: between half and all of it),
    so that many clients refused at once do not come back at once; 0 gives exact waits.
    ``deadline`` is a ``clock()`` value (``time.monotonic`` by default) or None.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 60.0
    jitter: float = 0.5
    deadline: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep)
    clock: Callable[[], float] = field(default=time.monotonic)
    #: The setting that holds ``max_retry_after``, named when a wait is cut to it.
    cap_setting: str = "the configured cap"

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1, 2, ...) when nobody said."""
        delay = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return delay * (1 - self.jitter * random.random())

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``: ``retry_after`` (capped at
        ``max_retry_after``) when the other side asked for a wait, else :meth:`backoff`."""
        if retry_after is None:
            return self.backoff(attempt)
        if retry_after > self.max_retry_after:
            log.warning("asked to wait %.0f s; waiting %.0f s instead (%s)",
                        retry_after, self.max_retry_after, self.cap_setting)
        return min(retry_after, self.max_retry_after)


def call_with_retries(attempt: Callable[[int], T], policy: RetryPolicy, what: str,
                      level: int = logging.WARNING) -> T:
    """``attempt(1)``, then ``attempt(2)``, ... until one returns; returns what it returns.

    An attempt that raises :class:`TryAgain` is retried after :meth:`RetryPolicy.delay`, the
    wait logged at ``level`` with ``what`` (a name for the call, e.g. "Slack channel ops").
    Any other exception from ``attempt`` propagates at once. Raises :class:`GaveUp` after
    ``policy.max_attempts`` attempts, or before a wait that would end past the deadline.
    """
    number = 1
    while True:
        try:
            return attempt(number)
        except TryAgain as failure:
            if number >= policy.max_attempts:
                raise GaveUp(failure, number, out_of_time=False) from None
            wait = policy.delay(number, failure.retry_after)
            if policy.deadline is not None and policy.clock() + wait > policy.deadline:
                raise GaveUp(failure, number, out_of_time=True) from None
            log.log(level, "%s: %s; trying again in %.1f s (attempt %d of %d)", what,
                    failure.reason, wait, number + 1, policy.max_attempts)
            policy.sleep(wait)
            number += 1


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds (``"7"``) or an HTTP date
    (``"Wed, 21 Oct 2026 07:28:00 GMT"``, RFC 9110 section 10.2.3), a date in the past being 0.
    None when absent or unusable (negative, not a number, not a date)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and not math.isnan(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, as RFC 9110 dates are
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - now())
