"""Benchmark: the weekly report of a large organization, and its summary.

Collects two weeks from the local simulator, then multiplies the organization's API keys
(``--copies``: every usage row, its estimate and every cost row again under a new key ID), so
a week holds a big organization's rows. Times the report's rows, its CSV text, and the summary
the worker sends (totals, movers, cache ratio, savings ledger), and reports peak memory.

Run: ``python bench/bench_report.py [--copies 50]``. Prints one JSON object. Speed and memory
are measured here, not in timed tests (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _setup import KEY, collected
from collectors.simulator import start_simulator
from spendwatch import facts, storage
from reports.summary import summarise
from reports.weekly import csv_text, iso_week_range, weekly_rows
from spendwatch.warehouse.batch import Batch

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
SINCE = datetime(2026, 11, 8, 6, tzinfo=timezone.utc)
WEEK = "2026-W47"


def multiply(conn: object, copies: int) -> None:
    """Every row again ``copies - 1`` times under new API key IDs (and row keys)."""
    sql = conn.execute  # type: ignore[attr-defined]
    sql("CREATE TEMP TABLE n AS SELECT range AS i FROM range(1, ?)", [copies])
    for table in ("usage_hourly", "cost_buckets"):
        columns = [r[0] for r in sql(f"DESCRIBE {table}").fetchall()]
        select = ", ".join(
            "t.row_key || '#' || n.i" if c == "row_key" else
            "CASE WHEN t.api_key_id IS NULL THEN NULL ELSE t.api_key_id || '-' || n.i END"
            if c == "api_key_id" else f"t.{c}" for c in columns)
        sql(f"INSERT INTO {table} SELECT {select} FROM {table} t, n")
    columns = [r[0] for r in sql("DESCRIBE usage_estimates").fetchall()]
    select = ", ".join("e.row_key || '#' || n.i" if c == "row_key" else f"e.{c}"
                       for c in columns)
    sql(f"INSERT INTO usage_estimates SELECT {select} FROM usage_estimates e, n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, start_simulator(admin_keys=[KEY], now=NOW) as sim:
        config, _ = collected(folder, sim, SINCE, NOW)
        with storage.writer(config) as conn:
            multiply(conn, args.copies)
            facts.rebuild(conn)  # the stored facts follow the multiplied raw rows
            usage_rows = conn.execute("SELECT count(*) FROM usage_hourly").fetchone()
        monday, sunday = iso_week_range(WEEK)
        with storage.reader(config) as conn:
            started = time.perf_counter()
            batch = Batch(conn, config)
            rows = weekly_rows(batch, monday, sunday, "bench")
            rows_seconds = time.perf_counter() - started
            started = time.perf_counter()
            text = csv_text(rows)
            csv_seconds = time.perf_counter() - started
            started = time.perf_counter()
            summary = summarise(batch, "bench", WEEK, rows, Path(folder) / "r.csv", NOW)
            summary_seconds = time.perf_counter() - started
        print(json.dumps({
            "copies": args.copies, "usage_rows_stored": usage_rows[0] if usage_rows else 0,
            "report_rows": len(rows), "csv_mb": round(len(text.encode()) / 1e6, 2),
            "total_usd": str(summary.total_usd.quantize(summary.total_usd.__class__("0.01"))),
            "rows_seconds": round(rows_seconds, 2), "csv_seconds": round(csv_seconds, 2),
            "summary_seconds": round(summary_seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }))


if __name__ == "__main__":
    main()
