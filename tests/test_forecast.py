"""The month-end forecast: month to date plus the days left at a trailing, weekday-aware daily
rate (spendwatch.warehouse.figures.month_end_forecast), sane from the first hour of a month.

The rate's arithmetic is written out here day by day, not through daily_rates, so a slip in
either is a failure."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from spendwatch.warehouse.figures import daily_rates, month_end_forecast

CHICAGO = ZoneInfo("America/Chicago")
UTC = timezone.utc
WEEKDAY, WEEKEND = Decimal(300), Decimal(100)


def usual(day: date) -> Decimal:
    """An organization that spends $300 a weekday and $100 a weekend day."""
    return WEEKEND if day.weekday() >= 5 else WEEKDAY


def history(until: date, days: int, spend=usual) -> dict[date, Decimal]:
    """Spend of the ``days`` complete days before ``until``."""
    return {until - timedelta(days=n): spend(until - timedelta(days=n))
            for n in range(1, days + 1)}


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


def days_after(day: date, month: int) -> list[date]:
    out, d = [], day + timedelta(days=1)
    while d.month == month:
        out.append(d)
        d += timedelta(days=1)
    return out


def test_the_first_hour_of_a_month_forecasts_last_months_pace_not_two_night_hours() -> None:
    # December 1 at 02:09 in Chicago: $12 spent in two night hours. The old forecast was
    # today's pace times the days (about $4,150), whatever November cost.
    now = local(2026, 12, 1, 2, 9)
    past = history(date(2026, 12, 1), 28)
    forecast = month_end_forecast(Decimal(12), past, now, CHICAGO)
    # The last 7 days' mean is the level; each day's weekday share of the 28 days shapes it.
    level = sum(past[d] for d in sorted(past)[-7:]) / 7
    mean = sum(past.values()) / 28
    share = {w: sum(v for d, v in past.items() if d.weekday() == w) / 4 / mean for w in range(7)}
    left_today = Decimal(21 * 3600 + 51 * 60) / 86400
    expected = (Decimal(12) + level * share[1] * left_today  # Dec 1 2026 is a Tuesday
                + sum(level * share[d.weekday()] for d in days_after(date(2026, 12, 1), 12)))
    assert forecast == expected
    # A month like November (weekdays at $300, weekends at $100), with today's two night
    # hours as they were ($12) and the rest of today at the Tuesday rate.
    december = sum(usual(date(2026, 12, d)) for d in range(1, 32))
    assert forecast == december - WEEKDAY + 12 + WEEKDAY * left_today
    assert "%.2f" % forecast == "7685.12"  # not $4,464


def test_mid_month_the_days_left_keep_their_weekday() -> None:
    now = local(2026, 12, 15, 12, 0)  # a Tuesday, half over
    so_far = sum(usual(date(2026, 12, d)) for d in range(1, 15)) + WEEKDAY / 2
    forecast = month_end_forecast(so_far, history(date(2026, 12, 15), 28), now, CHICAGO)
    left = sum(usual(d) for d in days_after(date(2026, 12, 15), 12))
    assert forecast == so_far + WEEKDAY / 2 + left
    assert forecast == sum(usual(date(2026, 12, d)) for d in range(1, 32))


def test_on_the_last_day_only_the_rest_of_today_is_added() -> None:
    now = local(2026, 12, 31, 18, 0)  # a Thursday, 6 hours left
    so_far = Decimal("7000")
    forecast = month_end_forecast(so_far, history(date(2026, 12, 31), 28), now, CHICAGO)
    assert forecast == so_far + WEEKDAY * 6 / 24
    # after midnight the month is over: nothing left to add of it
    assert month_end_forecast(so_far, history(date(2026, 12, 31), 28),
                              local(2026, 12, 31, 23, 59, 59), CHICAGO) - so_far < 1


def test_a_month_after_a_spend_jump_forecasts_the_new_level() -> None:
    # Three weeks at $100 a day, then a week at $400: the last week sets the level, so the
    # forecast of the month ahead is about 31 x $400, not the 28-day mean of $175.
    jump = date(2026, 11, 24)
    past = history(date(2026, 12, 1), 28, lambda d: Decimal(400) if d >= jump else Decimal(100))
    forecast = month_end_forecast(Decimal(0), past, local(2026, 12, 1, 0, 0), CHICAGO)
    assert forecast == 31 * Decimal(400)


def test_under_a_week_of_history_the_mean_of_the_days_there_are() -> None:
    # Stored from November 28: three complete days, too few for a weekday shape.
    past = {date(2026, 11, 28): Decimal(100), date(2026, 11, 29): Decimal(200),
            date(2026, 11, 30): Decimal(600)}
    rates = daily_rates(past)
    assert rates == {w: Decimal(300) for w in range(7)}
    forecast = month_end_forecast(Decimal(50), past, local(2026, 12, 1, 6, 0), CHICAGO)
    assert forecast == Decimal(50) + Decimal(300) * Decimal(18) / 24 + 30 * Decimal(300)


def test_no_complete_day_no_forecast() -> None:
    assert daily_rates({}) is None
    assert month_end_forecast(Decimal(12), {}, local(2026, 12, 1, 2, 9), CHICAGO) is None


def test_a_day_of_25_hours_counts_its_hours() -> None:
    # November 1 2026 in Chicago has 25 hours (the clocks go back at 02:00).
    now = datetime(2026, 11, 1, 17, 0, tzinfo=UTC)  # 11:00 CST, 12 of 25 hours gone
    past = history(date(2026, 11, 1), 7, lambda d: Decimal(250))
    forecast = month_end_forecast(Decimal(0), past, now, CHICAGO)
    assert forecast == Decimal(250) * Decimal(13) / 25 + 29 * Decimal(250)


@pytest.mark.parametrize("days", [7, 13])
def test_the_weekday_shape_waits_for_two_weeks(days: int) -> None:
    rates = daily_rates(history(date(2026, 12, 1), days))
    assert rates is not None and len(set(rates.values())) == 1  # one rate, every weekday
    shaped = daily_rates(history(date(2026, 12, 1), 14))
    assert shaped is not None and shaped[5] < shaped[1]  # Saturdays below Tuesdays


# --- on a collected warehouse: the first hours of a month -----------------------------------

def test_on_the_first_of_a_month_last_month_and_the_forecast_come_from_stored_days(
        isolated, simulators) -> None:
    """December 1 at 08:00 in Chicago, November collected whole (the CLI, the simulator over
    HTTP): the Overview's last month, its first day to the same hour, and a forecast from
    November's days, not from eight hours of December."""
    import subprocess
    import sys

    from conftest import REPO, env_with_key, write_config
    from spendwatch.config import load_config
    from spendwatch.warehouse.batch import read
    from spendwatch.warehouse.figures import last_month, month_to_date
    from spendwatch.warehouse.spend import total

    sim = simulators(now="2026-12-01T15:00:00Z")
    path = write_config(isolated, [{"name": "acme", "base_url": sim.url}])
    done = subprocess.run([sys.executable, "-m", "spendwatch", "--config", str(path), "collect",
                           "--since", "2026-11-01", "--until", "2026-12-01"], cwd=REPO,
                          env=env_with_key(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    config = load_config(path)
    now = datetime(2026, 12, 1, 14, tzinfo=UTC)  # 08:00 CST
    before = read(config, last_month, now)
    november = read(config, total, date(2026, 11, 1), date(2026, 11, 30))
    assert before.first == date(2026, 11, 1) and before.total_usd == november > 0
    assert before.to_date_end == datetime(2026, 11, 1, 8, tzinfo=CHICAGO)
    assert before.to_date_usd == read(config, total, start=datetime(2026, 11, 1, 5, tzinfo=UTC),
                                      end=datetime(2026, 11, 1, 14, tzinfo=UTC))  # 00:00 CDT
    month = read(config, month_to_date, now)
    assert month.complete and month.history_days == 28  # November 3 to 30
    assert month.forecast_usd is not None
    # The simulated organization spends alike every month: the forecast is November's scale,
    # where today's pace (eight hours of a quiet night and morning) would not be.
    assert november * Decimal("0.7") < month.forecast_usd < november * Decimal("1.4"), (
        month.forecast_usd, november)
    # In November, last month (October) is not stored: no figure, rather than $0.
    assert read(config, last_month, datetime(2026, 11, 20, tzinfo=UTC)).total_usd is None

    # The Overview's last 30 days come from month to date's rows (one query per batch), and
    # are what a batch of their own reads.
    from spendwatch.warehouse.figures import daily_spend
    from spendwatch.warehouse.spend import spend

    def shared(batch):
        month_to_date(batch, now)
        ranges = [r for k, v in batch.memo.items() if k[0] == "days_by_basis" for r in v]
        return ranges, daily_spend(batch, date(2026, 11, 2), date(2026, 12, 1))

    ranges, days = read(config, shared)
    assert ranges == [(date(2026, 11, 2), date(2026, 12, 1))]  # one query, no second
    assert days == read(config, lambda b: [r for r in spend(
        b, date(2026, 11, 2), date(2026, 12, 1), ["date", "cost_basis"])
        if r["cost_basis"] is not None])


@pytest.mark.parametrize("days", [15, 20, 21, 27, 28])
@pytest.mark.parametrize("until", [date(2026, 12, 5), date(2026, 12, 7), date(2026, 12, 9)])
def test_a_weeks_rates_add_up_to_the_level_whatever_days_are_stored(days: int,
                                                                    until: date) -> None:
    # $100 a weekday, nothing at weekends: a week is $500, however many of each weekday the
    # history holds (with 20 days ending on a Friday some weekdays count three times).
    past = history(until, days, lambda d: Decimal(0) if d.weekday() >= 5 else Decimal(100))
    rates = daily_rates(past)
    assert rates is not None
    assert sum(rates.values()) == pytest.approx(Decimal(500), abs=Decimal("1e-20"))
    assert rates[0] == pytest.approx(Decimal(100), abs=Decimal("1e-20")) and rates[6] == 0


def test_at_local_midnight_today_is_compared_with_none_of_the_same_day(tmp_path) -> None:
    # 00:00 in Chicago: nothing of today has happened, so the 7 days to today are compared
    # with the 7 days before them up to the same midnight, not with 7 whole days.
    from conftest import write_config
    from spendwatch.config import load_config
    from spendwatch.warehouse.figures import comparison
    config = load_config(write_config(tmp_path, [{"name": "acme"}],
                                      timezone_name="America/Chicago"))
    midnight = datetime(2026, 12, 2, 6, tzinfo=UTC)  # 00:00 CST
    compared = comparison(config, date(2026, 11, 26), date(2026, 12, 2), midnight)
    assert compared.partial and compared.end == midnight
    assert compared.previous_end == datetime(2026, 11, 25, tzinfo=CHICAGO)
    assert compared.end - compared.start == compared.previous_end - compared.previous_start
