"""Estimates, reconciliation and legacy allocation on the simulated organization."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path


from collectors.rows import UsageRow
from collectors.sync import CollectOptions, Window, collect, write_window
from conftest import SIM_NOW, Simulator, write_config
from spendwatch.warehouse.batch import Batch
from spendwatch import storage
from spendwatch.config import load_config
from spendwatch.pricing import price_table
from spendwatch.warehouse.spend import spend
from spendwatch.warehouse.reconcile import reconciliation
from spendwatch.timeutil import local_range
from warehouse import db_path, query

UTC = timezone.utc
NOV20, NOV23 = date(2026, 11, 20), date(2026, 11, 23)


def run(path: Path, since: date, until: date, refresh: bool = False):
    config = load_config(path)
    start, end = local_range(since, until, config.tz)
    (result,) = collect(config, CollectOptions(since=start, until=end, refresh=refresh),
                        now=SIM_NOW, sleep=lambda s: None)
    return config, result


def test_estimated_and_billed_reconcile_per_day_and_model(org_config) -> None:
    config, result = run(org_config(), NOV20, NOV23)
    assert result.ok, result.error
    with storage.reader(config) as conn:
        rows = reconciliation(Batch(conn, config), NOV20, NOV23)
    assert {r.date for r in rows} == {NOV20 + timedelta(days=n) for n in range(4)}
    priced = [r for r in rows if r.model is not None]
    assert len({r.model for r in priced}) == 5
    for row in priced:
        assert row.billed_usd > 0 and row.unpriced_tokens == 0
        assert abs(row.difference_pct) <= Decimal("0.5"), row  # type: ignore[operator]


def test_hours_not_billed_yet_are_estimated_then_replaced_by_the_bill(
        org_config, simulator: Simulator) -> None:
    path = org_config()
    simulator.fault(path="/v1/organizations/analytics/cost", count=1000, status=500,
                    kind="error")
    config, result = run(path, NOV20, NOV20)
    assert not result.ok  # the cost API is down: only usage is stored
    start, end = local_range(NOV20, NOV20, config.tz)
    truth = Decimal(simulator.truth(start, end)["token_cost_usd"]) + Decimal(
        simulator.truth(start, end)["web_search_cost_usd"])
    with storage.reader(config) as conn:
        rows = spend(Batch(conn, config), NOV20, NOV20, ["cost_basis"])
        by_basis = {r["cost_basis"]: r["cost_usd"] for r in rows}
        (everything,) = spend(Batch(conn, config), NOV20, NOV20, [])
    assert rows[0]["output_tokens"] == everything["output_tokens"] > 0
    # The tokens are on the row of the cost they are priced at (spend --by cost_basis puts a
    # group's tokens on its main basis), never on a row of their own with $0.
    assert set(by_basis) == {"estimated"}
    assert by_basis["estimated"] == truth  # the simulator bills at list price

    simulator.control("DELETE", "/_sim/faults")
    run(path, NOV20, NOV20, refresh=True)
    with storage.reader(config) as conn:
        by_basis = {r["cost_basis"]: r["cost_usd"]
                    for r in spend(Batch(conn, config), NOV20, NOV20, ["cost_basis"])}
    assert set(by_basis) == {"billed"}
    assert by_basis["billed"] == Decimal(simulator.truth(start, end)["cost_usd"])


def test_estimates_follow_a_price_override(org_config, simulator: Simulator) -> None:
    simulator.fault(path="/v1/organizations/analytics/cost", count=1000, status=500,
                    kind="error")
    config, _ = run(org_config(), NOV20, NOV20)
    with storage.reader(config) as conn:
        before = {r["model"]: r["cost_usd"] for r in spend(Batch(conn, config), NOV20, NOV20,
                                                           ["model"])}
    override = ('[[pricing.prices]]\nmodel = "claude-opus-5-5"\ncomponent = "output"\n'
                'price_usd = "40"\nunit = "per_mtok"\neffective_from = "2026-11-01"\n')
    config, _ = run(org_config(extra=override), NOV20, NOV20)
    with storage.reader(config) as conn:
        after = {r["model"]: r["cost_usd"] for r in spend(Batch(conn, config), NOV20, NOV20,
                                                          ["model"])}
        standard, batch = conn.execute(
            "SELECT sum(output_tokens) FILTER (service_tier = 'standard'), "
            "coalesce(sum(output_tokens) FILTER (service_tier = 'batch'), 0) FROM usage_hourly "
            "WHERE model = 'claude-opus-5-5' AND bucket_start >= ? AND bucket_start < ?",
            list(local_range(NOV20, NOV20, config.tz))).fetchone()
    # output doubled from $20 to $40 per Mtok: the estimate grows by $20 per standard Mtok
    # and by $10 per batch Mtok (half price)
    assert after["claude-opus-5-5"] - before["claude-opus-5-5"] == (
        Decimal(standard) * 20 + Decimal(batch) * 10) / 10**6
    assert after["claude-sonnet-5-5"] == before["claude-sonnet-5-5"]


def test_usage_without_a_price_is_reported_unpriced_not_zero(org_config) -> None:
    config = load_config(org_config())
    hour = datetime(2026, 11, 20, 15, tzinfo=UTC)
    row = UsageRow("acme", "analytics", hour, hour + timedelta(hours=1), "claude-mythos-5-2",
                   "wrkspc_x", "apikey_x", "standard", "0-200k", 1000, 0, 0, 500, 200, 0, 3)
    write_window(config, "acme", Window("usage", hour, hour + timedelta(hours=1),
                 "analytics"), [row], None, SIM_NOW, SIM_NOW, price_table(config.prices))
    with storage.reader(config) as conn:
        (total,) = spend(Batch(conn, config), NOV20, NOV20, [])
        (reason,) = conn.execute("SELECT unpriced_reason FROM usage_estimates").fetchone()
    assert total["cost_usd"] == 0 and total["unpriced_tokens"] == 1700
    assert reason == "no price for model claude-mythos-5-2"


def test_legacy_cost_is_split_across_keys_exactly(org_config, simulator: Simulator,
                                                  isolated: Path) -> None:
    config, result = run(org_config(source="legacy"), NOV20, NOV23)
    assert result.ok, result.error
    mismatched = query(db_path(config), """
        SELECT c.row_key, c.amount_usd, sum(a.amount_usd)
        FROM cost_buckets c JOIN cost_allocated a ON a.source_row_key = c.row_key
        GROUP BY c.row_key, c.amount_usd HAVING c.amount_usd <> sum(a.amount_usd)""")
    assert mismatched == []
    orphans = query(db_path(config), "SELECT count(*) FROM cost_buckets c WHERE NOT "
                    "EXISTS (SELECT 1 FROM cost_allocated a WHERE a.source_row_key = c.row_key)")
    assert orphans == [(0,)]
    assert query(db_path(config), "SELECT DISTINCT cost_basis FROM cost_allocated "
                 "ORDER BY 1") == [("allocated",), ("billed",)]
    # Every key on a line pays the same unit price, so splitting by tokens recovers each
    # key's own cost: per-key token and web search cost matches what the Analytics API bills
    # each key (collected into a second database), to the cent.
    analytics_folder = isolated / "analytics"
    analytics_folder.mkdir()
    analytics = load_config(write_config(analytics_folder, [{"name": "acme",
                                                             "base_url": simulator.url}]))
    collect(analytics, CollectOptions(since=local_range(NOV20, NOV23, config.tz)[0],
                                      until=local_range(NOV20, NOV23, config.tz)[1]),
            now=SIM_NOW)
    per_key = """SELECT coalesce(api_key_id, '-'), round(sum(cost_usd), 2) FROM spend_facts
                 WHERE bucket_start >= ? AND bucket_start < ?
                   AND cost_type IN ('tokens', 'web_search') GROUP BY 1 ORDER BY 1"""
    start, end = datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)
    allocated = query(db_path(config), per_key, start, end)
    assert len(allocated) >= 8
    assert allocated == query(db_path(analytics), per_key, start, end)


def test_legacy_spend_by_api_key_and_local_day_adds_up(org_config,
                                                      simulator: Simulator) -> None:
    config, _ = run(org_config(source="legacy"), NOV20, NOV23)
    with storage.reader(config) as conn:
        rows = spend(Batch(conn, config), date(2026, 11, 21), date(2026, 11, 22),
                     ["date", "api_key", "cost_basis"])
    assert {r["cost_basis"] for r in rows if r["cost_usd"]} == {"allocated", "billed"}
    assert any(r["api_key"] == "support-bot-prod" and r["cost_usd"] > 0 for r in rows)
    assert isinstance(rows[0]["cost_usd"], Decimal)


def test_legacy_usage_no_cost_line_follows_is_estimated_or_unpriced_never_zero(
        org_config) -> None:
    config, result = run(org_config(source="legacy"), NOV20, NOV20)
    assert result.ok, result.error
    hour = datetime(2026, 11, 20, 18, tzinfo=UTC)
    window = Window("usage", hour.replace(hour=0), hour.replace(hour=0) + timedelta(days=1),
                    "legacy")
    with storage.reader(config) as conn:
        rows = [UsageRow("acme", "legacy", *r) for r in conn.execute(
            "SELECT bucket_start, bucket_end, model, workspace_id, api_key_id, service_tier, "
            "context_window, uncached_input_tokens, cache_write_5m_tokens, "
            "cache_write_1h_tokens, cache_read_tokens, output_tokens, web_search_requests, "
            "requests FROM usage_hourly WHERE bucket_start >= ? AND bucket_start < ?",
            [window.start, window.end]).fetchall()]
        before = {r["service_tier"]: r for r in spend(Batch(conn, config), NOV20, NOV20,
                                                      ["service_tier"])}
    assert rows
    # Priority Tier never appears in the legacy cost report, and has no public price.
    priority = UsageRow("acme", "legacy", hour, hour + timedelta(hours=1), "claude-sonnet-4-6",
                        rows[0].workspace_id, rows[0].api_key_id, "priority", "0-200k",
                        5_000_000, 0, 0, 0, 0, 0, None)
    write_window(config, "acme", window, [*rows, priority], None, SIM_NOW,
                 SIM_NOW, price_table(config.prices))
    with storage.reader(config) as conn:
        after = {r["service_tier"]: r for r in spend(Batch(conn, config), NOV20, NOV20,
                                                     ["service_tier"])}
    assert after["priority"]["uncached_input_tokens"] == 5_000_000
    assert after["priority"]["unpriced_tokens"] == 5_000_000
    assert after["priority"]["cost_usd"] == 0  # unpriced, and said so: not a silent $0
    assert after["standard"]["cost_usd"] == before["standard"]["cost_usd"]


def test_prices_follow_the_utc_day_whatever_the_hosts_time_zone(org_config,
                                                                simulator: Simulator) -> None:
    """Sonnet 5.5's cache read changed price at 2026-10-07T00:00Z: a host in Chicago must
    price the hours after that UTC midnight at the new rate too."""
    import json
    import os
    import subprocess
    import sys
    from conftest import ADMIN_KEY, REPO
    path = org_config(collection="max_attempts = 1")  # the cost API is down: no backoff
    simulator.fault(path="/v1/organizations/analytics/cost", count=1000, status=500,
                    kind="error")
    env = {**os.environ, "TZ": "America/Chicago", "ANTHROPIC_ADMIN_KEY": ADMIN_KEY}
    base = [sys.executable, "-m", "spendwatch", "--config", str(path)]
    subprocess.run(base + ["collect", "--since", "2026-10-06", "--until", "2026-10-07"],
                   cwd=REPO, env=env, capture_output=True, timeout=300)
    out = subprocess.run(base + ["spend", "--since", "2026-10-06", "--until", "2026-10-07",
                                 "--by", "cost_basis", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    estimated = [Decimal(r["cost_usd"]) for r in json.loads(out.stdout)
                 if r["cost_basis"] == "estimated"]
    start, end = local_range(date(2026, 10, 6), date(2026, 10, 7), load_config(path).tz)
    truth = simulator.truth(start, end)
    assert estimated == [Decimal(truth["token_cost_usd"]) + Decimal(truth["web_search_cost_usd"])]
