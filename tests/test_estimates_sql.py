"""Stored rows are priced in SQL (spendwatch.estimates): it must give, row for row, the
dollars of the Python formula (PriceTable.estimate), and its shares of the price cut must add
up to the price cut's exact estimate."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa

from spendwatch import estimates
from spendwatch.estimates import ESTIMATE_COLUMNS, estimate_row
from spendwatch.pricing import PriceRow, PriceTable, TokenCounts, default_price_rows, price_table

UTC = timezone.utc
MODELS = ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-opus-4-8",
          "claude-haiku-4-5-20251001", "claude-fable-5", "claude-unknown-9", None)
TIERS = ("standard", "batch", "priority", None)
WINDOWS = ("0-200k", "200k-1M", None)
GEOS = ("global", "us", None)
SPEEDS = ("standard", "fast", None)
# Both sides of Sonnet 5.5's cache read cut (2026-10-07) and of a config override's day,
# and a bucket late in a UTC day (the UTC day, not the host's, decides).
HOURS = (datetime(2026, 10, 6, 23, tzinfo=UTC), datetime(2026, 10, 7, 0, tzinfo=UTC),
         datetime(2026, 11, 30, 23, tzinfo=UTC))
TOKENS = (TokenCounts(123_457, 2_001, 999, 3_456_789, 77_777), TokenCounts(0, 0, 0, 0, 0),
          TokenCounts(150_000, 0, 0, 1, 3))

_TYPES = {"row_key": pa.string(), "organization": pa.string(), "cut": pa.string(),
          "bucket_start": pa.timestamp("us", tz="UTC"), "model": pa.string(),
          "service_tier": pa.string(), "context_window": pa.string(),
          "inference_geo": pa.string(), "speed": pa.string(),
          "uncached_input_tokens": pa.int64(), "cache_write_5m_tokens": pa.int64(),
          "cache_write_1h_tokens": pa.int64(), "cache_read_tokens": pa.int64(),
          "output_tokens": pa.int64(), "web_search_requests": pa.int64()}


def _table(rows: list[dict]) -> pa.Table:
    return pa.table({c: pa.array([r[c] for r in rows], t) for c, t in _TYPES.items()})


def _grid() -> list[dict]:
    rows = []
    for n, (model, tier, window, geo, speed, hour, tokens, searches) in enumerate(
            itertools.product(MODELS, TIERS, WINDOWS, GEOS, SPEEDS, HOURS, TOKENS, (0, 7))):
        rows.append({"row_key": f"r{n}", "organization": "org", "cut": "price",
                     "bucket_start": hour, "model": model, "service_tier": tier,
                     "context_window": window, "inference_geo": geo, "speed": speed,
                     "uncached_input_tokens": tokens.input,
                     "cache_write_5m_tokens": tokens.cache_write_5m,
                     "cache_write_1h_tokens": tokens.cache_write_1h,
                     "cache_read_tokens": tokens.cache_read, "output_tokens": tokens.output,
                     "web_search_requests": searches})
    return rows


def test_sql_pricing_equals_the_python_formula_row_for_row() -> None:
    # A config override from a day of its own, on a model and on web search, so the
    # relation's spans of days are tested where prices change.
    table = price_table([
        PriceRow("claude-opus-5-5", "input", Decimal("6.25"), "per_mtok", date(2026, 11, 30)),
        PriceRow("*", "web_search", Decimal("0.012"), "per_request", date(2026, 10, 7)),
        # A model's own search price, from a day of its own: rows that find no token price
        # (zero tokens on the priority tier, say) still pay it, not the '*' one.
        PriceRow("claude-opus-4-8", "web_search", Decimal("0.02"), "per_request",
                 date(2026, 11, 1))])
    rows = _grid()
    conn = duckdb.connect()
    conn.register("grid", _table(rows))
    estimates.register_prices(conn, table)
    sql = estimates.priced_sql("SELECT * FROM grid", ("row_key",), "u.context_window",
                               "u.inference_geo", "u.speed")
    got = {r[0]: (list(r[1:7]), r[7]) for r in conn.execute(sql).fetchall()}
    assert len(got) == len(rows)
    mismatches = []
    priced = unpriced = 0
    for row in rows:
        want = estimate_row(table, row["model"], row["bucket_start"], row["service_tier"],
                            row["context_window"],
                            TokenCounts(row["uncached_input_tokens"],
                                        row["cache_write_5m_tokens"],
                                        row["cache_write_1h_tokens"], row["cache_read_tokens"],
                                        row["output_tokens"]),
                            row["web_search_requests"], inference_geo=row["inference_geo"],
                            speed=row["speed"])
        if got[row["row_key"]] != want:
            mismatches.append((row, got[row["row_key"]], want))
        if want[1] is None:
            priced += 1
        else:
            unpriced += 1
    assert not mismatches, mismatches[:3]
    assert priced > 1000 and unpriced > 1000  # the grid holds both kinds


def _warehouse(price_rows: list[dict], key_rows: list[dict]) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse of the tables the estimates read and write: the price cut's
    rows in usage_cuts, the key cut's in usage_hourly, both estimate tables empty."""
    conn = duckdb.connect()
    conn.register("price_in", _table(price_rows))
    conn.register("key_in", _table(key_rows))
    conn.execute("CREATE TABLE usage_cuts AS SELECT * FROM price_in")
    conn.execute("CREATE TABLE usage_hourly AS SELECT * FROM key_in")
    conn.execute("CREATE TABLE usage_estimates (row_key VARCHAR, "
                 + ", ".join(f"{c} DECIMAL(38, 12)" for c in ESTIMATE_COLUMNS)
                 + ", unpriced_reason VARCHAR, organization VARCHAR, bucket_start TIMESTAMPTZ)")
    conn.execute("CREATE TABLE cut_estimates AS SELECT * FROM usage_estimates")
    return conn


