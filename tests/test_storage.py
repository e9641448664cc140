"""Storage: migrations on open, the exact schema, lock handling."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from spendwatch import storage
from spendwatch.cuts import CUT_DIMENSIONS
from spendwatch.errors import (ConflictingWriters, DatabaseBusy, DatabaseMissing, DatabaseOutdated,
                               DatabaseTooNew)

EXPECTED_SCHEMA = {
    "schema_migrations": ["version", "name", "applied_at"],
    "usage_hourly": ["row_key", "organization", "source", "bucket_start", "bucket_end", "model",
                     "workspace_id", "api_key_id", "service_tier", "context_window",
                     "uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                     "cache_read_tokens", "output_tokens", "web_search_requests", "requests",
                     "provisional", "fetched_at"],
    "cost_buckets": ["row_key", "organization", "source", "bucket_start", "bucket_end",
                     "bucket_width", "model", "workspace_id", "api_key_id", "service_tier",
                     "context_window", "cost_type", "token_type", "description", "amount_usd",
                     "list_amount_usd", "requests", "provisional", "fetched_at"],
    "sync_state": ["organization", "stream", "covered_from", "covered_until",
                   "data_refreshed_at", "updated_at"],
    "collection_runs": ["id", "organization", "started_at", "finished_at", "status", "windows",
                        "usage_rows", "cost_rows", "error"],
    "workspaces": ["organization", "workspace_id", "name", "archived_at", "is_default",
                   "fetched_at"],
    "api_keys": ["organization", "api_key_id", "name", "status", "workspace_id", "created_at",
                 "fetched_at"],
    "meta": ["key", "value"],
    "usage_estimates": ["row_key", "est_input_usd", "est_cache_write_5m_usd",
                        "est_cache_write_1h_usd", "est_cache_read_usd", "est_output_usd",
                        "est_web_search_usd", "unpriced_reason", "organization",
                        "bucket_start"],
    "cost_allocated": ["row_key", "organization", "bucket_start", "bucket_width", "model",
                       "workspace_id", "api_key_id", "service_tier", "context_window",
                       "cost_type", "token_type", "amount_usd", "cost_basis", "provisional",
                       "source_row_key"],
    "usage_unbilled": ["row_key", "component", "organization", "bucket_start"],
    "alert_states": ["rule", "scope_key", "level", "state", "since", "episode_id",
                     "last_result", "last_value", "last_evaluated_at", "last_notified_at"],
    "alert_episodes": ["id", "rule", "rule_kind", "scope_key", "scope_json", "level",
                       "started_at", "firing_at", "ended_at", "end_reason", "silenced",
                       "threshold", "peak_value", "unit", "summary"],
    "alert_transitions": ["episode_id", "rule", "scope_key", "level", "old_state",
                          "new_state", "changed_at", "value"],
    "alert_notifications": ["id", "episode_id", "kind", "channel", "created_at", "status",
                            "attempts", "sent_at", "last_answer", "payload_json",
                            "claimed_at"],
    "alert_deliveries": ["notification_id", "channel", "attempted_at", "ok", "permanent",
                         "answer"],
    "alert_channels": ["channel", "broken", "reason", "since"],
    "alert_silences": ["id", "rule", "scope_key", "created_at", "expires_at", "comment",
                       "created_by"],
    "report_runs": ["organization", "week", "written_at", "path", "rows", "total_usd",
                    "channels", "final_at", "final_total_usd"],
    "digest_runs": ["organization", "day", "written_at", "total_usd", "channels"],
    "locks": ["name", "taken"],
    "models": ["model_id", "display_name", "line", "lifecycle", "retires_at", "fetched_at"],
    "spend_facts": ["organization", "bucket_start", "bucket_width", "workspace_id",
                    "api_key_id", "model", "service_tier", "context_window", "cost_type",
                    "token_type", "cost_usd", "list_cost_usd", "cost_basis", "provisional",
                    "unpriced_reason", "unpriced_tokens", "uncached_input_tokens",
                    "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
                    "output_tokens", "web_search_requests", "requests"],
    "usage_cuts": ["row_key", "organization", "cut", "source", "bucket_start", "bucket_end",
                   *CUT_DIMENSIONS, "uncached_input_tokens", "cache_write_5m_tokens",
                   "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
                   "web_search_requests", "requests", "provisional", "fetched_at"],
    "cost_cuts": ["row_key", "organization", "cut", "source", "bucket_start", "bucket_end",
                  *CUT_DIMENSIONS, "cost_type", "token_type", "amount_usd", "list_amount_usd",
                  "requests", "provisional", "fetched_at"],
    "cut_estimates": ["row_key", "est_input_usd", "est_cache_write_5m_usd",
                      "est_cache_write_1h_usd", "est_cache_read_usd", "est_output_usd",
                      "est_web_search_usd", "unpriced_reason", "organization",
                      "bucket_start"],
    "people": ["organization", "actor_key", "actor_type", "email", "name", "deleted",
               "last_seen"],
    "cut_access": ["organization", "cut", "readable", "reason", "checked_at"],
    "claude_code_daily": ["row_key", "organization", "day", "actor_type", "actor",
                          "terminal_type", "sessions", "lines_added", "lines_removed", "commits",
                          "pull_requests", "tool_accepted", "tool_rejected", "input_tokens",
                          "output_tokens", "cache_read_tokens", "cache_creation_tokens",
                          "estimated_cost_usd", "models", "fetched_at"],
    "cut_facts": ["cut", "organization", "bucket_start", "bucket_width", "workspace_id",
                  "api_key_id", *CUT_DIMENSIONS[:-2], "cost_type", "token_type", "cost_usd",
                  "list_cost_usd", "cost_basis", "provisional", "unpriced_reason",
                  "unpriced_tokens", "uncached_input_tokens", "cache_write_5m_tokens",
                  "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
                  "web_search_requests", "requests"],
    "fact_keys": ["cut", "organization", "workspace_id", "api_key_id", "product", "actor_key",
                  "actor_type", "rbac_group_id"],
    "facts": ["cut", "organization", "bucket_start", "bucket_width", "workspace_id",
              "api_key_id", "model", "service_tier", "context_window", "inference_geo", "speed",
              "product", "actor_key", "actor_type", "rbac_group_id", "user_profile_id",
              "cost_type", "token_type", "cost_usd", "list_cost_usd", "cost_basis",
              "provisional", "unpriced_reason", "unpriced_tokens", "uncached_input_tokens",
              "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
              "output_tokens", "web_search_requests", "requests"],
    "facts_daily": ["cut", "organization", "bucket_start", "workspace_id", "api_key_id", "model",
                    "service_tier", "inference_geo", "speed", "product", "actor_key",
                    "actor_type", "rbac_group_id", "user_profile_id", "cost_type", "token_type",
                    "cost_usd", "list_cost_usd", "unpriced_tokens", "uncached_input_tokens",
                    "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
                    "output_tokens", "web_search_requests", "requests", "requests_unknown"],
    "daily_state": ["organization", "synced"],
}


def schema(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def test_an_empty_file_migrates_to_the_exact_schema(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "w.duckdb"
    with storage.writer_at(db) as conn:
        assert schema(conn) == EXPECTED_SCHEMA
        assert storage.schema_version(conn) == len(storage.MIGRATIONS)
        money = conn.execute("SELECT data_type FROM information_schema.columns WHERE "
                             "table_name = 'cost_buckets' AND column_name = 'amount_usd'"
                             ).fetchone()
        assert money == ("DECIMAL(38,12)",)
        # Nothing relies on a constraint (DuckLake has none): no key, index or sequence left.
        assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE constraint_type "
                            "IN ('PRIMARY KEY', 'UNIQUE')").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM duckdb_indexes()").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM duckdb_sequences()").fetchone() == (0,)
        assert sorted(conn.execute("SELECT name FROM locks").fetchall()) == sorted(
            (name,) for name in storage.LOCKS)
        # The rebuilt tables keep their NOT NULLs, a former key's columns among them.
        with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
            conn.execute("INSERT INTO sync_state VALUES (NULL, 'usage', now(), now(), NULL, "
                         "now())")
        with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
            conn.execute("INSERT INTO report_runs (organization, week, written_at, path, rows, "
                         "total_usd, channels) VALUES ('acme', '2026-W47', now(), NULL, 1, 1, "
                         "'ops')")


def test_a_writer_that_takes_a_taken_lock_is_retried_until_the_holder_commits(
        tmp_path: Path) -> None:
    import threading

    db = tmp_path / "w.duckdb"
    attempts: list[int] = []

    def take() -> int:
        attempts.append(1)
        with storage.writer_at(db) as conn, storage.transaction(conn):
            storage.lock(conn, "reports")
            row = conn.execute("SELECT taken FROM locks WHERE name = 'reports'").fetchone()
            return int(row[0]) if row else -1

    with storage.writer_at(db) as holder:
        holder.execute("BEGIN TRANSACTION")
        storage.lock(holder, "reports")
        # While the holder's transaction is open, the second writer conflicts, every time.
        with pytest.raises(ConflictingWriters,
                           match="recording the report conflicted with another writer 3 times"):
            storage.retry_conflicts(take, "recording the report", attempts=3)
        assert len(attempts) == 3
        attempts.clear()
        threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
        # Retried until the holder commits; then it runs after it (the second to take it).
        assert storage.retry_conflicts(take, "recording the report") == 2
        assert len(attempts) > 1


def _file_at_version(db: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A file as spendwatch left it at schema ``version`` (its first migrations applied)."""
    conn = duckdb.connect(str(db))
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR "
                 "NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
    for number, name, apply in storage.MIGRATIONS[:version]:
        apply(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [number, name])
    return conn


