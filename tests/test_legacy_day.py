"""The legacy day rule, shown: every surface gives the same dollars for every local day.

A legacy-source organization's cost partly comes in whole UTC days (``bucket_width = '1d'``)
that cannot be cut at a local midnight. THE spend builder places such a line at local midnight
of the date of the same name (:mod:`spendwatch.warehouse.spend`). In America/Los_Angeles that
instant is 08:00 UTC, not the UTC midnight the line starts at: a surface that filtered UTC
bucket starts would put the line on the day before. Here the CLI's ``spend --by date``, the
Spend page's daily figure (and the Overview's), a ``daily_spend`` alert's value, the weekly
CSV and ``reconcile`` all say the same for each day of a week.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Iterator

import pytest

from alerts.rules import evaluate
from alerts.settings import validate
from collectors.sync import CollectOptions, collect
from conftest import ADMIN_KEY, SIM_NOW, Simulator, start_simulator_process, write_config
from spendwatch.config import Config, load_config
from spendwatch.warehouse import figures
from spendwatch.warehouse.batch import Batch, read
from spendwatch.warehouse.reconcile import RECONCILED_COST_TYPES
from spendwatch.warehouse.spend import spend, total
from warehouse import folded

LOS_ANGELES = "America/Los_Angeles"
MONDAY, SUNDAY = date(2026, 11, 16), date(2026, 11, 22)
WEEK = [MONDAY + timedelta(days=n) for n in range(7)]
RULES = '''
[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url_env = "SLACK_WEBHOOK"

[[alerts.rules]]
name = "daily budget"
kind = "daily_spend"
channels = ["ops-slack"]
threshold_usd = "100000"
'''


def spendwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    env.update(ANTHROPIC_ADMIN_KEY=ADMIN_KEY, SLACK_WEBHOOK="http://127.0.0.1:9/unused")
    return subprocess.run([sys.executable, "-m", "spendwatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = start_simulator_process()
    yield simulator
    simulator.process.terminate()
    try:
        simulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        simulator.process.kill()


@pytest.fixture(scope="module")
def home(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A legacy organization in Los Angeles, collected from before the week to SIM_NOW."""
    folder = tmp_path_factory.mktemp("legacy_day")
    write_config(folder, [{"name": "acme", "source": "legacy", "base_url": sim.url}],
                 extra=RULES, timezone_name=LOS_ANGELES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
        patch.setenv("SLACK_WEBHOOK", "http://127.0.0.1:9/unused")
        config = load_config(folder / "config.toml")
        since = datetime(2026, 11, 14, tzinfo=timezone.utc)
        (result,) = collect(config, CollectOptions(since=since), now=SIM_NOW,
                            sleep=lambda s: None)
    assert result.ok, result.error
    return folder


@pytest.fixture(scope="module")
def config(home: Path) -> Config:
    """The config as the alert check reads it (rule params checked by alerts/)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLACK_WEBHOOK", "http://127.0.0.1:9/unused")
        return validate(load_config(home / "config.toml"))


@pytest.fixture(scope="module")
def cli_days(home: Path) -> dict[date, Decimal]:
    """``spendwatch spend --by date --json`` over the week: the reference."""
    result = spendwatch("spend", "--since", str(MONDAY), "--until", str(SUNDAY), "--by", "date",
                        "--json", cwd=home)
    assert result.returncode == 0, result.stderr
    days = {date.fromisoformat(r["date"]): Decimal(r["cost_usd"])
            for r in json.loads(result.stdout)}
    assert sorted(days) == WEEK and all(days.values())
    return days


def test_the_week_has_whole_day_legacy_lines_away_from_utc_midnight(config: Config) -> None:
    """The rule is exercised: whole-UTC-day lines that a UTC-bucket filter would misplace."""
    def whole_days(batch: Batch) -> list[tuple[date, Decimal]]:
        return [(d, Decimal(c)) for d, c in batch.conn.execute(
            "SELECT (bucket_start AT TIME ZONE 'UTC')::DATE, sum(cost_usd) FROM spend_facts "
            "WHERE bucket_width = '1d' AND cost_usd <> 0 GROUP BY 1").fetchall()]
    lines = dict(read(config, whole_days))
    assert any(lines.get(day) for day in WEEK)
    # Each lands on its own local date, not the day before (where its UTC start falls).
    for day in WEEK:
        if not lines.get(day):
            continue
        utc_midnight = datetime.combine(day, time(), timezone.utc)
        local_midnight = datetime.combine(day, time(), config.tz)
        assert utc_midnight.astimezone(config.tz).date() == day - timedelta(days=1)
        hour = read(config, total, start=local_midnight, end=local_midnight + timedelta(hours=1))
        assert hour >= lines[day]


def test_the_cli_the_pages_an_alert_the_csv_and_reconcile_agree_every_day(
        home: Path, config: Config, cli_days: dict[date, Decimal]) -> None:
    # The Spend page: spend by period, cache status and cost basis, at a day grain.
    page = read(config, figures.spend, MONDAY, SUNDAY, ("period", "cache_status", "cost_basis"),
                {}, "day")
    spend_page = {day: sum((r["cost_usd"] for r in page if r["period"].date() == day), Decimal(0))
                  for day in WEEK}
    # The legacy API counts no requests: no cost per request, rather than one of a part.
    assert page and all(r["requests"] is None for r in page)
    # The Overview's daily series.
    overview_rows = read(config, figures.daily_spend, MONDAY, SUNDAY)
    overview = {day: sum((r["cost_usd"] for r in overview_rows if r["date"] == day), Decimal(0))
                for day in WEEK}
    # A daily_spend alert evaluated at noon of each local day.
    alert = {}
    for day in WEEK:
        noon = datetime.combine(day, time(12), config.tz).astimezone(timezone.utc)
        (evaluation,) = read(config, evaluate, config, noon)
        assert evaluation.value is not None, evaluation.summary
        alert[day] = evaluation.value
    # The weekly CSV as `report weekly` writes it, cost_usd summed per date.
    out = home / "w47.csv"
    result = spendwatch("report", "weekly", "--week", "2026-W47", "--out", str(out), cwd=home)
    assert result.returncode == 0, result.stderr
    with open(out, encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    weekly = {day: sum((Decimal(r["cost_usd"]) for r in written if r["date"] == str(day)),
                       Decimal(0)) for day in WEEK}
    # reconcile --json: its per-day spend, and its billed figure plus what it does not
    # reconcile (estimated tokens, and cost that is neither tokens nor web search).
    result = spendwatch("reconcile", "--since", str(MONDAY), "--until", str(SUNDAY), "--json",
                        cwd=home)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    reconciled = {day: sum((Decimal(r["spend_usd"]) for r in rows if r["date"] == str(day)),
                           Decimal(0)) for day in WEEK}
    billed = {day: sum((Decimal(r["billed_usd"]) for r in rows if r["date"] == str(day)),
                       Decimal(0)) for day in WEEK}

    def not_reconciled(batch: Batch, day: date) -> Decimal:
        other_types = [r["cost_type"] for r in spend(batch, day, day, ["cost_type"])
                       if r["cost_type"] not in RECONCILED_COST_TYPES]
        return (total(batch, day, day, {"cost_type": other_types}) if other_types
                else Decimal(0)) + total(batch, day, day, {
                    "cost_type": list(RECONCILED_COST_TYPES), "cost_basis": ["estimated"]})

    for day in WEEK:
        expected = cli_days[day]
        assert spend_page[day] == expected, day
        assert overview[day] == expected, day
        assert alert[day] == expected, day
        assert reconciled[day] == expected, day
        assert billed[day] + read(config, not_reconciled, day) == expected, day
        cents = Decimal("0.01")
        assert abs(weekly[day] - expected) < Decimal("0.0001"), day
        assert weekly[day].quantize(cents, ROUND_HALF_UP) == \
            expected.quantize(cents, ROUND_HALF_UP), day


@pytest.mark.parametrize("first,last", [(MONDAY, SUNDAY), (MONDAY + timedelta(days=2),
                                                           MONDAY + timedelta(days=4)),
                                        (MONDAY + timedelta(days=1), MONDAY + timedelta(days=1))])
def test_a_range_read_from_the_daily_sums_equals_its_days_read_hour_by_hour(
        config: Config, first: date, last: date) -> None:
    """A query not split by date reads the whole UTC days inside its range from facts_daily and
    the hours at its edges (and the whole-day lines, placed at local midnight) from facts; split
    by date it reads every fact hour by hour. Both give the same dollars and tokens to the
    cent, per model, API key and cache status, whether the range holds whole UTC days or none
    (one Los Angeles day spans two UTC days in part)."""
    for by in (("model", "api_key", "cache_status"), ("workspace", "service_tier")):
        whole = read(config, spend, first, last, by)
        days = read(config, spend, first, last, ("date", *by))
        assert {r["date"] for r in days} == {first + timedelta(days=n)
                                              for n in range((last - first).days + 1)}
        assert folded(whole, by) == folded(days, by)
        assert sum(r["cost_usd"] for r in whole) == sum(r["cost_usd"] for r in days) > 0
    # By cost basis every fact is read (the daily sums have none): the same dollars per basis.
    basis = read(config, spend, first, last, ("cost_basis",))
    basis_days = read(config, spend, first, last, ("date", "cost_basis"))
    assert {r["cost_basis"]: r["cost_usd"] for r in basis} == {
        b: sum(r["cost_usd"] for r in basis_days if r["cost_basis"] == b)
        for b in {r["cost_basis"] for r in basis_days}}
    assert sum(r["cost_usd"] for r in basis) == sum(r["cost_usd"] for r in whole)
    # A UTC window that starts and ends inside hours: the same as its local hours summed.
    start = datetime.combine(first, time(3, 30), timezone.utc)
    end = datetime.combine(last + timedelta(days=1), time(13, 30), timezone.utc)
    by = ("model", "cache_status")
    whole = read(config, spend, by=by, start=start, end=end)
    hours = read(config, spend, by=("period", *by), grain="hour", start=start, end=end)
    assert folded(whole, by) == folded(hours, by) != {}
