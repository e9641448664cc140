"""Collecting from the simulator, in a real process, through the real SDK and requests."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collectors.sync import CollectOptions, collect
from conftest import ADMIN_KEY, SIM_NOW, Simulator, write_config
from spendwatch.warehouse.batch import Batch
from spendwatch.config import load_config
from spendwatch.timeutil import floor_day
from warehouse import db_path, open_warehouse, query, stored_bytes, totals, truth_totals

UTC = timezone.utc
DAY = timedelta(days=1)


def day(d: int, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, d, tzinfo=UTC)


def run(config_path: Path, since: datetime | None = None, until: datetime | None = None,
        refresh: bool = False, now: datetime = SIM_NOW):
    config = load_config(config_path)
    return config, collect(config, CollectOptions(since=since, until=until, refresh=refresh),
                           now=now, sleep=lambda s: None)


def api_requests(sim: Simulator, path: str) -> list[dict]:
    return [r for r in sim.requests_served() if r["path"] == path]


USAGE = "/v1/organizations/analytics/usage"
COST = "/v1/organizations/analytics/cost"


def test_it_follows_pages_and_stores_exact_totals(org_config, simulator: Simulator) -> None:
    config, (result,) = run(org_config(collection="page_limit = 7"), day(20), day(21))
    assert result.ok, result.error
    usage_pages = api_requests(simulator, USAGE)
    assert len(usage_pages) > 3
    assert sum(1 for r in usage_pages if r["query"].get("page")) == len(usage_pages) - 1
    assert totals(db_path(config), day(20), day(21)) == truth_totals(
        simulator.truth(day(20), day(21)))


def test_running_the_same_window_twice_leaves_the_same_rows(org_config,
                                                            simulator: Simulator) -> None:
    path = org_config()
    config, _ = run(path, day(18), day(21))
    snapshot = "SELECT * EXCLUDE (fetched_at) FROM {} ORDER BY row_key"
    first = (query(db_path(config), snapshot.format("usage_hourly")),
             query(db_path(config), snapshot.format("cost_buckets")))
    run(path, day(18), day(21), refresh=True)
    run(path, day(19), day(22), refresh=True)  # overlapping
    again = (query(db_path(config), snapshot.format("usage_hourly")),
             query(db_path(config), snapshot.format("cost_buckets")))
    assert len(first[0]) > 100 and len(first[1]) > 100
    assert [r for r in again[0] if r[3] < day(21)] == first[0]
    assert [r for r in again[1] if r[3] < day(21)] == first[1]
    assert totals(db_path(config), day(18), day(22)) == truth_totals(
        simulator.truth(day(18), day(22)))


def test_late_revisions_of_recent_buckets_replace_the_old_figures(org_config,
                                                                 simulator: Simulator) -> None:
    path = org_config(collection="initial_backfill_days = 2\nusage_lookback_hours = 12")
    config, _ = run(path)
    before = totals(db_path(config), SIM_NOW - DAY, SIM_NOW)
    simulator.control("POST", "/_sim/revise", json={"hours": 6})
    run(path)
    after = totals(db_path(config), SIM_NOW - DAY, SIM_NOW)
    assert after != before
    assert after == truth_totals(simulator.truth(SIM_NOW - DAY, SIM_NOW))
    flags = query(db_path(config), "SELECT bucket_end > ?, bool_and(provisional), "
                  "bool_or(provisional) FROM usage_hourly GROUP BY 1 ORDER BY 1",
                  SIM_NOW - timedelta(hours=12))
    assert flags == [(False, False, False), (True, True, True)]


def test_an_interrupted_backfill_keeps_whole_windows_and_resumes(org_config,
                                                                 simulator: Simulator) -> None:
    path = org_config()
    simulator.fault(path=USAGE, after=4, count=1000, status=500, kind="error")
    config, (result,) = run(path, since=day(10))
    assert not result.ok and "500" in (result.error or "")
    (covered,) = query(db_path(config), "SELECT covered_from, covered_until FROM "
                       "sync_state WHERE stream = 'usage'")
    assert covered == (day(10), day(14))
    for d in range(10, 14):  # every stored day is whole
        assert totals(db_path(config), day(d), day(d + 1))["tokens"] == truth_totals(
            simulator.truth(day(d), day(d + 1)))["tokens"]
    assert query(db_path(config), "SELECT count(*) FROM usage_hourly WHERE bucket_start "
                 ">= ?", day(14)) == [(0,)]

    simulator.control("DELETE", "/_sim/faults")
    simulator.control("DELETE", "/_sim/requests")
    _, (result,) = run(path, since=day(10))
    assert result.ok, result.error
    starts = {r["query"]["starting_at"][0] for r in api_requests(simulator, USAGE)}
    assert min(starts) == "2026-11-14T00:00:00Z", "resumed where it stopped, not from the start"
    assert totals(db_path(config), day(10), SIM_NOW) == truth_totals(
        simulator.truth(day(10), SIM_NOW))


def test_a_backfill_longer_than_a_write_batch_lands_every_window_once(
        org_config, simulator: Simulator) -> None:
    """Fetched windows are written in batches (one writer, one checkpoint each): a backfill of
    more windows than a batch stores them all, counts each once, and matches the truth."""
    from collectors.sync import BATCH_WINDOWS
    config, (result,) = run(org_config(), since=day(1))
    assert result.ok, result.error
    first_pages = [r for r in api_requests(simulator, USAGE) + api_requests(simulator, COST)
                   if not r["query"].get("page")]  # one per window
    assert result.windows == len(first_pages) > 2 * BATCH_WINDOWS
    assert query(db_path(config), "SELECT count(*) FROM usage_hourly") == [(result.usage_rows,)]
    assert query(db_path(config), "SELECT count(*) FROM cost_buckets") == [(result.cost_rows,)]
    assert query(db_path(config), "SELECT stream, covered_from FROM sync_state ORDER BY 1") == [
        ("cost", day(1)), ("usage", day(1))]
    assert totals(db_path(config), day(1), SIM_NOW) == truth_totals(
        simulator.truth(day(1), SIM_NOW))


def _fetched(config, streams_days):
    """Windows fetched from the simulator by the collector's own client, as a run holds them
    before writing (collectors.sync.Fetched), for (stream, first day, last day) each a day."""
    from collectors.sync import Fetched, OrganizationSync, Window
    from spendwatch.retry import RetryPolicy

    sync = OrganizationSync(config, config.organizations[0], SIM_NOW, RetryPolicy())
    out = []
    for stream, days in streams_days:
        for d in days:
            window = Window(stream, day(d), day(d + 1), "analytics")
            people: dict = {}
            rows, refreshed = sync.fetch(window, people)
            out.append(Fetched(window, rows, refreshed, SIM_NOW - timedelta(hours=48), people))
    return out


def test_a_batch_writes_adjacent_windows_as_one_and_stops_between_transactions(
        org_config, simulator: Simulator) -> None:
    """A batch's adjacent windows of one stream are one transaction (a backfill's days, in
    either direction); a stop asked while a batch is written ends it at the next transaction
    (SIGTERM gives a round seconds: collectors.scheduler's grace, which sixteen windows'
    transactions on a loaded DuckLake outlast). What is left is fetched again next run."""
    import threading

    from collectors.sync import write_windows
    from spendwatch.pricing import price_table

    config = load_config(org_config())
    # usage 20, 21 then 19 (downwards: newest first) are one range; cost 20 is another.
    fetched = _fetched(config, [("usage", [20, 21, 19]), ("cost", [20])])
    assert all(f.rows for f in fetched)
    stop = threading.Event()
    written: list[tuple[str, datetime]] = []

    def on_written(item) -> None:
        written.append((item.window.stream, item.window.start))
        stop.set()  # as the SIGTERM handler does, while the batch is being written

    count = write_windows(config, "acme", fetched, SIM_NOW, price_table(config.prices),
                          on_written, stop=stop)
    assert count == 3 and written == [("usage", day(20)), ("usage", day(21)), ("usage", day(19))]
    assert query(db_path(config), "SELECT stream, covered_from, covered_until FROM "
                 "sync_state") == [("usage", day(19), day(22))]
    assert query(db_path(config), "SELECT count(*) FROM cost_buckets") == [(0,)]
    assert totals(db_path(config), day(19), day(22))["tokens"] == truth_totals(
        simulator.truth(day(19), day(22)))["tokens"]

    # Without a stop the rest is written, and the same windows again leave the same rows.
    before = query(db_path(config), "SELECT * EXCLUDE (fetched_at) FROM usage_hourly "
                   "ORDER BY row_key")
    assert write_windows(config, "acme", fetched, SIM_NOW, price_table(config.prices)) == 4
    assert query(db_path(config), "SELECT * EXCLUDE (fetched_at) FROM usage_hourly "
                 "ORDER BY row_key") == before
    assert totals(db_path(config), day(20), day(21)) == truth_totals(
        simulator.truth(day(20), day(21)))


@pytest.mark.file_only("a conflict with another connection's open transaction: a DuckLake "
                       "finds conflicts at commit, against committed snapshots only")
def test_a_stop_does_not_replay_a_transaction_that_conflicts_with_another_writer(
        org_config, simulator: Simulator) -> None:
    """A conflicting transaction is replayed (storage.retry_conflicts) up to eight times, over
    seconds; once a stop is asked it is not: the batch ends, nothing of that transaction is
    stored, and the windows are fetched again by the next run."""
    import threading

    from collectors.sync import write_windows
    from spendwatch import storage
    from spendwatch.errors import ConflictingWriters
    from spendwatch.pricing import price_table

    config = load_config(org_config())
    fetched = _fetched(config, [("usage", [20])])
    prices = price_table(config.prices)
    assert write_windows(config, "acme", fetched, SIM_NOW, prices) == 1
    with storage.writer(config) as holder:  # another writer, its delete not committed yet
        holder.execute("BEGIN TRANSACTION")
        holder.execute("DELETE FROM usage_hourly WHERE bucket_start >= ?", [day(20)])
        with pytest.raises(ConflictingWriters, match="conflicted with another writer"):
            write_windows(config, "acme", fetched, SIM_NOW, prices)  # replayed, then refused
        stop = threading.Event()
        threading.Timer(0.05, stop.set).start()  # SIGTERM while the write is being replayed
        assert write_windows(config, "acme", fetched, SIM_NOW, prices, stop=stop) == 0
        holder.execute("ROLLBACK")
    assert totals(db_path(config), day(20), day(21))["tokens"] == truth_totals(
        simulator.truth(day(20), day(21)))["tokens"]


def test_a_window_with_a_row_outside_it_is_not_written_and_the_ones_before_it_are(
        org_config, simulator: Simulator) -> None:
    """Adjacent windows are written as one, but each is checked against its own range: day
    21's window answered with day 20's rows (inside the pair's range, outside its own) is
    refused whole, day 20 before it is stored, and nothing after it is written."""
    from dataclasses import replace as with_

    from collectors.sync import write_windows
    from spendwatch.errors import MalformedResponse
    from spendwatch.pricing import price_table

    config = load_config(org_config())
    first, second, third = _fetched(config, [("usage", [20, 21, 22])])
    with pytest.raises(MalformedResponse, match="for 2026-11-21T00:00:00Z..2026-11-22"):
        write_windows(config, "acme", [first, with_(second, rows=first.rows), third], SIM_NOW,
                      price_table(config.prices))
    assert query(db_path(config), "SELECT stream, covered_from, covered_until FROM "
                 "sync_state") == [("usage", day(20), day(21))]
    assert query(db_path(config), "SELECT count(*) FROM usage_hourly WHERE bucket_start "
                 ">= ?", day(21)) == [(0,)]
    assert totals(db_path(config), day(20), day(21))["tokens"] == truth_totals(
        simulator.truth(day(20), day(21)))["tokens"]


def test_it_retries_after_429_and_succeeds(org_config, simulator: Simulator) -> None:
    simulator.fault(path=USAGE, count=1, status=429, retry_after="1", kind="error")
    config, (result,) = run(org_config(), day(22), day(23))
    assert result.ok, result.error
    statuses = [r["status"] for r in api_requests(simulator, USAGE)]
    assert statuses[:2] == [429, 200]
    assert totals(db_path(config), day(22), day(23)) == truth_totals(
        simulator.truth(day(22), day(23)))


def test_a_long_retry_after_is_capped(org_config, simulator: Simulator,
                                      caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    simulator.fault(path=COST, count=1, status=429, retry_after="3600", kind="error")
    config = load_config(org_config())
    with caplog.at_level(logging.INFO):
        (result,) = collect(config, CollectOptions(since=day(22), until=day(23)), now=SIM_NOW,
                            sleep=slept.append)
    assert result.ok, result.error
    assert slept == [1.0]
    assert "asked to wait 3600 s; waiting 1 s" in caplog.text


def test_a_529_is_retried(org_config, simulator: Simulator) -> None:
    simulator.fault(path=USAGE, count=1, status=529, kind="error")
    config, (result,) = run(org_config(), day(22), day(23))
    assert result.ok, result.error
    assert [r["status"] for r in api_requests(simulator, USAGE)][:2] == [529, 200]


def test_a_lasting_5xx_is_given_up_with_a_clear_error(org_config, simulator: Simulator) -> None:
    simulator.fault(path=USAGE, count=100, status=500, kind="error")
    config, (result,) = run(org_config(collection="max_attempts = 3"), day(22), day(23))
    assert not result.ok
    assert "gave up after 3 attempts (500 api_error" in (result.error or "")
    assert [r["status"] for r in api_requests(simulator, USAGE)] == [500, 500, 500]
    assert query(db_path(config), "SELECT count(*) FROM usage_hourly") == [(0,)]


@pytest.mark.parametrize("key, expected", [
    ("sk-ant-admin01-revoked-key-xyz", "401 authentication_error: the Admin API key was refused"),
    ("sk-ant-api03-workspace-key-xyz", "looks like a standard workspace API key"),
])
def test_a_refused_key_fails_at_once_and_is_never_shown(isolated: Path, simulator: Simulator,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture,
                                                        key: str, expected: str) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", key)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    with caplog.at_level(logging.DEBUG):
        config, (result,) = run(path, day(22), day(23))
    assert result.auth_failed and expected in (result.error or "")
    served = [r["path"] for r in simulator.requests_served()]
    assert len(served) == len(set(served)) == 2, "401/403 are not retried"
    assert served[1] == "/v1/organizations/analytics/usage", "names are optional: usage is tried"
    assert key not in caplog.text and key not in (result.error or "")
    assert query(db_path(config), "SELECT status, error FROM collection_runs") == [
        ("failed", result.error)]


@pytest.mark.parametrize("kind, expected", [("missing_field", "is missing"),
                                            ("wrong_type", "should be")])
def test_a_malformed_page_is_rejected_and_nothing_of_it_is_written(
        org_config, simulator: Simulator, kind: str, expected: str) -> None:
    simulator.fault(path=COST, count=1, kind=kind)
    config, (result,) = run(org_config(), day(22), day(23))
    assert not result.ok and expected in (result.error or "")
    assert "analytics cost 2026-11-22T00:00:00Z..2026-11-23T00:00:00Z page 1" in result.error
    assert query(db_path(config), "SELECT count(*) FROM cost_buckets") == [(0,)]
    assert query(db_path(config), "SELECT stream FROM sync_state") == [("usage",)]


def test_two_organizations_are_kept_apart_and_one_failing_spares_the_other(
        isolated: Path, simulators, monkeypatch: pytest.MonkeyPatch) -> None:
    first = simulators(seed=7)
    second = simulators(seed=8, keys=("sk-ant-admin01-second-org",))
    second.fault(path=USAGE, count=1000, status=500, kind="error")
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("SECOND_KEY", "sk-ant-admin01-second-org")
    path = write_config(isolated, [
        {"name": "broken", "base_url": second.url, "admin_key_env": "SECOND_KEY"},
        {"name": "acme", "base_url": first.url}], collection="max_attempts = 2")
    config, results = run(path, day(22), day(23))
    assert [(r.organization, r.ok) for r in results] == [("broken", False), ("acme", True)]
    assert query(db_path(config), "SELECT DISTINCT organization FROM usage_hourly") == [
        ("acme",)]
    assert totals(db_path(config), day(22), day(23), "acme") == truth_totals(
        first.truth(day(22), day(23)))

    second.control("DELETE", "/_sim/faults")
    run(path, day(22), day(23), refresh=True)
    assert totals(db_path(config), day(22), day(23), "broken") == truth_totals(
        second.truth(day(22), day(23)))
    assert totals(db_path(config), day(22), day(23), "acme") == truth_totals(
        first.truth(day(22), day(23)))


def test_the_legacy_api_gives_hourly_usage_and_daily_cost(org_config,
                                                          simulator: Simulator) -> None:
    config, (result,) = run(org_config(source="legacy"), day(20), day(22))
    assert result.ok, result.error
    paths = {r["path"] for r in simulator.requests_served()}
    assert {"/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"} <= paths
    assert not any(p.startswith("/v1/organizations/analytics") for p in paths)
    assert totals(db_path(config), day(20), day(22)) == truth_totals(
        simulator.truth(day(20), day(22)))
    assert query(db_path(config), "SELECT DISTINCT bucket_width, api_key_id FROM "
                 "cost_buckets") == [("1d", None)]
    # the legacy API's null default workspace is stored under its real ID
    ((default_id,),) = query(db_path(config), "SELECT workspace_id FROM workspaces "
                             "WHERE is_default")
    assert query(db_path(config), "SELECT count(*) FROM usage_hourly WHERE "
                 "workspace_id IS NULL") == [(0,)]
    assert query(db_path(config), "SELECT count(*) > 0 FROM usage_hourly WHERE "
                 "workspace_id = ?", default_id) == [(True,)]


def test_a_legacy_run_after_one_that_ended_mid_day_stores_the_whole_day(
        org_config, simulator: Simulator) -> None:
    """The legacy cost report has daily buckets; the next scheduled run's cost window starts
    where the last run's coverage ended, inside the day: it is asked for the whole day."""
    path = org_config(source="legacy")
    _, (first,) = run(path, day(23), now=SIM_NOW - timedelta(hours=6))
    assert first.ok, first.error
    config, (second,) = run(path, now=SIM_NOW)
    assert second.ok, second.error
    assert totals(db_path(config), day(23), day(24)) == truth_totals(
        simulator.truth(day(23), day(24)))
    assert query(db_path(config), "SELECT covered_until FROM sync_state WHERE "
                 "stream = 'cost'") == [(SIM_NOW,)]


def test_a_routine_run_asks_at_the_paging_minimum_and_lists_names_hourly(
        org_config, simulator: Simulator) -> None:
    """The re-read range of each stream in one window: as many usage requests as its rows
    need pages; names listed at most hourly, and at once for an ID without a name."""
    path = org_config(collection="page_limit = 200")
    run(path, day(21), now=SIM_NOW - timedelta(minutes=30))
    simulator.control("DELETE", "/_sim/requests")
    config, (result,) = run(path, now=SIM_NOW)
    assert result.ok, result.error
    since = floor_day(SIM_NOW - timedelta(hours=config.collection.usage_lookback_hours))
    (rows,), = query(db_path(config), "SELECT count(*) FROM usage_hourly WHERE "
                     "bucket_start >= ?", since)
    assert rows > 2 * 200, "the range needs several pages"
    assert len(api_requests(simulator, "/v1/organizations/analytics/usage")) == -(-rows // 200)
    names = ("/v1/organizations/workspaces", "/v1/organizations/api_keys")
    assert not any(api_requests(simulator, p) for p in names), "names listed 30 minutes ago"

    # A key without a stored name (new since the last listing): listed in the same run.

    conn = open_warehouse(db_path(config), read_only=False)
    conn.execute("DELETE FROM api_keys WHERE api_key_id = (SELECT min(api_key_id) FROM "
                 "usage_hourly)")
    conn.close()
    simulator.control("DELETE", "/_sim/requests")
    _, (result,) = run(path, now=SIM_NOW + timedelta(minutes=10))
    assert result.ok, result.error
    assert all(api_requests(simulator, p) for p in names)
    assert query(db_path(config), "SELECT count(*) FROM api_keys WHERE api_key_id = "
                 "(SELECT min(api_key_id) FROM usage_hourly)") == [(1,)]


def test_a_process_reads_names_and_features_as_the_warehouse_has_them_now(
        org_config, simulator: Simulator) -> None:
    """Reader batches of one process (a dashboard's page runs) share names and feature maps
    while the warehouse is unchanged: a key renamed by a names listing since, or a config
    with another rule, is read at the next batch."""
    from datetime import date
    from collectors.sync import write_names
    from spendwatch.warehouse.batch import read
    from spendwatch.warehouse.spend import spend
    path = org_config()
    config, (result,) = run(path, day(21), day(22))
    assert result.ok, result.error

    def by_key(batch: Batch) -> dict:
        return {r["api_key_id"]: (r["api_key"], r["feature"]) for r in spend(
            batch, date(2026, 11, 21), date(2026, 11, 21), ["api_key", "feature"])}

    before = read(config, by_key)
    (key_id,) = [k for k, (name, _) in before.items() if name == "support-bot-prod"]
    assert before[key_id] == ("support-bot-prod", "support-bot-prod")
    assert read(config, by_key) == before

    (listed,) = query(db_path(config), "SELECT api_key_id, status, workspace_id, created_at "
                      "FROM api_keys WHERE api_key_id = ?", key_id)
    write_names(config, "acme", [], [dict(zip(("api_key_id", "status", "workspace_id",
                                               "created_at"), listed), name="support v2")],
                SIM_NOW)
    after = read(config, by_key)
    assert after[key_id] == ("support v2", "support v2")
    assert {k: v for k, v in after.items() if k != key_id} == {
        k: v for k, v in before.items() if k != key_id}

    rule = f'[[features]]\nname = "help desk"\napi_key_ids = ["{key_id}"]\n'
    ruled = load_config(write_config(path.parent, [{"name": "acme", "base_url": simulator.url}],
                                     extra=rule))
    assert read(ruled, by_key)[key_id] == ("support v2", "help desk")
    assert read(config, by_key)[key_id] == ("support v2", "support v2")


def test_keys_of_one_name_are_ordered_by_their_ids(org_config, simulator: Simulator) -> None:
    # Rows are ordered by their labels; keys a listing gave one name, by their IDs under it
    # (not in whatever order DuckDB's aggregate returned them).
    from datetime import date
    from collectors.sync import write_names
    from spendwatch.warehouse.batch import read
    from spendwatch.warehouse.spend import spend
    config, (result,) = run(org_config(), day(21), day(22))
    assert result.ok, result.error
    listed = query(db_path(config), "SELECT api_key_id, status, workspace_id, created_at "
                   "FROM api_keys ORDER BY api_key_id")
    write_names(config, "acme", [], [dict(zip(("api_key_id", "status", "workspace_id",
                                               "created_at"), row), name="twin")
                                     for row in listed], SIM_NOW)
    # A token series (no cost to order by first): the label, then the ID.
    rows = read(config, spend, date(2026, 11, 21), date(2026, 11, 21), ["api_key"],
                metrics=["output_tokens"])
    twins = [r["api_key_id"] for r in rows if r["api_key"] == "twin"]
    assert len(twins) >= 3 and twins == sorted(twins)


def test_days_before_2026_come_from_the_legacy_api(org_config, simulator: Simulator) -> None:
    config, (result,) = run(org_config(), day(30, 12, 2025), day(2, 1))
    assert result.ok, result.error
    sources = query(db_path(config), "SELECT DISTINCT source, bucket_start < ? FROM "
                    "usage_hourly ORDER BY 1", day(1, 1))
    assert sources == [("analytics", False), ("legacy", True)]
    for r in simulator.requests_served():
        if r["path"].startswith("/v1/organizations/analytics"):
            assert r["query"]["starting_at"][0] >= "2026-01-01"
    assert totals(db_path(config), day(30, 12, 2025), day(2, 1)) == truth_totals(
        simulator.truth(day(30, 12, 2025), day(2, 1)))


def test_names_of_workspaces_and_keys_are_stored(org_config, simulator: Simulator) -> None:
    config, _ = run(org_config(), day(22), day(23))
    keys = dict(query(db_path(config), "SELECT name, status FROM api_keys"))
    assert keys["support-bot-prod"] == "active" and "+ops notebook" in keys
    workspaces = [n for (n,) in query(db_path(config), "SELECT name FROM workspaces")]
    assert "Default" in workspaces and "Old Experiments" in workspaces


def test_no_secret_reaches_the_database_or_the_log(org_config, simulator: Simulator,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    simulator.fault(path=USAGE, count=1, status=429, retry_after="1", kind="error")
    with caplog.at_level(logging.DEBUG):
        config, _ = run(org_config(), day(22), day(23))
    assert ADMIN_KEY not in caplog.text
    raw = stored_bytes(db_path(config))
    assert ADMIN_KEY.encode() not in raw
    assert b"test-key-0123456789" not in raw


@pytest.mark.parametrize("fault", [{"kind": "delay", "seconds": 3},
                                   {"kind": "disconnect"}])
def test_timeouts_and_dropped_connections_are_retried(org_config, simulator: Simulator,
                                                      fault: dict) -> None:
    simulator.fault(path=USAGE, count=1, **fault)
    config, (result,) = run(org_config(collection="timeout_seconds = 1"), day(22), day(23))
    assert result.ok, result.error
    deadline = time.monotonic() + 10  # the abandoned request is logged when its delay ends
    while len(api_requests(simulator, USAGE)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(api_requests(simulator, USAGE)) == 2
    assert totals(db_path(config), day(22), day(23)) == truth_totals(
        simulator.truth(day(22), day(23)))


def test_legacy_errors_are_retried_and_refusals_explained(org_config, simulator: Simulator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.fault(path="/v1/organizations/cost_report", count=1, status=429, retry_after="1",
                    kind="error")
    config, (result,) = run(org_config(source="legacy"), day(22), day(23))
    assert result.ok, result.error
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", "sk-ant-api03-a-workspace-key")
    _, (refused,) = run(org_config(source="legacy"), day(22), day(23), refresh=True)
    assert refused.auth_failed and "looks like a standard workspace API key" in refused.error


def test_model_lines_come_from_the_models_api_when_a_normal_key_is_set(
        org_config, simulator: Simulator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MODELS_KEY", "sk-ant-api03-sim")
    path = org_config(extra=f'[models]\napi_key_env = "MODELS_KEY"\nbase_url = "{simulator.url}"\n')
    config, (result,) = run(path, day(22), day(23))
    assert result.ok, result.error
    lines = dict(query(db_path(config), "SELECT model_id, line FROM models"))
    assert lines["claude-haiku-4-5-20251001"] == "haiku" and lines["claude-opus-5-5"] == "opus"

    monkeypatch.setenv("MODELS_KEY", ADMIN_KEY)  # the Models API refuses an admin key
    with caplog.at_level(logging.WARNING):
        _, (result,) = run(path, day(22), day(23))
    assert result.ok, "a refused Models API key does not stop the collection"
    assert "model lines not refreshed" in caplog.text and ADMIN_KEY not in caplog.text


def test_the_default_workspace_is_one_workspace_across_both_apis(org_config,
                                                                simulator: Simulator) -> None:
    rule = '[[features]]\nname = "front door"\nworkspace_names = ["Default"]\n'
    config, (result,) = run(org_config(extra=rule), day(31, 12, 2025), day(2, 1))
    assert result.ok, result.error
    from spendwatch import storage
    from spendwatch.warehouse.spend import spend
    from datetime import date
    with storage.reader(config) as conn:
        by_day = spend(Batch(conn, config), date(2025, 12, 31), date(2026, 1, 1),
                       ["date", "workspace", "feature"])
    default_rows = [r for r in by_day if r["workspace"] == "Default"]
    assert {r["date"] for r in default_rows} == {date(2025, 12, 31), date(2026, 1, 1)}
    assert all(r["feature"] == "front door" for r in default_rows)
    assert not [r for r in by_day if r["workspace"] == "Default workspace"]


def test_requests_are_counted_once_per_usage_row(org_config, simulator: Simulator) -> None:
    # The API's request count of each usage row rides on its output fact: grouped any way,
    # the requests add up to the simulator's, and a cost per request divides by all of them.
    from spendwatch import storage
    from spendwatch.warehouse.spend import spend

    config, (result,) = run(org_config(), day(20), day(21))
    assert result.ok, result.error
    truth = simulator.truth(day(20), day(21))
    with storage.reader(config) as conn:
        (row,) = spend(Batch(conn, config), start=day(20), end=day(21))
        by_status = spend(Batch(conn, config), by=["cache_status", "cost_basis"],
                          start=day(20), end=day(21))
        by_model = spend(Batch(conn, config), by=["model"], start=day(20), end=day(21))
    assert row["requests"] == int(truth["requests"]) > 0
    assert sum(r["requests"] or 0 for r in by_status) == row["requests"]
    assert sum(r["requests"] or 0 for r in by_model) == row["requests"]
