"""The dashboard on a seeded warehouse: every page renders, and what it shows equals the queries.

The simulated organization is collected once for the module at SIM_NOW: a week billed by the
cost API, then today's hours with the cost API down (so today is estimated from usage), and
alerts checked twice (a day apart) against stand-in channels, one of which refuses for good.
Pages run in-process through Streamlit's AppTest with ``$SPENDWATCH_NOW`` fixing the clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest
import requests
import streamlit as st
from streamlit.testing.v1 import AppTest

from alerts import settings as alert_settings
from alerts.check import check
from alerts.silences import add_silence
from alerts.model import DeliveryResult, Notification
from alerts.rules import evaluate
from app import data
from app.format import md
from collectors.simulator import start_simulator
from collectors.sync import CollectOptions, collect
import lake
from conftest import ADMIN_KEY, REPO, SIM_NOW, SIM_NOW_TEXT, copy_warehouse, metrics, usd
from spendwatch.warehouse.batch import Batch, read
from spendwatch import storage
from spendwatch.warehouse import figures as views
from spendwatch.config import Config, load_config
from spendwatch.errors import ConfigError
from spendwatch.numbers import money_str, round_cents
from spendwatch.text import csv_cell
from spendwatch.warehouse.spend import spend
from spendwatch.savings import cache_waste, ledger
from spendwatch.timeutil import local_day_start
from warehouse import db_path, exists, query

MAIN = REPO / "app" / "main.py"
PAGES = ("overview", "spend", "caching", "savings", "alerts", "reports")
TODAY = date(2026, 11, 24)           # SIM_NOW (12:00 UTC) is 06:00 in Chicago
MONTH_START = date(2026, 11, 1)
UTC = timezone.utc
DAY = timedelta(days=1)

CONFIG = """\
timezone = "America/Chicago"
[storage]
{storage}lock_timeout_seconds = {lock_timeout}
[collection]
interval_minutes = 180
timeout_seconds = 10
max_retry_after_seconds = 1
[[organizations]]
name = "acme"
base_url = "{base_url}"
admin_key_file = "{key_file}"

[[features]]
name = "support bot"
api_key_names = ["support-bot-*"]
[[features]]
name = "evals"
api_key_names = ["eval-harness"]
batch_eligible = true

