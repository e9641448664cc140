"""The stored facts are exactly what the raw rows say, after every kind of write.

Every spend query reads ``facts`` (spendwatch.facts), kept by each window write for the hours
it replaced. The views ``spend_facts`` and ``cut_facts`` compute the same facts from the raw
rows over all history; here both are compared, row for row (EXCEPT ALL both ways, so a
duplicated or a missing row counts), after a first collection, a re-read that drops a row the
API no longer reports, late data (a revision), a reprice and a backfill, for an analytics
organization with every cut and a legacy one (whose daily cost is split across keys).
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from collectors.sync import CollectOptions, collect, reprice_if_needed
from conftest import ADMIN_KEY, SIM_NOW, Simulator, write_config
from spendwatch import facts, storage
from spendwatch.config import load_config
from spendwatch.cuts import CUTS
from spendwatch.warehouse.batch import read
from spendwatch.warehouse.spend import spend
from warehouse import folded, query

_KEY_COLUMNS = ", ".join(c for c, _ in facts.COLUMNS if c not in (
    "cut", "inference_geo", "speed", "product", "actor_key", "actor_type", "rbac_group_id",
    "user_profile_id"))
_ALL_COLUMNS = ", ".join(c for c, _ in facts.COLUMNS)
PRICE_CHANGE = ('[[pricing.prices]]\nmodel = "claude-opus-5-5"\ncomponent = "output"\n'
                'price_usd = "40"\nunit = "per_mtok"\neffective_from = "2026-11-01"\n')


def _differences(db: Path) -> dict[str, int]:
    """Rows in one and not the other (with multiplicity), per side; all 0 when they agree."""
    pairs = {
        "key: stored, not computed": f"SELECT {_KEY_COLUMNS} FROM facts WHERE cut = 'key' "
                                     f"EXCEPT ALL SELECT {_KEY_COLUMNS} FROM spend_facts",
        "key: computed, not stored": f"SELECT {_KEY_COLUMNS} FROM spend_facts EXCEPT ALL "
                                     f"SELECT {_KEY_COLUMNS} FROM facts WHERE cut = 'key'",
        "cuts: stored, not computed": f"SELECT {_ALL_COLUMNS} FROM facts WHERE cut <> 'key' "
                                      f"EXCEPT ALL SELECT {_ALL_COLUMNS} FROM cut_facts",
        "cuts: computed, not stored": f"SELECT {_ALL_COLUMNS} FROM cut_facts EXCEPT ALL "
                                      f"SELECT {_ALL_COLUMNS} FROM facts WHERE cut <> 'key'",
    }
    return {name: query(db, f"SELECT count(*) FROM ({sql})")[0][0] for name, sql in pairs.items()}


def _agree(db: Path) -> None:
    assert _differences(db) == {name: 0 for name in _differences(db)}
    assert query(db, "SELECT count(*) FROM facts")[0][0] > 1000
    _keys_agree(db)
    _daily_agrees(db)


def _orgs(sim: Simulator) -> list[dict]:
    return [{"name": "acme", "source": "analytics", "base_url": sim.url,
             "cuts": [c.name for c in CUTS]},
            {"name": "old", "source": "legacy", "base_url": sim.url, "cuts": ["price"]}]


def test_the_stored_facts_equal_the_raw_rows_after_every_kind_of_write(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    config = write_config(isolated, _orgs(simulator))
    db = isolated / "data" / "spendwatch.duckdb"
    since = SIM_NOW - timedelta(days=1)

    # A first collection, six hours before the simulator's now: the last hours provisional.
    results = collect(load_config(config), CollectOptions(since=since),
                      now=SIM_NOW - timedelta(hours=6))
    assert all(r.ok for r in results), [r.error for r in results]
    _agree(db)

    # A row the API no longer reports, stored by an earlier read of a provisional hour: the
    # re-read of its window drops it, from the raw rows and the facts alike.
    hour = SIM_NOW - timedelta(hours=8)
    loaded = load_config(config)
    with storage.writer(loaded) as conn, storage.transaction(conn):
        conn.execute("INSERT INTO usage_hourly SELECT row_key || '-gone', organization, "
                     "source, bucket_start, bucket_end, model, workspace_id, 'apikey_gone', "
                     "service_tier, context_window, uncached_input_tokens, "
                     "cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, "
                     "output_tokens, web_search_requests, requests, provisional, fetched_at "
                     "FROM usage_hourly WHERE organization = 'acme' AND bucket_start = ? "
                     "LIMIT 1", [hour])
        conn.execute("INSERT INTO usage_estimates SELECT u.row_key, e.* EXCLUDE (row_key) "
                     "FROM usage_hourly u JOIN usage_estimates e "
                     "ON e.row_key || '-gone' = u.row_key")
        facts.refresh(conn, "acme", hour, hour + timedelta(hours=1), ["key"])
    assert query(db, "SELECT count(*) FROM facts WHERE api_key_id = 'apikey_gone'")[0][0] > 0
    _agree(db)
    results = collect(load_config(config), CollectOptions(since=since), now=SIM_NOW)
    assert all(r.ok for r in results), [r.error for r in results]
    assert query(db, "SELECT count(*) FROM facts WHERE api_key_id = 'apikey_gone'")[0][0] == 0
    _agree(db)

    # Late data: the last six hours grow by 7%; the next run re-reads them.
    before = query(db, "SELECT sum(cost_usd) FROM facts WHERE cut = 'key'")[0][0]
    requests.post(f"{simulator.url}/_sim/revise", json={"hours": 6}, timeout=10).raise_for_status()
    results = collect(load_config(config), CollectOptions(since=since),
                      now=SIM_NOW + timedelta(minutes=30))
    assert all(r.ok for r in results), [r.error for r in results]
    assert query(db, "SELECT sum(cost_usd) FROM facts WHERE cut = 'key'")[0][0] > before
    _agree(db)

    # A price change reprices every estimate, every cut.
    estimated = "SELECT sum(cost_usd) FROM facts WHERE cost_basis = 'estimated' AND model = " \
                "'claude-opus-5-5'"
    was = query(db, estimated)[0][0] or Decimal(0)
    repriced = write_config(isolated, _orgs(simulator), extra=PRICE_CHANGE)
    # As a run starts (collect's first step): the stored rows repriced, no window re-read.
    assert reprice_if_needed(load_config(repriced))
    assert (query(db, estimated)[0][0] or Decimal(0)) != was
    _agree(db)

    # A backfill of earlier days.
    results = collect(load_config(repriced), CollectOptions(since=since - timedelta(days=2),
                                                            until=since),
                      now=SIM_NOW + timedelta(minutes=30))
    assert all(r.ok for r in results), [r.error for r in results]
    assert query(db, "SELECT min(bucket_start) FROM facts")[0][0] < since
    _agree(db)
    assert {cut for (cut,) in query(db, "SELECT DISTINCT cut FROM facts")} >= {
        "key", "price", "people", "products"}
    assert query(db, "SELECT count(*) FROM facts WHERE cost_basis = 'allocated'")[0][0] > 0

    # A spend query reads the whole UTC days inside its range from the daily sums (an hour's
    # billed cost and its tokens one row there): the same as its days read hour by hour, on
    # the key cut and on the cuts by product and by person.
    loaded = load_config(repriced)
    first, last = (since - timedelta(days=3)).date(), SIM_NOW.date()
    for by in (("model", "api_key", "cache_status"), ("product", "model"), ("person",)):
        whole = read(loaded, spend, first, last, by)
        days = read(loaded, spend, first, last, ("date", *by))
        assert folded(whole, by) == folded(days, by) != {}
        # In the documented order: cost (highest first), then the labels.
        assert whole == sorted(whole, key=lambda r: (-r["cost_usd"], tuple(map(str, (
            r[d] for d in by)))))
        assert days == sorted(days, key=lambda r: (r["date"], -r["cost_usd"], tuple(map(
            str, (r[d] for d in by)))))
    # Whole UTC days only (no edge hours): by model over both organizations, the legacy one's
    # usage reporting no request count, so no model's requests are a part of them.
    start = datetime.combine(since.date() - timedelta(days=1), time(), timezone.utc)
    end = start + timedelta(days=2)
    whole = read(loaded, spend, by=("model",), start=start, end=end)
    hours = read(loaded, spend, by=("period", "model"), grain="hour", start=start, end=end)
    assert folded(whole, ("model",)) == folded(hours, ("model",)) != {}
    assert any(r["requests"] is None for r in whole)


def _daily_agrees(db: Path) -> None:
    """facts_daily is the hourly facts summed per UTC day, row for row, to the cent: no day
    missing, none left over after a re-read dropped a row, a reprice or a backfill."""
    keys = ", ".join("timezone('UTC', timezone('UTC', bucket_start)::DATE::TIMESTAMP)"
                     if c == "bucket_start" else c for c in facts.DAILY_KEYS)
    summed = (f"SELECT {keys}, " + ", ".join(f"sum({c})" for c in facts.DAILY_SUMS)
              + f", sum({facts.REQUESTS_UNKNOWN_SQL}) FROM facts WHERE bucket_width = '1h' "
              "GROUP BY ALL")
    stored = "SELECT * FROM facts_daily"
    for one, other in ((summed, stored), (stored, summed)):
        assert query(db, f"SELECT count(*) FROM ({one} EXCEPT ALL {other})")[0][0] == 0
    assert query(db, "SELECT count(*) FROM facts_daily")[0][0] > 100
    assert query(db, "SELECT sum(cost_usd) FROM facts_daily WHERE cut = 'key'")[0][0] == query(
        db, "SELECT sum(cost_usd) FROM facts WHERE cut = 'key' AND bucket_width = '1h'")[0][0]


def _keys_agree(db: Path) -> None:
    """fact_keys lists every identity of the stored facts (it may keep ones no longer spent)."""
    missing = query(db, "SELECT count(*) FROM (SELECT DISTINCT " + ", ".join(facts.KEY_COLUMNS)
                    + " FROM facts EXCEPT SELECT * FROM fact_keys)")[0][0]
    assert missing == 0


def test_daily_sums_an_older_spendwatch_left_behind_are_not_read_and_are_summed_again(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An older spendwatch (before the daily sums) writing a warehouse this one migrated, as a
    worker on a DuckLake shared with upgraded hosts would: it rewrites raw rows and facts and
    moves sync_state, but leaves facts_daily as it was. Spend must not read those stale sums,
    and this version's next write sums the organization's days again."""
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    config = load_config(write_config(isolated, [{"name": "acme", "source": "analytics",
                                                   "base_url": simulator.url}]))
    db = isolated / "data" / "spendwatch.duckdb"
    since = SIM_NOW - timedelta(days=3)
    assert all(r.ok for r in collect(config, CollectOptions(since=since), now=SIM_NOW))
    first, last = since.date(), SIM_NOW.date()
    by = ("model", "cache_status")
    before = read(config, spend, first, last, by)

    # The older writer: a revised day's cost (raw rows and facts in step), sync_state moved,
    # the daily sums untouched (as its code has none).
    day = datetime.combine((SIM_NOW - timedelta(days=1)).date(), time(), timezone.utc)
    with storage.writer(config) as conn, storage.transaction(conn):
        conn.execute("CREATE TEMP TABLE kept_daily AS SELECT * FROM facts_daily")
        conn.execute("UPDATE cost_buckets SET amount_usd = amount_usd * 2 WHERE "
                     "bucket_start >= ? AND bucket_start < ?", [day, day + timedelta(days=1)])
        facts.refresh(conn, "acme", day, day + timedelta(days=1), ["key"])
        conn.execute("DELETE FROM facts_daily")
        conn.execute("INSERT INTO facts_daily SELECT * FROM kept_daily")
        conn.execute("UPDATE sync_state SET updated_at = updated_at + INTERVAL 1 MINUTE "
                     "WHERE organization = 'acme' AND stream = 'cost'")
        assert facts.stale_organizations(conn) == {"acme"}
    _agree_but_daily(db)

    # Spend reads the facts hour by hour: the revised day counts, the same as by date.
    whole = read(config, spend, first, last, by)
    days = read(config, spend, first, last, ("date", *by))
    assert folded(whole, by) == folded(days, by)
    assert sum(r["cost_usd"] for r in whole) > sum(r["cost_usd"] for r in before)

    # This version's next write of the organization sums its days again, and says so.
    with caplog.at_level(logging.WARNING, logger="collectors.sync"):
        assert all(r.ok for r in collect(config, CollectOptions(), now=SIM_NOW))
    assert "daily sums were summed again" in caplog.text
    _daily_agrees(db)
    with storage.reader(config) as conn:
        assert facts.stale_organizations(conn) == set()
    # (The run re-read its recent hours from the API, so their doubled cost is gone.)
    assert folded(read(config, spend, first, last, by), by) == folded(
        read(config, spend, first, last, ("date", *by)), by)


def _agree_but_daily(db: Path) -> None:
    assert _differences(db) == {name: 0 for name in _differences(db)}
    with pytest.raises(AssertionError):
        _daily_agrees(db)
