"""The collectors' retry classification, on the shared loop of :mod:`spendwatch.retry`.

Retried: 408, 409, 429, 5xx (529 included), connection errors and timeouts, with capped
exponential backoff and jitter; ``retry-after`` is honoured but capped at ``max_retry_after``
(the SDK alone would sleep for a ``retry-after: 3600``). Not retried: 401/403 (:class:`AuthError`,
with a hint when the key looks like a normal API key) and other 4xx. Messages never hold the key:
they are built from the status, the error type and the API's own message only.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from spendwatch.secrets import Secret
from spendwatch.errors import AuthError, CollectionError, CutUnreadable
from spendwatch.retry import GaveUp, RetryPolicy, TryAgain, call_with_retries, parse_retry_after

__all__ = ["CAP_SETTING", "RETRYABLE_STATUSES", "RetryPolicy", "TransportFailure",
           "call_with_retry", "error_from_body", "key_kind_hint", "parse_retry_after"]

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: The setting that caps an API's ``retry-after`` (named when a wait is cut to it).
CAP_SETTING = "collection.max_retry_after_seconds"


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


def error_from_body(status: int, body: object) -> tuple[str, str]:
    """(error type, message) from an API error body ``{"type": "error", "error": {...}}``."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("type", "error")), str(error.get("message", ""))[:300]
    return "http_error", f"HTTP {status}"


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


def call_with_retry(call: Callable[[], T], policy: RetryPolicy, what: str, key: Secret,
                    dimensions: tuple[str, ...] = ()) -> T:
    """Run ``call`` (which raises TransportFailure on failure) under ``policy``.

    Raises AuthError for 401/403, CollectionError for anything else that does not succeed:
    a request the API rejects, the attempts used up, or a job deadline too near to wait.
    With ``dimensions`` (a cut's), a 400 or 403 whose message names one of them is
    CutUnreadable: the key may not group by it (its message is the API's own, never the key).
    """
    def attempt(number: int) -> T:
        try:
            return call()
        except TransportFailure as failure:
            if failure.status in (400, 403) and any(d in failure.message for d in dimensions):
                raise CutUnreadable(f"{what}: {failure.status} {failure.error_type}: "
                                    f"{failure.message}") from None
            if failure.status in (401, 403):
                raise AuthError(f"{what}: {failure.status} {failure.error_type}: "
                                f"{key_kind_hint(key)}") from None
            if not failure.retryable:
                raise CollectionError(f"{what}: the API rejected the request ({failure})") from None
            raise TryAgain(str(failure), failure.retry_after) from None

    try:
        return call_with_retries(attempt, policy, what, level=logging.INFO)
    except GaveUp as gave_up:
        if gave_up.out_of_time:
            raise CollectionError(f"{what}: the job deadline leaves no time to retry "
                                  f"({gave_up.last})") from None
        raise CollectionError(f"{what}: gave up after {gave_up.attempts} attempts "
                              f"({gave_up.last})") from None
