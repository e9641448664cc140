"""One bounded retry policy for every API call, whichever client makes it.

Retried: 408, 409, 429, 5xx (529 included), connection errors and timeouts, with capped
exponential backoff; ``retry-after`` is honoured but capped at ``max_retry_after`` (the SDK
alone would sleep for a ``retry-after: 3600``). Not retried: 401/403 (:class:`AuthError`, with
a hint when the key looks like a normal API key) and other 4xx. Messages never hold the key:
they are built from the status, the error type and the API's own message only.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from spendwatch.config import Secret
from spendwatch.errors import AuthError, CollectionError

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class TransportFailure(Exception):
    """A failed call, normalised from whichever client made it (no key inside)."""

    def __init__(self, status: int | None, error_type: str, message: str,
                 retry_after: float | None = None):
        super().__init__(f"{status or 'no response'} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES or self.status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds form), None if absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_body(status: int, body: object) -> tuple[str, str]:
    """(error type, message) from an API error body ``{"type": "error", "error": {...}}``."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("type", "error")), str(error.get("message", ""))[:300]
    return "http_error", f"HTTP {status}"


@dataclass
class RetryPolicy:
    """How often and how long to retry. ``deadline`` is a time.monotonic() value or None."""

    max_attempts: int = 5
    max_retry_after: float = 60.0
    base_delay: float = 1.0
    max_delay: float = 30.0
    deadline: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep)

    def delay_for(self, attempt: int, failure: TransportFailure) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if failure.retry_after is not None:
            if failure.retry_after > self.max_retry_after:
                log.warning("the API asked to wait %.0f s; waiting %.0f s instead "
                            "(collection.max_retry_after_seconds)",
                            failure.retry_after, self.max_retry_after)
            return min(failure.retry_after, self.max_retry_after)
        backoff = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return backoff * (0.5 + random.random() / 2)


def key_kind_hint(key: Secret) -> str:
    """Say what the key looks like, without showing it."""
    value = key.reveal()
    if value.startswith("sk-ant-admin"):
        return ("the Admin API key was refused: it may be revoked, expired or belong to another "
                "organization; create a new one in the Claude Console (Settings > Admin keys)")
    if value.startswith("sk-ant-api"):
        return ("the key looks like a standard workspace API key (sk-ant-api...), not an Admin "
                "API key; usage and cost reports need an Admin API key (sk-ant-admin01-...) "
                "from the Claude Console (Settings > Admin keys)")
    return ("the key does not look like an Anthropic Admin API key (sk-ant-admin01-...); check "
            "the variable or file it is read from")


def call_with_retry(call: Callable[[], T], policy: RetryPolicy, what: str, key: Secret) -> T:
    """Run ``call`` (which raises TransportFailure on failure) under ``policy``.

    Raises AuthError for 401/403, CollectionError for anything else that does not succeed.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except TransportFailure as failure:
            if failure.status in (401, 403):
                raise AuthError(f"{what}: {failure.status} {failure.error_type}: "
                                f"{key_kind_hint(key)}") from None
            if not failure.retryable:
                raise CollectionError(f"{what}: the API rejected the request ({failure})") from None
            if attempt >= policy.max_attempts:
                raise CollectionError(f"{what}: gave up after {attempt} attempts ({failure})") from None
            delay = policy.delay_for(attempt, failure)
            if policy.deadline is not None and time.monotonic() + delay > policy.deadline:
                raise CollectionError(f"{what}: the job deadline leaves no time to retry "
                                      f"({failure})") from None
            log.info("%s: %s; retrying in %.1f s (attempt %d of %d)",
                     what, failure, delay, attempt + 1, policy.max_attempts)
            policy.sleep(delay)
