"""The shared retry loop and Retry-After parser (spendwatch/retry.py)."""

from __future__ import annotations

from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from spendwatch.retry import GaveUp, RetryPolicy, TryAgain, call_with_retries, parse_retry_after


def exact(**kwargs: object) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    return RetryPolicy(jitter=0, sleep=slept.append, **kwargs), slept  # type: ignore[arg-type]


def failing(times: int, retry_after: float | None = None):
    calls: list[int] = []

    def attempt(number: int) -> str:
        calls.append(number)
        if len(calls) <= times:
            raise TryAgain(f"HTTP 503 (call {number})", retry_after)
        return "ok"
    return attempt, calls


def test_it_retries_with_capped_exponential_backoff() -> None:
    policy, slept = exact(max_attempts=6, base_delay=1, max_delay=5)
    attempt, calls = failing(5)
    assert call_with_retries(attempt, policy, "test") == "ok"
    assert calls == [1, 2, 3, 4, 5, 6] and slept == [1, 2, 4, 5, 5]


def test_it_gives_up_after_max_attempts_with_the_last_reason() -> None:
    policy, slept = exact(max_attempts=3)
    attempt, calls = failing(10)
    with pytest.raises(GaveUp) as caught:
        call_with_retries(attempt, policy, "test")
    assert caught.value.attempts == 3 and not caught.value.out_of_time
    assert caught.value.last.reason == "HTTP 503 (call 3)" and len(slept) == 2


def test_retry_after_is_honoured_but_capped() -> None:
    policy, slept = exact(max_attempts=3, max_retry_after=10)
    attempt, _ = failing(2, retry_after=3600)
    assert call_with_retries(attempt, policy, "test") == "ok"
    assert slept == [10, 10]


def test_it_never_waits_past_the_deadline() -> None:
    now = [100.0]
    policy, slept = exact(max_attempts=5, base_delay=8, deadline=110.0, clock=lambda: now[0])
    attempt, calls = failing(10)
    with pytest.raises(GaveUp) as caught:
        call_with_retries(attempt, policy, "test")
    assert caught.value.out_of_time and calls == [1, 2] and slept == [8]


def test_other_exceptions_are_not_retried() -> None:
    policy, slept = exact()

    def attempt(number: int) -> str:
        raise ValueError("refused for good")
    with pytest.raises(ValueError):
        call_with_retries(attempt, policy, "test")
    assert slept == []


def test_jitter_keeps_each_wait_between_half_and_all_of_the_backoff() -> None:
    policy = RetryPolicy(base_delay=4, max_delay=4, jitter=0.5)
    assert all(2 <= policy.backoff(3) <= 4 for _ in range(200))


@pytest.mark.parametrize("value, seconds", [("7", 7.0), ("0", 0.0), ("1.5", 1.5), (None, None),
                                            ("", None), ("-3", None), ("soon", None),
                                            ("nan", None)])
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp) == 30.0
    assert parse_retry_after(earlier, now=now.timestamp) == 0.0
