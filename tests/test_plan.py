"""Sync windows: contiguous coverage, re-read of recent days, backfill downwards."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from collectors.sync import analytics_floor, day_chunks, plan_stream

UTC = timezone.utc


def at(day: int, hour: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def test_days_are_cut_at_utc_midnight() -> None:
    assert day_chunks(at(1), at(2, 5)) == [(at(1), at(2)), (at(2), at(2, 5))]


def test_a_first_run_goes_forward_from_the_start() -> None:
    assert plan_stream(None, at(1), at(3, 6), at(3)) == [(at(1), at(2)), (at(2), at(3)),
                                                         (at(3), at(3, 6))]


def test_a_later_run_rereads_the_lookback_and_extends_to_now() -> None:
    windows = plan_stream((at(1), at(10, 6)), at(9), at(10, 9), reread_from=at(9, 9))
    assert windows == [(at(9), at(10)), (at(10), at(10, 6)), (at(10, 6), at(10, 9))]


def test_a_backfill_goes_down_from_the_covered_range_newest_first() -> None:
    windows = plan_stream((at(5), at(10)), at(2), at(10), reread_from=at(20))
    assert windows == [(at(4), at(5)), (at(3), at(4)), (at(2), at(3))]


def test_final_days_inside_the_covered_range_are_not_fetched_again() -> None:
    assert plan_stream((at(1), at(20)), at(3), at(5), reread_from=at(19)) == []


def test_refresh_fetches_the_range_again() -> None:
    assert plan_stream((at(1), at(20)), at(3), at(5), reread_from=at(19), refresh=True) == [
        (at(3), at(4)), (at(4), at(5))]


def test_the_analytics_floor_is_2026_or_365_days_ago() -> None:
    assert analytics_floor(at(24)) == datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2027, 6, 1, 12, tzinfo=UTC)
    assert analytics_floor(later) == datetime(2026, 6, 2, tzinfo=UTC)
    assert analytics_floor(later) > later - timedelta(days=365)