[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url_env = "DASHBOARD_TEST_WEBHOOK"
[[alerts.channels]]
name = "finance-email"
kind = "email"
host = "127.0.0.1"
from = "spendwatch@acme.example"
to = ["finance@acme.example"]

[[alerts.rules]]
name = "daily budget"
kind = "daily_spend"
channels = ["ops-slack"]
threshold_usd = "60"
levels = [0.5, 1.0]

[[alerts.rules]]
name = "monthly budget"
kind = "monthly_budget"
channels = ["finance-email"]
budget_usd = "8000"

[[alerts.rules]]
name = "cache hit ratio"
kind = "cache_hit_ratio"
channels = ["ops-slack"]
floor = 0.3
per = "feature"
min_input_tokens = 100000
"""


def write_dashboard_config(folder: Path, database: Path, lock_timeout: float = 5,
                           base_url: str = "http://127.0.0.1:9") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "admin_key"
    key_file.write_text(ADMIN_KEY, encoding="utf-8")
    key_file.chmod(0o600)
    path = folder / "config.toml"
    # on --backend ducklake, the folder's own DuckLake (``database`` is then what db_path names)
    storage_lines = (lake.storage_toml(folder) if lake.active()
                     else f'database = "{database}"\n')
    path.write_text(CONFIG.format(storage=storage_lines, lock_timeout=lock_timeout,
                                  base_url=base_url, key_file=key_file), encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class FakeChannel:
    """Slack answers ok; the mail server refuses for good (the channel becomes broken)."""

    name: str

    def deliver(self, notification: Notification) -> DeliveryResult:
        if self.name == "ops-slack":
            return DeliveryResult(True, "200 ok")
        return DeliveryResult(False, "550 5.1.1 mailbox unavailable", permanent=True)


def fake_factory(config: Config, name: str) -> FakeChannel:
    return FakeChannel(name)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config of a warehouse: November billed until today, today estimated (the cost API
    went down at midnight), alerts checked yesterday and now."""
    folder = tmp_path_factory.mktemp("dashboard")
    midnight = SIM_NOW - timedelta(hours=6)
    billed = start_simulator(seed=7, admin_keys=[ADMIN_KEY], now=midnight)
    try:
        path = write_dashboard_config(folder, folder / "spendwatch.duckdb",
                                      base_url=billed.url)
        (month,) = collect(load_config(path), CollectOptions(
            since=local_day_start(MONTH_START, load_config(path).tz)), now=midnight,
            sleep=lambda s: None)
        assert month.ok, month.error
    finally:
        billed.close()
    down = start_simulator(seed=7, admin_keys=[ADMIN_KEY], now=SIM_NOW)
    try:
        path = write_dashboard_config(folder, folder / "spendwatch.duckdb", base_url=down.url)
        requests.post(down.url + "/_sim/faults", json={
            "path": "/v1/organizations/analytics/cost", "count": 1000, "status": 500,
            "kind": "error"}, timeout=10).raise_for_status()
        (today,) = collect(load_config(path), now=SIM_NOW, sleep=lambda s: None)
        assert not today.ok  # usage stored, cost not: today is estimated
    finally:
        down.close()
    config = load_config(path)
    check(config, SIM_NOW - timedelta(days=1), fake_factory)
    add_silence(config, "cache hit ratio", None, SIM_NOW + timedelta(hours=4),
                SIM_NOW - timedelta(hours=1), "the eval harness is known to cache poorly")
    check(config, SIM_NOW, fake_factory)
    return path


@pytest.fixture
def dashboard(seeded: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The app pointed at the seeded warehouse, its clock at SIM_NOW, its cache empty."""
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(seeded))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    st.cache_data.clear()
    return alert_settings.load(seeded)  # as the dashboard loads it


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=30).run()
    if page != "overview":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_data(at: AppTest, index: int) -> tuple[dict[str, Any], Any]:
    """The Vega-Lite spec of chart ``index`` and its (first) dataset as a DataFrame."""
    proto = at.get("vega_lite_chart")[index].proto
    table = pa.ipc.open_stream(proto.datasets[0].data.data).read_all()
    return json.loads(proto.spec), table.to_pandas()


def warehouse(config: Config, func: Any, *args: Any, **kwargs: Any) -> Any:
    return read(config, func, *args, **kwargs)


def total(rows: list[dict[str, Any]]) -> Decimal:
    return sum((r["cost_usd"] for r in rows), Decimal(0))


# --- every page ---------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_a_headline_figure_and_a_chart(dashboard: Config, page: str) -> None:
    at = open_page(page)
    assert at.metric, f"{page} shows no headline figure"
    assert at.get("vega_lite_chart"), f"{page} shows no chart"
    if page != "alerts":  # where the broken channel is an error box
        assert not at.error


# --- overview -----------------------------------------------------------------------------------

def test_overview_figures_equal_the_warehouse(dashboard: Config) -> None:
    shown = metrics(open_page("overview"))
    config = dashboard
    today = warehouse(config, spend, TODAY, TODAY, [])
    month = warehouse(config, spend, TODAY.replace(day=1), TODAY, [])
    assert total(today) > 0
    assert shown["Today's spend"] == usd(total(today))
    assert shown["Month to date"] == usd(total(month))

    # The forecast is the monthly_budget rule's, to the cent.
    (forecast,) = [e for e in warehouse(config, evaluate, config, SIM_NOW)
                   if e.kind == "monthly_budget" and e.level == "forecast"]
    assert shown["Month-end forecast"] == usd(forecast.value)
    ratio = (Decimal(sum(r["cache_read_tokens"] for r in month))
             / sum(r[m] for r in month for m in views.INPUT_TOKEN_METRICS))
    assert shown["Cache hit ratio (month)"] == f"{ratio * 100:.1f}%"

    book = warehouse(config, ledger, TODAY - timedelta(days=30),
                     TODAY - timedelta(days=1))
    assert book.totals.realized_total_usd > 0
    assert shown["Realized savings (30 days)"] == usd(book.totals.realized_total_usd)
    assert shown["Biggest potential saving"] == f"{usd(book.potential[0].monthly_usd)} a month"
    firing = query(db_path(config),
                   "SELECT count(*) FROM alert_states WHERE state = 'firing'")[0][0]
    assert firing > 0 and shown["Firing alerts"] == str(firing)


def test_overview_says_what_is_estimated_and_what_fires(dashboard: Config) -> None:
    at = open_page("overview")
    text = " ".join(m.value for m in at.markdown) + " ".join(w.value for w in at.warning)
    assert "billed through 2026-11-24 00:00 CST" in text
    assert "estimated after (usage through 2026-11-24 06:00 CST)" in text
    assert "provisional since" in text and "The last run failed" in text
    assert ":red[**firing**] **daily budget** 2026-11-24 50%" in text
    assert ":gray[silenced] **cache hit ratio** (feature=evals,organization=acme)" in text
    _, df = chart_data(at, 0)  # the last 30 days
    days = warehouse(dashboard, spend, TODAY - timedelta(days=29), TODAY, [])
    assert abs(Decimal(str(df["cost_usd"].sum())) - total(days)) < Decimal("0.005")
    assert set(df["basis"]) == {"billed", "estimated"}
    # October is not stored: no last month, and no comparison with it
    shown = metrics(at)
    assert shown["October (last month)"] == "no data"


# --- spend --------------------------------------------------------------------------------------

def test_spend_charts_and_tables_equal_the_query(dashboard: Config) -> None:
    at = open_page("spend")
    config = dashboard
    since = TODAY - timedelta(days=6)
    by_status = warehouse(config, spend, since, TODAY,
                          ["cache_status", "cost_basis"])
    shown = metrics(at)
    assert shown["Spend in the period"] == usd(total(by_status))
    estimated = total([r for r in by_status if r["cost_basis"] == "estimated"])
    assert estimated > 0 and shown["Estimated"] == usd(estimated)

    spec, df = chart_data(at, 0)
    assert spec["encoding"]["opacity"]["field"] == "basis"  # billed and estimated differ
    assert abs(Decimal(str(df["cost_usd"].sum())) - total(by_status)) < Decimal("0.005")
    for status in views.CACHE_STATUSES:
        expected = total([r for r in by_status if r["cache_status"] == status])
        got = Decimal(str(df.loc[df["cache_status"] == status, "cost_usd"].sum()))
        assert abs(got - expected) < Decimal("0.005"), status

    _, by_model_chart = chart_data(at, 1)
    assert abs(Decimal(str(by_model_chart["cost_usd"].sum())) - total(by_status)) < Decimal(
        "0.005")

    by_model = warehouse(config, spend, since, TODAY, ["model"])
    compared = views.comparison(config, since, TODAY, SIM_NOW)  # today's same hours
    before = warehouse(config, spend, by=["model"], start=compared.previous_start,
                       end=compared.previous_end)
    table = at.dataframe[0]
    top = table.value
    biggest = max(by_model, key=lambda r: r["cost_usd"])
    assert top.iloc[0]["label"] == biggest["model"]
    assert top.iloc[0]["spend"] == float(usd(biggest["cost_usd"])[1:].replace(",", ""))
    was = next(r["cost_usd"] for r in before if r["model"] == biggest["model"])
    assert top.iloc[0]["previous"] == float(usd(was)[1:].replace(",", ""))
    # What a million tokens and a request cost: the spend over the usage's own counts.
    tokens = sum(biggest[m] for m in views.INPUT_TOKEN_METRICS) + biggest["output_tokens"]
    assert biggest["requests"] and tokens
    assert top.iloc[0]["per_mtok"] == pytest.approx(
        float(biggest["cost_usd"] * 1_000_000 / tokens))
    assert top.iloc[0]["per_request"] == pytest.approx(
        float(biggest["cost_usd"] / biggest["requests"]))
    titles = {k: v.get("label") for k, v in json.loads(table.proto.columns).items()}
    assert titles["label"] == "Model" and titles["per_mtok"] == "Per 1M tokens"
    assert titles["previous"] == "Previous 7 days"


def test_spend_filters_and_breakdown_follow_the_widgets(dashboard: Config) -> None:
    at = open_page("spend")
    at.selectbox(key="by").set_value("feature")
    at.multiselect(key="feature").select("evals")
    at.radio(key="grain").set_value("hour").run()
    assert not at.exception
    since = TODAY - timedelta(days=6)
    by_feature = warehouse(dashboard, spend, since, TODAY, ["feature"])
    evals = next(r["cost_usd"] for r in by_feature if r["feature"] == "evals")
    assert metrics(at)["Spend in the period"] == usd(evals)
    _, df = chart_data(at, 1)
    assert set(df["label"]) == {"evals"}
    assert df["when"].str.endswith(":00:00Z").all() and len(set(df["when"])) > 24


# --- caching ------------------------------------------------------------------------------------

def test_caching_figures_equal_the_warehouse(dashboard: Config) -> None:
    at = open_page("caching")
    since = TODAY - timedelta(days=6)
    rows = warehouse(dashboard, spend, since, TODAY, [])
    ratio = views.hit_ratio({m: sum(r[m] for r in rows) for m in views.INPUT_TOKEN_METRICS})
    shown = metrics(at)
    assert ratio is not None and shown["Cache hit ratio"] == f"{ratio * 100:.1f}%"
    waste = warehouse(dashboard, cache_waste, since, TODAY)
    assert shown["Cache waste"] == usd(sum((w.waste_usd for w in waste), Decimal(0)))
    _, lines = chart_data(at, 0)
    assert {"evals", "support bot"} <= set(lines["group"])
    drops = at.dataframe[0].value
    assert "evals / claude-opus-5-5" in set(drops["feature / model"])  # its cold hours


# --- savings ------------------------------------------------------------------------------------

def test_savings_figures_equal_the_ledger(dashboard: Config) -> None:
    at = open_page("savings")
    book = warehouse(dashboard, ledger, TODAY - timedelta(days=30),
                     TODAY - timedelta(days=1))
    shown = metrics(at)
    assert shown["Realized savings"] == usd(book.totals.realized_total_usd)
    assert shown["Saved by caching"] == usd(book.totals.cache_savings_usd)
    assert shown["Saved by the Batch API"] == usd(book.totals.batch_savings_usd)
    for lever, monthly in book.totals.potential_monthly_usd.items():
        assert shown[lever.capitalize()] == f"{usd(monthly)} a month"
    # What could still be saved: a table to sort, biggest first, every lever's row in it.
    (table,) = [d for d in at.dataframe if "change" in d.value.columns]
    shown_rows = list(zip(table.value["lever"], table.value["feature"], table.value["change"],
                          table.value["monthly_usd"]))
    expected = sorted(book.potential, key=lambda p: -p.monthly_usd)
    assert book.potential and shown_rows == [
        (p.lever, p.feature, p.change, float(round_cents(p.monthly_usd))) for p in expected]
    columns = json.loads(table.proto.columns)
    assert columns["change"]["label"] == "What to do"
    assert columns["monthly_usd"]["type_config"]["format"] == "dollar"
    losing = {r.feature for r in book.realized if r.cache_savings_usd < 0}
    captions = " ".join(c.value for c in at.caption)
    assert ("Below zero: caching cost" in captions) == bool(losing)
    charts_shown = at.get("vega_lite_chart")
    _, mix = chart_data(at, len(charts_shown) - 1)
    target = mix[mix["row"] == "target"].set_index("line")["share"].to_dict()
    assert target == {"haiku": 0.7, "sonnet": 0.2, "opus": 0.1}
    assert "evals" in set(mix["row"])


# --- alerts -------------------------------------------------------------------------------------

def test_alerts_page_shows_firing_episodes_deliveries_and_the_broken_channel(
        dashboard: Config) -> None:
    at = open_page("alerts")
    shown = metrics(at)
    assert shown["Broken channels"] == "1" and shown["Active silences"] == "1"
    assert any("finance-email" in e.value and "550 5.1.1" in e.value for e in at.error)
    firing = at.dataframe[0].value
    assert "cache hit ratio" in set(firing["rule"])
    assert any(s.endswith("(silenced)") for s in firing["state"])
    deliveries = at.dataframe[2].value
    assert {"ops-slack", "finance-email"} <= set(deliveries["channel"])
    spec, timeline = chart_data(at, 0)
    assert {"firing", "expired"} <= set(timeline["state"])
    # episodes of the last day: labels with the day and a 24-hour time, not "12:39"
    assert spec["layer"][0]["encoding"]["x"]["axis"]["format"] == "%b %d %H:%M"


def test_a_silence_is_created_and_expired_from_the_page(seeded: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    copy = copy_warehouse(db_path(load_config(seeded)), tmp_path / "cfg")
    config = load_config(write_dashboard_config(tmp_path / "cfg", copy))
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(config.path))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    st.cache_data.clear()
    at = open_page("alerts")
    at.selectbox(key="alerts_silence_rule").set_value("cache hit ratio").run()
    scope_key = "feature=evals,organization=acme"
    at.selectbox(key="alerts_silence_scope").set_value(scope_key)
    at.text_input(key="alerts_silence_for").input("2h")
    at.text_input(key="alerts_silence_comment").input("known spike")
    at.button(key="alerts_silence_create").click().run()
    assert not at.exception
    rows = query(copy, "SELECT id, scope_key, created_at, expires_at, comment FROM alert_silences "
                       "WHERE scope_key IS NOT NULL")
    assert len(rows) == 1
    silence_id, scope, created, expires, comment = rows[0]
    assert (scope, created, expires, comment) == (scope_key, SIM_NOW,
                                                  SIM_NOW + timedelta(hours=2), "known spike")
    assert metrics(at)["Active silences"] == "2"
    assert any("silenced until" in s.value for s in at.success)

    at.button(key=f"alerts_expire_{silence_id}").click().run()
    assert not at.exception
    assert query(copy, "SELECT expires_at FROM alert_silences WHERE id = ?",
                 silence_id) == [(SIM_NOW,)]
    assert metrics(at)["Active silences"] == "1"


def test_a_bad_duration_is_one_line_and_writes_nothing(seeded: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    copy = copy_warehouse(db_path(load_config(seeded)), tmp_path / "cfg")
    config = load_config(write_dashboard_config(tmp_path / "cfg", copy))
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(config.path))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    st.cache_data.clear()
    at = open_page("alerts")
    at.text_input(key="alerts_silence_for").input("soon")
    at.button(key="alerts_silence_create").click().run()
    assert not at.exception
    assert any("'soon' is not a duration" in e.value for e in at.error)
    assert query(copy, "SELECT count(*) FROM alert_silences") == [(1,)]


# --- reports ------------------------------------------------------------------------------------

def test_the_csv_of_a_view_matches_the_cli_json(dashboard: Config) -> None:
    at = open_page("reports")
    since = TODAY - timedelta(days=6)
    rows = warehouse(dashboard, views.spend, since, TODAY,
                     ["date", "feature", "model"])
    assert metrics(at)["Spend in the view"] == usd(total(rows))
    assert at.get("download_button")
    cli = warehouse(dashboard, spend, since, TODAY, ["date", "feature", "model"])
    lines = views.spend_csv(rows, ["date", "feature", "model"]).splitlines()
    assert lines[0] == ("date,feature,model,cost_usd,uncached_input_tokens,cache_write_5m_tokens,"
                        "cache_write_1h_tokens,cache_read_tokens,output_tokens,"
                        "web_search_requests,unpriced_tokens")
    assert len(lines) == len(cli) + 1
    # The dashboard's download: the same rows under the table's titles, for a spreadsheet.
    human = views.spend_csv(rows, ["date", "feature", "model"], human=True).splitlines()
    assert human[0].startswith("Date,Feature,Model,Cost (USD),Uncached input tokens,")
    assert human[1:] == lines[1:]
    for line, row in zip(lines[1:], cli):
        assert line.split(",")[3] == money_str(row["cost_usd"])
        # text cells as every CSV writes them: "'+ops notebook" is no formula
        assert line.split(",")[:3] == [str(row["date"]), csv_cell(row["feature"]),
                                       row["model"] or ""]


def test_tables_read_as_people_read_them(dashboard: Config) -> None:
    # Reports: human column titles, dollars as dollars, token counts with separators
    # (15411098 read as a phone number); the download has the same titles.
    at = open_page("reports")
    table = at.dataframe[0]
    columns = json.loads(table.proto.columns)
    # Many count columns: compact (15.4M) under short titles, the full one as help, so the
    # table fits the page; the CSV keeps them exact.
    assert columns["cost_usd"]["label"] == "Cost"
    assert columns["cost_usd"]["help"] == "Cost (USD)"
    assert columns["cost_usd"]["type_config"]["format"] == "dollar"
    assert columns["cache_read_tokens"]["label"] == "Cache read"
    assert columns["cache_read_tokens"]["help"] == "Cache read tokens"
    assert columns["cache_read_tokens"]["type_config"]["format"] == "compact"
    assert columns["feature"]["label"] == "Feature"
    assert table.value["cache_read_tokens"].max() > 1000  # a number that needs separators
    caching = open_page("caching")
    for frame_ in caching.dataframe:
        config = json.loads(frame_.proto.columns)
        counts = [c for c in frame_.value.columns if "tokens" in c or "reads" in c]
        assert counts and all(config[c]["type_config"]["format"] == "localized"
                              for c in counts), config


def test_csv_keeps_workspace_and_key_ids() -> None:
    row = {"workspace": "Search", "workspace_id": "wrkspc_1", "cost_usd": Decimal("1.5"),
           **{m: 0 for m in views.METRICS[1:]}, "unpriced_tokens": 0}
    assert views.spend_csv([row], ["workspace"]).splitlines()[1] == (
        "Search,wrkspc_1,1.50,0,0,0,0,0,0,0")


# --- the views themselves -----------------------------------------------------------------------

def test_grouped_spend_is_the_clis_spend(dashboard: Config) -> None:
    since = TODAY - timedelta(days=6)
    for by in (["date", "model"], ["feature", "cache_status"], ["workspace", "api_key"],
               ["cost_basis", "service_tier"]):
        assert warehouse(dashboard, views.spend, since, TODAY, by) == \
            warehouse(dashboard, spend, since, TODAY, by)
    hours = warehouse(dashboard, views.spend, since, TODAY, ["period"], None,
                      "hour")
    weeks = warehouse(dashboard, views.spend, since, TODAY, ["period"], None,
                      "week")
    assert total(hours) == total(weeks) == warehouse(dashboard, views.total_spend,
                                                     since, TODAY)
    assert [w["period"] for w in weeks] == [datetime(2026, 11, 16), datetime(2026, 11, 23)]


def test_a_series_of_token_counts_is_the_full_querys_tokens(dashboard: Config) -> None:
    """``metrics`` sums only token counts (the hit ratio's series): the same groups with input
    as the full query, the same counts; groups without input left out; money refused."""
    since = TODAY - timedelta(days=6)
    by = ["period", "feature", "model"]
    inputs = list(views.INPUT_TOKEN_METRICS)
    full = warehouse(dashboard, spend, since, TODAY, by, None, "hour")
    lean = warehouse(dashboard, spend, since, TODAY, by, None, "hour", metrics=inputs)
    key = lambda r: (r["period"], r["feature"], r["model"])  # noqa: E731
    with_input = {key(r): [r[m] for m in inputs] for r in full if any(r[m] for m in inputs)}
    assert len(with_input) < len(full)  # cost-only groups (code execution) exist
    assert {key(r): [r[m] for m in inputs] for r in lean} == with_input
    assert all(set(r) == {*by, *inputs} for r in lean)
    series = warehouse(dashboard, views.cache_series, since, TODAY, "feature and model", "hour")
    assert sum(r["cache_read_tokens"] for r in series) == sum(r["cache_read_tokens"] for r in full)
    with pytest.raises(ValueError, match="token metrics only"):
        warehouse(dashboard, spend, since, TODAY, by, metrics=["cost_usd"])


def test_filters_keep_only_what_they_name(dashboard: Config) -> None:
    since = TODAY - timedelta(days=6)
    by_feature = {r["feature"]: r for r in warehouse(dashboard, spend, since,
                                                     TODAY, ["feature"])}
    kept = warehouse(dashboard, views.spend, since, TODAY, [],
                     {"feature": ["evals", "support bot"]})
    assert total(kept) == by_feature["evals"]["cost_usd"] + by_feature["support bot"]["cost_usd"]
    no_model = warehouse(dashboard, views.spend, since, TODAY, ["model"],
                         {"model": [None]})
    assert [r["model"] for r in no_model] == [None] and total(no_model) > 0


def test_top_spenders_compare_with_the_period_before(dashboard: Config) -> None:
    assert views.previous_period(date(2026, 11, 18), date(2026, 11, 24)) == (
        date(2026, 11, 11), date(2026, 11, 17))
    top = warehouse(dashboard, views.top_spenders, date(2026, 11, 21),
                    date(2026, 11, 22), "feature")
    before = {r["feature"]: r["cost_usd"] for r in warehouse(
        dashboard, spend, date(2026, 11, 19), date(2026, 11, 20), ["feature"])}
    for row in top:
        assert row["previous_usd"] == before.get(row["label"], Decimal(0))
        assert row["change_usd"] == row["cost_usd"] - row["previous_usd"]
    assert [r["cost_usd"] for r in top] == sorted((r["cost_usd"] for r in top), reverse=True)


def test_a_partial_today_is_compared_with_the_same_hours(dashboard: Config) -> None:
    # SIM_NOW is 06:00 in Chicago on Tuesday 24 Nov: the week to today holds six hours of
    # today, so it is compared with Nov 11 00:00 to Nov 17 06:00, not with seven whole days.
    since = TODAY - timedelta(days=6)
    compared = views.comparison(dashboard, since, TODAY, SIM_NOW)
    chicago = dashboard.tz
    assert compared.partial and compared.end == SIM_NOW
    assert compared.previous_start == datetime(2026, 11, 11, tzinfo=chicago)
    assert compared.previous_end == datetime(2026, 11, 17, 6, tzinfo=chicago)
    assert compared.previous_text(chicago) == "2026-11-11 00:00 to 2026-11-17 06:00"
    top = warehouse(dashboard, views.top_spenders, since, TODAY, "feature", None, 10, SIM_NOW)
    same_hours = {r["feature"]: r["cost_usd"] for r in warehouse(
        dashboard, spend, by=["feature"], start=compared.previous_start,
        end=compared.previous_end)}
    whole_days = {r["feature"]: r["cost_usd"] for r in warehouse(
        dashboard, spend, date(2026, 11, 11), date(2026, 11, 17), ["feature"])}
    assert top and all(r["previous_usd"] == same_hours.get(r["label"], Decimal(0))
                       for r in top)
    assert any(same_hours[f] != whole_days[f] for f in same_hours)  # the 18 hours left out
    assert warehouse(dashboard, views.compared_total, since, TODAY, None, SIM_NOW) == \
        sum(same_hours.values(), Decimal(0))
    # The first days stored (from November 1) have nothing stored before them to compare
    # with: no change, not a change against $0.
    first_week = (MONTH_START, MONTH_START + timedelta(days=6))
    assert warehouse(dashboard, views.compared_total, *first_week, None, SIM_NOW) is None
    unknown = warehouse(dashboard, views.top_spenders, *first_week, "feature", None, 10, SIM_NOW)
    assert unknown and all(r["previous_usd"] is r["change_usd"] is r["change_pct"] is None
                           for r in unknown)
    # A period that is over compares whole days; so does one without a clock.
    assert not views.comparison(dashboard, since - DAY, TODAY - DAY, SIM_NOW).partial
    assert views.comparison(dashboard, since, TODAY).previous_end == datetime(
        2026, 11, 18, tzinfo=chicago)
    # The same local hour across the clocks going back (at 02:00 on Nov 1): 01:00 CST on
    # the 2nd is compared with 01:00 CDT on the 1st, 25 hours earlier in UTC.
    across = views.comparison(dashboard, date(2026, 11, 2), date(2026, 11, 2),
                              datetime(2026, 11, 2, 7, tzinfo=UTC))
    assert across.previous_end == datetime(2026, 11, 1, 6, tzinfo=UTC)
    assert across.end - across.previous_end == timedelta(hours=25)


def test_the_spend_page_compares_today_with_the_same_hours(dashboard: Config) -> None:
    at = open_page("spend")
    captions = " ".join(c.value for c in at.caption)
    assert "(2026-11-11 00:00 to 2026-11-17 06:00): today is not over" in captions


def test_a_link_opens_the_page_on_the_view_it_names(dashboard: Config) -> None:
    # What an alert's link to /Spend?period=2026-11-23&feature=evals opens: that day, that
    # feature, the filters open; a value the page does not know is dropped, not an error.
    at = AppTest.from_file(str(MAIN), default_timeout=30).run()
    at.query_params.update({"period": "2026-11-23", "feature": ["evals", "no such feature"],
                            "grain": "hour"})
    at.switch_page("pages/spend.py").run()
    assert not at.exception, [e.value for e in at.exception]
    day = date(2026, 11, 23)
    evals = warehouse(dashboard, spend, day, day, [], {"feature": ["evals"]})
    assert metrics(at)["Spend in the period"] == usd(total(evals))
    assert at.multiselect(key="feature").value == ["evals"]
    assert at.radio(key="grain").value == "hour"
    assert at.date_input(key="period").value == (day,)
    # and the view's own address: the controls write it back (a copied URL is the view)
    assert at.query_params.get("feature") in ("evals", ["evals"])


def test_ratio_drops_are_hours_at_half_the_usual_ratio_or_less() -> None:
    def hour(n: int, ratio: str, tokens: int = 1_000_000) -> dict[str, Any]:
        return {"period": datetime(2026, 11, 20) + timedelta(hours=n), "group": "bot",
                "input_tokens": tokens, "hit_ratio": Decimal(ratio)}

    series = [hour(n, "0.6") for n in range(8)] + [hour(8, "0.1"), hour(9, "0.2"),
                                                   hour(10, "0.0", tokens=10), hour(11, "0.55")]
    (moment,) = views.cache_ratio_drops(series)
    assert (moment["start"], moment["end"], moment["hours"]) == (
        datetime(2026, 11, 20, 8), datetime(2026, 11, 20, 10), 2)
    assert moment["lowest_ratio"] == Decimal("0.1") and moment["usual_ratio"] == Decimal("0.6")


# --- the clock, an empty database, a locked one ------------------------------------------------

def test_the_clock_comes_from_spendwatch_now() -> None:
    assert data.read_clock({"SPENDWATCH_NOW": "2026-11-24T06:00:00-06:00"}) == SIM_NOW
    with pytest.raises(ConfigError, match="SPENDWATCH_NOW"):
        data.read_clock({"SPENDWATCH_NOW": "yesterday"})
    real = data.read_clock({})
    assert real.second == 0 and real.microsecond == 0


def test_a_bad_clock_is_one_line_not_a_traceback(dashboard: Config,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDWATCH_NOW", "tomorrow")
    at = AppTest.from_file(str(MAIN), default_timeout=30).run()
    assert not at.exception
    assert "SPENDWATCH_NOW='tomorrow' is not an RFC 3339 timestamp" in at.error[0].value


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_dashboard_config(tmp_path, tmp_path / "nothing-yet.duckdb")
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(path))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    st.cache_data.clear()
    return path


@pytest.mark.parametrize("page", PAGES)
def test_an_empty_database_says_what_to_run(empty: Path, page: str) -> None:
    at = open_page(page)
    assert any("run `spendwatch collect`" in i.value.lower() for i in at.info)
    assert not at.get("vega_lite_chart")
    assert not exists(db_path(load_config(empty)))  # a reader creates nothing


def test_a_missing_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(tmp_path / "nope.toml"))
    at = AppTest.from_file(str(MAIN), default_timeout=30).run()
    assert not at.exception
    assert "config file not found" in at.error[0].value


@pytest.fixture
def locked(seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The seeded database held read-write by another process, and a 0.5 s lock timeout."""
    database = db_path(load_config(seeded))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, duckdb
        conn = duckdb.connect({str(database)!r})
        print("holding", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        path = write_dashboard_config(tmp_path, database, lock_timeout=0.5)
        monkeypatch.setenv("SPENDWATCH_CONFIG", str(path))
        monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
        st.cache_data.clear()
        yield path
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.mark.file_only("a DuckDB file's lock: a DuckLake's readers never wait for a writer")
@pytest.mark.parametrize("page", ("overview", "spend", "alerts"))
def test_a_locked_database_says_the_data_is_being_updated(locked: Path, page: str) -> None:
    at = open_page(page)
    assert any("The data is being updated" in w.value for w in at.warning)
    assert not at.get("vega_lite_chart")


def test_a_database_with_nothing_collected_says_what_to_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write_dashboard_config(tmp_path, tmp_path / "migrated.duckdb"))
    with storage.writer(config):
        pass  # migrated, nothing collected (a first collection that failed)
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(config.path))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    st.cache_data.clear()
    at = open_page("overview")
    assert any("run `spendwatch collect`" in i.value.lower() for i in at.info)
    for page in PAGES[1:]:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, page


def test_the_reports_page_offers_the_weekly_csv_of_the_cli(dashboard: Config) -> None:
    """The last complete week (W47 at SIM_NOW) is offered, and its text is the CLI's file."""
    import reports.weekly as reports
    at = open_page("reports")
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download the weekly CSV for 2026-W47" in labels
    with storage.reader(dashboard) as conn:
        text = reports.weekly_csv(Batch(conn, dashboard), "2026-W47")
    monday, sunday = reports.iso_week_range("2026-W47")
    with storage.reader(dashboard) as conn:
        rows = reports.weekly_rows(Batch(conn, dashboard), monday, sunday)
    assert text == reports.csv_text(rows) and text.startswith("date,organization,workspace_id")


def test_the_reports_page_lists_the_weekly_reports_the_worker_wrote(dashboard: Config) -> None:
    from reports.runs import write_report
    at = open_page("reports")
    assert any("No weekly report written yet" in i.value for i in at.info)
    run = write_report(dashboard, "acme", "2026-W47", SIM_NOW)
    assert run.action == "written" and run.path is not None and run.path.exists()
    st.cache_data.clear()
    at = open_page("reports")
    table = next(d.value for d in at.dataframe if "week" in d.value.columns)
    assert table.to_dict("records") == [{
        "week": "2026-W47", "organization": "acme", "written": "2026-11-24 06:00 CST",
        "rows": len(run.path.read_text().splitlines()) - 1,
        "cost_usd": float(warehouse(dashboard, total_spend_of_week)),
        "final": "still settling", "sent": "not sent (no channel)", "file": run.path.name}]
    # The folder is in the caption above the table; the table names the file.
    assert any(str(run.path.parent) in c.value for c in at.caption)
    assert any("every Monday from 07:00 (America/Chicago)" in c.value for c in at.caption)


def total_spend_of_week(batch: Batch) -> Decimal:
    from spendwatch.warehouse.figures import total_spend
    return total_spend(batch, date(2026, 11, 16), date(2026, 11, 22)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP)