def test_a_version_5_file_with_data_migrates_to_the_latest_intact(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    conn = _file_at_version(db, 5)
    conn.execute("INSERT INTO workspaces VALUES ('acme', 'wrkspc_1', 'Prod', NULL, false, now())")
    conn.execute("INSERT INTO usage_hourly VALUES ('k', 'acme', 'analytics', "
                 "'2026-11-20 10:00:00+00', '2026-11-20 11:00:00+00', 'claude-opus-5-5', 'wrkspc_1', "
                 "NULL, 'standard', '0-200k', 1, 2, 3, 4, 5, 0, 1, false, now())")
    conn.close()
    # A reader cannot migrate: it says, in one line, what will (the dashboard shows it).
    with pytest.raises(DatabaseOutdated) as raised:
        with storage.reader_at(db):
            pass
    assert "older spendwatch (schema 5, this one needs" in str(raised.value)
    assert "run `spendwatch collect` once" in str(raised.value)
    with storage.writer_at(db) as conn:
        assert storage.schema_version(conn) == len(storage.MIGRATIONS)
        assert conn.execute("SELECT name FROM workspaces").fetchall() == [("Prod",)]
        # Its request count is on its output fact (migration 11).
        assert conn.execute("SELECT sum(requests) FROM facts").fetchone() == (1,)
        assert conn.execute("SELECT sum(output_tokens) FROM spend_facts").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM cut_facts").fetchone() == (0,)
        # The stored facts are built from what was there (migration 7).
        assert conn.execute("SELECT cut, sum(output_tokens) FROM facts GROUP BY 1"
                            ).fetchall() == [("key", 5)]
        # And summed per UTC day (migration 14).
        assert conn.execute(
            "SELECT cut, bucket_start, output_tokens, requests, requests_unknown FROM facts_daily "
            "WHERE token_type = 'output_tokens'").fetchall() == [
            ("key", datetime(2026, 11, 20, tzinfo=timezone.utc), 5, 1, 0)]


def test_a_version_12_file_gives_each_estimate_its_rows_organization_and_hour(
        tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    conn = _file_at_version(db, 12)
    conn.execute("INSERT INTO usage_hourly VALUES ('k', 'acme', 'analytics', "
                 "'2026-11-20 10:00:00+00', '2026-11-20 11:00:00+00', 'claude-opus-5-5', "
                 "'wrkspc_1', NULL, 'standard', '0-200k', 1, 2, 3, 4, 5, 0, 1, false, now())")
    conn.execute("INSERT INTO usage_estimates VALUES ('k', 1, 2, 3, 4, 5, 0, NULL), "
                 "('gone', 9, 9, 9, 9, 9, 0, NULL)")
    conn.close()
    with storage.writer_at(db) as conn:
        assert conn.execute("SELECT row_key, est_output_usd, organization, bucket_start "
                            "FROM usage_estimates").fetchall() == [
            ("k", 5, "acme", datetime(2026, 11, 20, 10, tzinfo=timezone.utc))]
        assert conn.execute("SELECT count(*) FROM cut_estimates").fetchone() == (0,)


def test_a_writer_refuses_a_warehouse_a_newer_spendwatch_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with storage.writer_at(db) as conn:
        conn.execute("INSERT INTO workspaces VALUES ('o', 'w', 'n', NULL, false, now())")
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', now())",
                     [len(storage.MIGRATIONS) + 1])
    with pytest.raises(DatabaseTooNew) as raised:
        with storage.writer_at(db):
            pass
    message = str(raised.value)
    assert f"newer spendwatch (schema {len(storage.MIGRATIONS) + 1}, this one knows " \
           f"{len(storage.MIGRATIONS)})" in message and "upgrade spendwatch" in message
    assert "\n" not in message
    # Nothing was written; this version still reads it.
    with storage.reader_at(db) as conn:
        assert conn.execute("SELECT name FROM workspaces").fetchall() == [("n",)]


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with storage.writer_at(db) as conn:
        conn.execute("INSERT INTO workspaces VALUES ('o', 'w', 'n', NULL, false, now())")
    with storage.writer_at(db) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(storage.MIGRATIONS),)
        assert conn.execute("SELECT name FROM workspaces").fetchall() == [("n",)]


