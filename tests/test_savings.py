"""The savings ledger: golden figures by hand, a hand-built warehouse, and the simulator's
organization checked against an independent calculation with literal list prices."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from collectors.sync import CollectOptions, collect
from conftest import SIM_NOW
from warehouse import open_warehouse, db_path
from spendwatch.numbers import usd
from spendwatch.warehouse.batch import Batch
from spendwatch import facts, storage
from spendwatch.config import (CollectionConfig, Config, FeatureRule, OrganizationConfig,
                               SavingsConfig, StorageConfig, load_config)
from spendwatch.pricing import TokenCounts, default_price_table
from spendwatch.savings import (UnitPrices, headline, batch_potential, batch_savings, cache_savings,
                                cache_waste, caching_potential, extra_reads, hit_ratio,
                                is_wasted, ledger, line_mix, monthly, no_cache_cost, potential,
                                price_ratio, realized, realized_total, routing_moves,
                                routing_potential, token_cost, unit_prices,
                                waste_premium)

UTC = timezone.utc
D = Decimal
NOV_20 = date(2026, 11, 20)
TABLE = default_price_table()
# Opus 5.5 list prices per MTok (pricing.md): input 4, 5m write 5 (1.25x), 1h write 8 (2x),
# read 0.20 (its own 0.05x), output 20.
OPUS = UnitPrices(D(4), D(5), D(8), D("0.20"), D(20))
OPUS_BATCH = UnitPrices(D(2), D("2.5"), D(4), D("0.10"), D(10))
TOKENS = TokenCounts(input=1_000_000, cache_write_5m=200_000, cache_write_1h=100_000,
                     cache_read=2_000_000, output=50_000)


# --- golden figures --------------------------------------------------------------------------

def test_unit_prices_apply_the_cache_multipliers_the_tier_and_the_day() -> None:
    assert unit_prices(TABLE, "claude-opus-5-5", NOV_20, "standard", "0-200k") == OPUS
    assert unit_prices(TABLE, "claude-opus-5-5", NOV_20, "batch", "0-200k") == OPUS_BATCH
    # Sonnet 5.5 reads at 0.20 before 2026-10-07, 0.10 (0.05x input) from that day.
    assert unit_prices(TABLE, "claude-sonnet-5-5", date(2026, 10, 6), None, None) == UnitPrices(
        D(2), D("2.50"), D(4), D("0.20"), D(10))
    sonnet = unit_prices(TABLE, "claude-sonnet-5-5", NOV_20, None, None)
    assert sonnet is not None and sonnet.cache_read == D("0.10")
    # Haiku 5.5 in the 200k-1M window: its over-100k rate.
    assert unit_prices(TABLE, "claude-haiku-5-5", NOV_20, "standard", "200k-1M") == UnitPrices(
        D("0.50"), D("0.625"), D("1.00"), D("0.05"), D("2.50"))
    assert unit_prices(TABLE, "claude-opus-5-5", NOV_20, "priority", None) is None
    assert unit_prices(TABLE, "claude-unknown-9", NOV_20, "standard", None) is None


def test_cache_savings_are_the_reads_saved_minus_the_write_premium() -> None:
    # actual = 1.0M x 4 + 0.2M x 5 + 0.1M x 8 + 2.0M x 0.20 + 0.05M x 20 = 4 + 1 + 0.8 + 0.4 + 1
    assert token_cost(TOKENS, OPUS) == D("7.2")
    # no cache = 3.3M x 4 + 0.05M x 20 = 13.2 + 1
    assert no_cache_cost(TOKENS, OPUS) == D("14.2")
    # reads 2.0M x 3.80 = 7.6, minus 0.2M x 1 (5m premium) and 0.1M x 4 (1h premium)
    assert cache_savings(TOKENS, OPUS) == D("7.0")
    # Writes never read: the premium makes the savings negative.
    wasted = TokenCounts(input=100_000, cache_write_5m=400_000)
    assert cache_savings(wasted, OPUS) == D("-0.4")


def test_batch_savings_stack_with_caching_and_add_up_to_the_total() -> None:
    assert token_cost(TOKENS, OPUS_BATCH) == D("3.6")
    assert no_cache_cost(TOKENS, OPUS_BATCH) == D("7.1")
    assert cache_savings(TOKENS, OPUS_BATCH) == D("3.5")
    assert batch_savings(TOKENS, OPUS, OPUS_BATCH) == D("7.1")  # baseline 14.2 - 7.1
    assert realized_total(TOKENS, OPUS, OPUS_BATCH) == D("10.6") == D("3.5") + D("7.1")
    assert batch_savings(TOKENS, OPUS, OPUS) == 0
    assert realized_total(TOKENS, OPUS, OPUS) == cache_savings(TOKENS, OPUS)


def test_waste_is_the_write_premium_of_writes_read_in_neither_hour() -> None:
    # 0.4M x (5 - 4) + 0.1M x (8 - 4)
    assert waste_premium(400_000, 100_000, OPUS) == D("0.8")
    assert waste_premium(400_000, 100_000, OPUS_BATCH) == D("0.4")
    assert is_wasted(0, 0)
    assert not is_wasted(0, 1) and not is_wasted(5, 0)


def test_batch_potential_and_the_month() -> None:
    assert batch_potential(D("14.2"), D("0.5")) == D("7.1")
    assert monthly(D("7.1"), 3) == D("71")
    assert monthly(D("10"), 31) == D(300) / D(31)
    assert usd(D("1234.565")) == "$1,234.57"
    assert usd(D("-0.4")) == "-$0.40"


def test_caching_potential_moves_extra_reads_from_uncached_input() -> None:
    tokens = TokenCounts(input=800_000, cache_write_5m=100_000, cache_read=100_000)
    assert hit_ratio(tokens) == D("0.1")
    assert hit_ratio(TokenCounts(output=5)) is None
    # target 0.5 of 1M input = 500k reads; 400k more, at most the 800k uncached.
    assert extra_reads(tokens, D("0.5")) == D(400_000)
    assert extra_reads(TokenCounts(input=100_000, cache_write_5m=900_000), D("0.5")) == D(100_000)
    assert extra_reads(TokenCounts(input=1, cache_read=9), D("0.5")) == 0
    sonnet = unit_prices(TABLE, "claude-sonnet-5-5", NOV_20, "standard", None)
    assert sonnet is not None
    # Opus holds 600k of the 800k uncached (3/4 of the extra reads, 300k x 3.80 = 1.14),
    # Sonnet 5.5 200k (100k x (2 - 0.10) = 0.19).
    assert caching_potential(D(400_000), [(600_000, OPUS), (200_000, sonnet)],
                             800_000) == D("1.33")
    # Unpriced uncached input takes its share of the extra reads but adds no dollars.
    assert caching_potential(D(400_000), [(600_000, OPUS)], 800_000) == D("1.14")


def test_routing_moves_the_excess_one_line_down_at_the_reference_price_ratio() -> None:
    mix = SavingsConfig().target_mix
    cost = {"haiku": D(20), "sonnet": D(30), "opus": D(50), "fable": D(99)}
    assert line_mix(cost) == {"haiku": D("0.2"), "sonnet": D("0.3"), "opus": D("0.5")}
    moves = routing_moves(cost, mix)  # fable is not routed: S = 100
    assert moves == {"opus": D(40), "sonnet": D(10)}
    # ratio(sonnet, opus) = 2 / 4; ratio(haiku, sonnet) = 0.10 / 2 (Haiku/Sonnet/Opus 5.5)
    ratios = {"opus": price_ratio(D(2), D(4)), "sonnet": price_ratio(D("0.10"), D(2))}
    assert ratios == {"opus": D("0.5"), "sonnet": D("0.05")}
    assert routing_potential(moves, ratios) == D(40) * D("0.5") + D(10) * D("0.95") == D("29.5")
    other = {"haiku": D("0.5"), "sonnet": D("0.3"), "opus": D("0.2")}
    assert routing_moves(cost, other) == {"opus": D(30), "sonnet": D(0)}


# --- a warehouse built by hand ---------------------------------------------------------------

def _config(features: tuple[FeatureRule, ...], tz: str = "America/Chicago",
            savings: SavingsConfig | None = None) -> Config:
    return Config(path=Path("config.toml"), timezone=tz, storage=StorageConfig(),
                  collection=CollectionConfig(), organizations=(OrganizationConfig("acme"),),
                  features=features, savings=savings or SavingsConfig())


def _usage(conn: duckdb.DuckDBPyConnection, hour: datetime, model: str | None,
           tier: str | None = "standard", window: str | None = "0-200k", key: str | None = "k1",
           u: int = 0, w5: int = 0, w1: int = 0, r: int = 0, o: int = 0,
           org: str = "acme", workspace: str | None = "w1") -> str:
    row_key = f"test|{org}|{hour.isoformat()}|{model}|{tier}|{window}|{key}"
    conn.execute("INSERT INTO usage_hourly VALUES (?, ?, 'analytics', ?, ?, ?, ?, ?, ?, ?, "
                 "?, ?, ?, ?, ?, 0, 1, false, ?)",
                 [row_key, org, hour, hour + timedelta(hours=1), model, workspace, key, tier,
                  window, u, w5, w1, r, o, SIM_NOW])
    return row_key


def _at(hour: int, day: int = 20) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _warehouse(covered_until: datetime) -> duckdb.DuckDBPyConnection:
    """An empty warehouse with key k1 named chat-key, usage collected from 2026-11-19 to
    ``covered_until``."""
    conn = duckdb.connect()
    storage.migrate(conn)
    conn.execute("INSERT INTO api_keys VALUES ('acme', 'k1', 'chat-key', 'active', 'w1', NULL, ?)",
                 [SIM_NOW])
    conn.execute("INSERT INTO sync_state VALUES ('acme', 'usage', ?, ?, NULL, ?)",
                 [_at(0, 19), covered_until, SIM_NOW])
    return conn


@pytest.fixture
def built() -> duckdb.DuckDBPyConnection:
    """One organization, one feature ("chat", key k1), on local day 2026-11-20 (Chicago,
    06:00Z to 06:00Z next day); usage collected up to 2026-11-21T00:00Z."""
    conn = _warehouse(covered_until=_at(0, 21))
    t: dict[str, Any] = dict(u=1_000_000, w5=200_000, w1=100_000, r=2_000_000, o=50_000)
    _usage(conn, _at(10), "claude-opus-5-5", **t)                      # a: standard
    _usage(conn, _at(10), "claude-opus-5-5", tier="batch", **t)        # b: batch
    _usage(conn, _at(16), "claude-opus-5-5", tier="priority", u=500)   # no public price
    _usage(conn, _at(12), "claude-sonnet-5-5", u=100_000, w5=400_000)  # never read: waste
    _usage(conn, _at(14), "claude-sonnet-5-5", w1=100_000)             # read in the next hour
    _usage(conn, _at(15), "claude-sonnet-5-5", r=50_000)
    _usage(conn, _at(22), "claude-haiku-5-5", w5=80_000)               # never read: waste
    _usage(conn, _at(23), "claude-haiku-5-5", w5=10_000)               # next hour not collected
    _usage(conn, _at(5), "claude-sonnet-5-5", u=1_000_000)             # 23:00 on the 19th, local
    _usage(conn, _at(10), "claude-opus-5-5", key="k2", u=1_000_000, org="other")
    facts.rebuild(conn)  # as a window write keeps them: the feature map reads fact_keys
    return conn


CHAT = FeatureRule(name="chat", api_key_names=("chat-*",), batch_eligible=True)


def test_realized_on_a_hand_built_warehouse(built: duckdb.DuckDBPyConnection) -> None:
    rows = realized(Batch(built, _config((CHAT,))), NOV_20, NOV_20, organizations=["acme"])
    by_model = {r.model: r for r in rows}
    assert {(r.date, r.organization, r.feature) for r in rows} == {(NOV_20, "acme", "chat")}
    opus = by_model["claude-opus-5-5"]
    # standard (a) + batch (b): actual 7.2 + 3.6, no cache 14.2 + 7.1, baseline 14.2 + 14.2
    assert (opus.actual_usd, opus.no_cache_usd, opus.baseline_usd) == (D("10.8"), D("21.3"),
                                                                       D("28.4"))
    assert (opus.cache_savings_usd, opus.batch_savings_usd, opus.realized_total_usd) == (
        D("10.5"), D("7.1"), D("17.6"))
    assert opus.unpriced_tokens == 500
    assert opus.unpriced_reasons == ("no public price for service tier priority",)
    assert opus.tokens.input == 2_000_000  # the priced rows only
    sonnet = by_model["claude-sonnet-5-5"]  # the 05:00Z row is on the 19th, local
    # (0.1M x 2 + 0.4M x 2.5) + 0.1M x 4 + 0.05M x 0.10 = 1.2 + 0.4 + 0.005
    assert sonnet.actual_usd == D("1.605")
    assert sonnet.no_cache_usd == D("1.3") == sonnet.baseline_usd  # 0.6M x 2 + 0.05M x 2
    assert sonnet.cache_savings_usd == D("1.3") - D("1.605")
    assert realized(Batch(built, _config((CHAT,))), NOV_20, NOV_20, organizations=["nobody"]) == []
    with pytest.raises(ValueError):
        realized(Batch(built, _config(())), NOV_20, NOV_20 - timedelta(days=1))


def test_waste_hour_by_hour(built: duckdb.DuckDBPyConnection) -> None:
    rows = cache_waste(Batch(built, _config((CHAT,))), NOV_20, NOV_20)
    assert [(r.feature, r.model, r.wasted_5m_tokens, r.wasted_1h_tokens, r.waste_usd)
            for r in rows] == [
        # 22:00Z: no read at 22 nor 23 (the 23:00Z write waits for hour 00:00Z to be collected)
        ("chat", "claude-haiku-5-5", 80_000, 0, D(80_000) * D("0.025") / 1_000_000),
        # 12:00Z: 0.4M x (2.50 - 2); the 14:00Z 1h write was read at 15:00Z
        ("chat", "claude-sonnet-5-5", 400_000, 0, D("0.2")),
    ]
    assert rows[0].wasted_tokens == 80_000


def test_waste_at_the_edges_of_the_period() -> None:
    """Local day 2026-11-20 in Chicago is 06:00Z..06:00Z. Its last hour's write, read in the
    hour after the period, is not waste; a write of the hour after it is another day's; a
    write read by another model of the feature is waste; reads of the key's other tier
    count."""
    conn = _warehouse(covered_until=_at(12, 21))
    _usage(conn, _at(5, 21), "claude-sonnet-5-5", w5=100_000)   # 23:00 local: read at 00:00
    _usage(conn, _at(6, 21), "claude-sonnet-5-5", r=10)
    _usage(conn, _at(6, 21), "claude-opus-5-5", w5=200_000)     # the 21st's, never read
    _usage(conn, _at(6, 20), "claude-sonnet-5-5", w5=300_000)   # 00:00 local, never read ...
    _usage(conn, _at(6, 20), "claude-haiku-5-5", r=5)           # ... by sonnet: waste
    _usage(conn, _at(8, 20), "claude-sonnet-5-5", w1=400_000)   # read by its batch tier
    _usage(conn, _at(9, 20), "claude-sonnet-5-5", tier="batch", r=7)
    _usage(conn, _at(5, 20), "claude-sonnet-5-5", w5=500_000)   # the 19th's, local
    facts.rebuild(conn)
    rows = cache_waste(Batch(conn, _config((CHAT,))), NOV_20, NOV_20)
    assert [(r.date, r.model, r.wasted_5m_tokens, r.wasted_1h_tokens) for r in rows] == [
        (NOV_20, "claude-sonnet-5-5", 300_000, 0)]
    nov_21 = NOV_20 + timedelta(days=1)
    both = cache_waste(Batch(conn, _config((CHAT,))), NOV_20 - timedelta(days=1), nov_21)
    assert [(r.date, r.model, r.wasted_5m_tokens) for r in both] == [
        (NOV_20 - timedelta(days=1), "claude-sonnet-5-5", 500_000),
        (NOV_20, "claude-sonnet-5-5", 300_000), (nov_21, "claude-opus-5-5", 200_000)]


def test_potential_on_a_hand_built_warehouse(built: duckdb.DuckDBPyConnection) -> None:
    rows = {p.lever: p for p in potential(Batch(built, _config((CHAT,))), NOV_20, NOV_20, ["acme"])}
    assert set(rows) == {"batch", "routing"}  # hit ratio 4.05M / 7.3405M: above 50%
    # standard-tier actual: 7.2 (opus) + 1.605 (sonnet) + 0.01 + 0.00125 (haiku), half saved
    batch = rows["batch"]
    assert batch.period_usd == D("8.81625") / 2 == batch.monthly_usd / 30
    assert batch.change == ("move feature chat to the Batch API: about $132.24 a month "
                            "($4.41 in 1 day)")
    routing = rows["routing"]
    s = D("10.8") + D("1.605") + D("0.01125")  # opus, sonnet, haiku actual cost
    assert routing.detail["moved_opus_to_sonnet_usd"] == D("10.8") - D("0.1") * s
    assert routing.detail["moved_sonnet_to_haiku_usd"] == 0
    assert routing.period_usd == (D("10.8") - D("0.1") * s) * D("0.5")
    assert routing.detail["current_mix"]["opus"] == D("10.8") / s
    assert routing.detail["target_mix"] == {"haiku": D("0.70"), "sonnet": D("0.20"),
                                            "opus": D("0.10")}
    assert "70/20/10" in routing.change and "of opus spend to sonnet" in routing.change

    # A stricter cache target shows the caching lever.
    strict = SavingsConfig(cache_hit_target=D("0.9"))
    caching = {p.lever: p for p in potential(Batch(built, _config((CHAT,), savings=strict)), NOV_20,
                                             NOV_20, ["acme"])}["caching"]
    assert caching.detail["hit_ratio"] == D(4_050_000) / D(7_340_500)


def test_the_models_api_line_wins_over_the_id(built: duckdb.DuckDBPyConnection) -> None:
    # The Models API says Sonnet 5.5 belongs to no line: it is reported, not routed.
    built.execute("INSERT INTO models VALUES ('claude-sonnet-5-5', 'Claude Sonnet 5.5', NULL, "
                  "'active', NULL, ?)", [SIM_NOW])
    rows = {p.lever: p for p in potential(Batch(built, _config((CHAT,))), NOV_20, NOV_20, ["acme"])}
    routing = rows["routing"]
    assert routing.detail["not_routed_usd"] == {"unknown": D("1.605")}
    s = D("10.8") + D("0.01125")
    assert routing.period_usd == (D("10.8") - D("0.1") * s) * D("0.5")


def test_ledger_totals(built: duckdb.DuckDBPyConnection) -> None:
    book = ledger(Batch(built, _config((CHAT,))), NOV_20, NOV_20)
    assert book.days == 1
    assert book.totals.realized_total_usd == sum(r.realized_total_usd for r in book.realized)
    assert book.totals.realized_total_usd == (book.totals.cache_savings_usd
                                              + book.totals.batch_savings_usd)
    assert book.totals.waste_usd == D("0.2") + D("0.002")
    assert book.totals.unpriced_tokens == 500
    assert book.totals.potential_period_usd["batch"] == D("4.408125")
    assert {r.organization for r in book.realized} == {"acme", "other"}
    # The Overview's headline: the same realized totals and potential, without the waste.
    told = headline(Batch(built, _config((CHAT,))), NOV_20, NOV_20)
    for field in ("cache_savings_usd", "batch_savings_usd", "realized_total_usd",
                  "potential_period_usd", "potential_monthly_usd", "unpriced_tokens"):
        assert getattr(told.totals, field) == getattr(book.totals, field), field
    assert told.potential == book.potential and told.days == 1


# --- the simulator's organization ------------------------------------------------------------

# List prices per MTok from spendwatch/prices.csv (November 2026), written out here so the
# check does not go through PriceTable: input, 5m write, 1h write, cache read, output.
LIST_PRICES = {
    "claude-opus-5-5": (D(4), D(5), D(8), D("0.20"), D(20)),
    "claude-sonnet-5-5": (D(2), D("2.50"), D(4), D("0.10"), D(10)),
    "claude-haiku-5-5": (D("0.10"), D("0.125"), D("0.20"), D("0.01"), D("0.50")),
    "claude-sonnet-4-6": (D(3), D("3.75"), D(6), D("0.30"), D(15)),
    "claude-haiku-4-5-20251001": (D(1), D("1.25"), D(2), D("0.10"), D(5)),
}
LINES = {"claude-opus-5-5": "opus", "claude-sonnet-5-5": "sonnet", "claude-haiku-5-5": "haiku",
         "claude-sonnet-4-6": "sonnet", "claude-haiku-4-5-20251001": "haiku"}
FEATURES = """
[[features]]
name = "nightly-summaries"
api_key_names = ["nightly-summaries"]
batch_eligible = true