def _hour(conn: duckdb.DuckDBPyConnection, name: str) -> dict[str, Decimal]:
    return dict(conn.execute(
        f"SELECT row_key, {' + '.join(ESTIMATE_COLUMNS)} FROM {name}").fetchall())


def test_key_rows_share_the_price_cuts_exact_estimate_of_their_hour() -> None:
    """Opus 5.5 used half US-only and in fast mode: the key cut (no geo, no speed) must still
    add up, per hour, model, tier and window, to the price cut's exact dollars."""
    hour = datetime(2026, 11, 20, 15, tzinfo=UTC)
    price_rows, key_rows = [], []
    for n, (geo, speed) in enumerate(itertools.product(("global", "us"), ("standard", "fast"))):
        price_rows.append({"row_key": f"p{n}", "organization": "org", "cut": "price",
                           "bucket_start": hour, "model": "claude-opus-5-5",
                           "service_tier": "standard", "context_window": "0-200k",
                           "inference_geo": geo, "speed": speed,
                           "uncached_input_tokens": 1_000_003 * (n + 1),
                           "cache_write_5m_tokens": 7_777, "cache_write_1h_tokens": 0,
                           "cache_read_tokens": 3_333_331, "output_tokens": 99_991 * (n + 1),
                           "web_search_requests": 0})
    totals = {c: sum(r[c] for r in price_rows) for c in _TYPES if c.endswith("_tokens")}
    first = {c: v * 7 // 10 for c, v in totals.items()}  # two keys, a 70/30 split
    for n, tokens in enumerate((first, {c: totals[c] - first[c] for c in totals})):
        key_rows.append({"row_key": f"k{n}", "organization": "org", "cut": "key",
                         "bucket_start": hour, "model": "claude-opus-5-5",
                         "service_tier": "standard", "context_window": "0-200k",
                         "inference_geo": None, "speed": None, **tokens,
                         "web_search_requests": 0})
    assert {c: sum(r[c] for r in key_rows) for c in totals} == totals
    conn = _warehouse(price_rows, key_rows)
    table = price_table()
    estimates.write_estimates(conn, table, "organization = ?", ["org"])
    estimates.write_cut_estimates(conn, table, "organization = ?", ["org"])
    exact = sum(_hour(conn, "cut_estimates").values())
    shared = _hour(conn, "usage_estimates")
    assert len(shared) == 2
    # Each of the two rows is rounded to 10^-12 once per token column.
    assert abs(sum(shared.values()) - exact) <= Decimal("1E-11"), (sum(shared.values()), exact)
    plain = sum(estimate_row(table, r["model"], hour, "standard", "0-200k",
                             TokenCounts(*(r[c] for c in list(totals))), 0)[0][i]
                for r in key_rows for i in range(5))
    assert exact > plain * Decimal("1.2")  # fast mode and US-only are not lost
    assert shared["k0"] / sum(shared.values()) > Decimal("0.69")


def test_searches_of_the_price_cut_are_not_shared_nor_void_a_group() -> None:
    """A price-cut row's web searches on a day without a search price: its own estimate is
    unpriced, but the key rows of its hour share only token dollars and stay priced."""
    hour = datetime(2026, 11, 20, 15, tzinfo=UTC)
    base = {"organization": "org", "bucket_start": hour, "model": "claude-opus-4-5",
            "service_tier": "standard", "context_window": "0-200k",
            "uncached_input_tokens": 10, "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0, "cache_read_tokens": 0, "output_tokens": 5}
    # The shipped table without its web search price, which starts only in December here.
    table = PriceTable([*(r for r in default_price_rows()
                          if (r.model, r.component) != ("*", "web_search")),
                        PriceRow("*", "web_search", Decimal("0.01"), "per_request",
                                 date(2026, 12, 1))])
    conn = _warehouse([{**base, "row_key": "p", "cut": "price", "inference_geo": "global",
                        "speed": "standard", "web_search_requests": 3}],
                      [{**base, "row_key": "k", "cut": "key", "inference_geo": None,
                        "speed": None, "web_search_requests": 0}])
    estimates.write_estimates(conn, table, "organization = ?", ["org"])
    estimates.write_cut_estimates(conn, table, "organization = ?", ["org"])
    (key,) = conn.execute("SELECT * FROM usage_estimates").fetchall()
    (price,) = conn.execute("SELECT * FROM cut_estimates").fetchall()
    assert price[7] == "no price for web search"
    assert key[7] is None and sum(key[1:6]) == Decimal("0.000175")  # 10 x $5 + 5 x $25 per MTok


def test_an_unpriced_price_cut_row_leaves_its_group_unpriced_not_zero() -> None:
    hour = datetime(2026, 11, 20, 15, tzinfo=UTC)
    base = {"organization": "org", "bucket_start": hour, "model": "claude-opus-4-5",
            "service_tier": "batch", "context_window": "0-200k", "inference_geo": "global",
            "uncached_input_tokens": 10, "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0, "cache_read_tokens": 0, "output_tokens": 5,
            "web_search_requests": 0}
    conn = _warehouse([{**base, "row_key": "p", "cut": "price",
                        "speed": "fast"}],  # no fast mode on the batch tier
                      [{**base, "row_key": "k", "cut": "key", "inference_geo": None,
                        "speed": None}])
    estimates.write_estimates(conn, price_table(), "organization = ?", ["org"])
    (row,) = conn.execute("SELECT * FROM usage_estimates").fetchall()
    assert row[1:7] == (None,) * 6
    assert row[7] == "no fast-mode price for claude-opus-4-5"