def test_a_reader_on_a_missing_file_says_to_collect_first(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissing, match="run `spendwatch collect` first"):
        with storage.reader_at(tmp_path / "none.duckdb"):
            pass
    assert not (tmp_path / "none.duckdb").exists()


HOLD_LOCK = """
import duckdb, sys, time
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_a_locked_database_is_retried_until_it_frees(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with storage.writer_at(db):
        pass
    holder = hold_lock(db, 1.0)
    with storage.reader_at(db, lock_timeout=30) as conn:
        assert conn.execute("SELECT count(*) FROM usage_hourly").fetchone() == (0,)
    holder.wait()


def test_a_database_locked_too_long_says_it_is_being_updated(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with storage.writer_at(db):
        pass
    holder = hold_lock(db, 30)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="the data is being updated"):
            with storage.writer_at(db, lock_timeout=0.5):
                pass
        assert time.monotonic() - started < 20
    finally:
        holder.kill()
        holder.wait()


def _bounded(tmp_path: Path, memory_mb: int):
    """An empty warehouse and a config whose readers get ``memory_mb`` and one thread."""
    from spendwatch.config import parse_config

    db = tmp_path / "w.duckdb"
    with storage.writer_at(db):
        pass
    return parse_config(tmp_path / "config.toml", {
        "storage": {"database": str(db), "reader_memory_mb": memory_mb, "reader_threads": 1},
        "organizations": [{"name": "acme"}]})


def test_a_reader_is_bounded_by_the_storage_settings(tmp_path: Path) -> None:
    config = _bounded(tmp_path, 100)
    with storage.reader(config) as conn:
        memory, threads = conn.execute("SELECT current_setting('memory_limit'), "
                                       "current_setting('threads')").fetchone()
    assert memory == "95.3 MiB", memory  # 100 MB, as DuckDB prints it
    assert int(threads) == 1


def test_a_question_too_big_for_a_reader_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    from spendwatch.errors import QueryTooLarge
    from spendwatch.warehouse.batch import read

    config = _bounded(tmp_path, 64)

    def hungry(batch):  # a hash table of 30 million distinct strings cannot spill
        return batch.conn.execute("SELECT list(DISTINCT 'x' || i::VARCHAR) FROM "
                                  "range(30000000) t(i)").fetchone()

    with pytest.raises(QueryTooLarge) as caught:
        read(config, hungry)
    assert str(caught.value).count("\n") == 0
    assert "reader_memory_mb = 64" in str(caught.value)