[[features]]
name = "evals"
api_key_names = ["eval-harness"]
batch_eligible = true
"""
SINCE, UNTIL = date(2026, 11, 18), date(2026, 11, 20)  # local days, America/Chicago
CHICAGO = ZoneInfo("America/Chicago")


def _independent(db: Path) -> dict[tuple[date, str, str], dict[str, Any]]:
    """Per (local date, feature, model): tokens and dollars, from raw rows and literal prices."""
    conn = open_warehouse(db)
    try:
        names: dict[Any, str] = dict(conn.execute("SELECT api_key_id, name FROM api_keys")
                                     .fetchall())
        workspaces: dict[Any, str] = dict(conn.execute("SELECT workspace_id, name FROM "
                                                       "workspaces").fetchall())
        rows = conn.execute(
            "SELECT bucket_start, api_key_id, workspace_id, model, service_tier, "
            "uncached_input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, "
            "cache_read_tokens, output_tokens FROM usage_hourly WHERE model IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    out: dict[tuple[date, str, str], dict[str, Any]] = defaultdict(
        lambda: {"actual": D(0), "no_cache": D(0), "baseline": D(0), "standard_actual": D(0),
                 "u": 0, "w5": 0, "w1": 0, "r": 0, "o": 0, "u_x_saving": D(0)})
    for start, key, workspace, model, tier, u, w5, w1, r, o in rows:
        local = start.astimezone(CHICAGO).date()
        if not SINCE <= local <= UNTIL:
            continue
        name = names.get(key)
        feature: str = {"nightly-summaries": "nightly-summaries", "eval-harness": "evals"}.get(
            name or "", name or workspaces[workspace])
        p_in, p_w5, p_w1, p_r, p_out = LIST_PRICES[model]
        factor = D("0.5") if tier == "batch" else D(1)
        baseline = ((u + w5 + w1 + r) * p_in + o * p_out) / 1_000_000
        actual = (u * p_in + w5 * p_w5 + w1 * p_w1 + r * p_r + o * p_out) / 1_000_000 * factor
        acc = out[(local, feature, model)]
        acc["actual"] += actual
        acc["no_cache"] += baseline * factor
        acc["baseline"] += baseline
        if tier == "standard":
            acc["standard_actual"] += actual
        for k, v in (("u", u), ("w5", w5), ("w1", w1), ("r", r), ("o", o)):
            acc[k] += v
        acc["u_x_saving"] += u * (p_in - p_r) * factor
    return out


def _independent_waste(db: Path) -> dict[tuple[date, str, str], tuple[int, int, Decimal]]:
    """Hour by hour from raw rows: writes of a (feature, model) with no read then or next hour."""
    conn = open_warehouse(db)
    try:
        names = dict(conn.execute("SELECT api_key_id, name FROM api_keys").fetchall())
        rows = conn.execute("SELECT bucket_start, api_key_id, model, cache_write_5m_tokens, "
                            "cache_write_1h_tokens, cache_read_tokens FROM usage_hourly "
                            "WHERE model IS NOT NULL AND service_tier = 'standard'").fetchall()
        (covered_until,) = conn.execute("SELECT min(covered_until) FROM sync_state").fetchone()
    finally:
        conn.close()
    hours: dict[tuple[str, str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
    for start, key, model, w5, w1, r in rows:
        feature = {"eval-harness": "evals"}.get(names.get(key) or "", "other")
        acc = hours[(feature, model, start)]
        acc[0] += w5
        acc[1] += w1
        acc[2] += r
    out: dict[tuple[date, str, str], tuple[int, int, Decimal]] = {}
    for (feature, model, start), (w5, w1, r) in hours.items():
        after = start + timedelta(hours=1)
        local = start.astimezone(CHICAGO).date()
        if feature != "evals" or not (w5 or w1) or r or after + timedelta(hours=1) > covered_until:
            continue
        if hours.get((feature, model, after), [0, 0, 0])[2] or not SINCE <= local <= UNTIL:
            continue
        p_in, p_w5, p_w1, _, _ = LIST_PRICES[model]
        old = out.get((local, feature, model), (0, 0, D(0)))
        out[(local, feature, model)] = (old[0] + w5, old[1] + w1, old[2] + (
            w5 * (p_w5 - p_in) + w1 * (p_w1 - p_in)) / 1_000_000)
    return out


def test_the_simulated_organization(org_config) -> None:
    config = load_config(org_config(extra=FEATURES))
    (result,) = collect(config, CollectOptions(since=datetime(2026, 11, 18, tzinfo=UTC),
                                               until=datetime(2026, 11, 22, tzinfo=UTC)),
                        now=SIM_NOW, sleep=lambda s: None)
    assert result.ok, result.error
    with storage.reader(config) as conn:
        book = ledger(Batch(conn, config), SINCE, UNTIL)
    expected = _independent(db_path(config))

    # Realized: every figure, day by day, equals the independent calculation, exactly.
    with storage.reader(config) as conn:
        by_day = realized(Batch(conn, config), SINCE, UNTIL)
    got = {(r.date, r.feature, r.model): r for r in by_day}
    assert set(got) == set(expected) and len(expected) > 30
    assert all(r.organization == "acme" and r.unpriced_tokens == 0 for r in by_day)
    # The ledger's rows are the same per feature and model over the period.
    period: dict[tuple[str, str | None], list[Decimal]] = defaultdict(lambda: [D(0)] * 3)
    for r in by_day:
        sums = period[(r.feature, r.model)]
        for i, value in enumerate((r.actual_usd, r.no_cache_usd, r.baseline_usd)):
            sums[i] += value
    assert {(r.feature, r.model): [r.actual_usd, r.no_cache_usd, r.baseline_usd]
            for r in book.realized} == period
    assert all(r.date is None for r in book.realized)
    for k, exp in expected.items():
        row = got[k]
        assert (row.actual_usd, row.no_cache_usd, row.baseline_usd) == (
            exp["actual"], exp["no_cache"], exp["baseline"]), k
        assert row.cache_savings_usd == exp["no_cache"] - exp["actual"]
        assert row.batch_savings_usd == exp["baseline"] - exp["no_cache"]
        assert row.realized_total_usd == exp["baseline"] - exp["actual"]
    assert book.totals.actual_usd == sum(e["actual"] for e in expected.values())
    assert book.totals.baseline_usd == sum(e["baseline"] for e in expected.values())
    assert book.totals.cache_savings_usd > 0 and book.totals.batch_savings_usd > 0
    nightly_batch = sum(r.batch_savings_usd for r in book.realized
                        if r.feature == "nightly-summaries")
    assert nightly_batch == sum(e["baseline"] / 2 for (_, f, _), e in expected.items()
                                if f == "nightly-summaries") > 0

    def feature_sum(feature: str, field: str) -> Any:
        return sum(e[field] for (_, f, _), e in expected.items() if f == feature)

    levers = {(p.lever, p.feature): p for p in book.potential}
    # Batch: the eval harness runs on the standard tier; nightly-summaries already on batch.
    batch = levers[("batch", "evals")]
    assert batch.period_usd == feature_sum("evals", "standard_actual") / 2 > 0
    assert batch.monthly_usd == batch.period_usd * 10  # 30 / 3 days
    assert batch.change.startswith("move feature evals to the Batch API: about $")
    assert ("batch", "nightly-summaries") not in levers
    assert not any(p.lever == "batch" and p.feature not in ("evals", "nightly-summaries")
                   for p in book.potential)

    # Caching: the eval harness caches poorly (about 5% of its input is read from cache).
    caching = levers[("caching", "evals")]
    total_input = sum(feature_sum("evals", k) for k in ("u", "w5", "w1", "r"))
    ratio = D(feature_sum("evals", "r")) / D(total_input)
    assert caching.detail["hit_ratio"] == ratio < D("0.1")
    extra = min(D("0.5") * total_input - feature_sum("evals", "r"), D(feature_sum("evals", "u")))
    assert caching.detail["extra_reads"] == extra
    assert abs(caching.period_usd - extra * feature_sum("evals", "u_x_saving")
               / (feature_sum("evals", "u") * 1_000_000)) < D("1e-12")
    assert f"cache hit ratio of feature evals from {ratio * 100:.1f}% to 50.0%" in caching.change

    # Routing: the eval harness is heavy on Opus.
    routing = levers[("routing", "evals")]
    by_line: dict[str, Decimal] = defaultdict(Decimal)
    for (_, f, model), e in expected.items():
        if f == "evals":
            by_line[LINES[model]] += e["actual"]
    s = sum(by_line.values(), D(0))
    assert routing.detail["current_mix"]["opus"] == by_line["opus"] / s > D("0.3")
    moved_opus = by_line["opus"] - D("0.1") * s
    moved_sonnet = max(D(0), by_line["sonnet"] - D("0.2") * s)
    assert routing.period_usd == moved_opus * (1 - D(2) / D(4)) + moved_sonnet * (
        1 - D("0.10") / D(2))
    assert routing.detail["price_ratios"] == {"sonnet/opus": D("0.5"), "haiku/sonnet": D("0.05")}

    # Waste: the eval harness's cached Opus prefix breaks now and then (the simulator's cold
    # hours); writes with no read that hour or the next are waste, found here from raw rows.
    waste = _independent_waste(db_path(config))
    assert waste and all(feature == "evals" for _, feature, _ in waste)
    assert {(w.date, w.feature, w.model): (w.wasted_5m_tokens, w.wasted_1h_tokens, w.waste_usd)
            for w in book.waste} == waste
    assert book.totals.waste_usd == sum(usd for _, _, usd in waste.values()) > 0

    # The same figures one lever at a time, and for a single organization.
    with storage.reader(config) as conn:
        assert realized(Batch(conn, config), SINCE, UNTIL, ["acme"]) == by_day
        assert cache_waste(Batch(conn, config), SINCE, UNTIL) == book.waste
        assert potential(Batch(conn, config), SINCE, UNTIL) == book.potential
