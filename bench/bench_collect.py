"""Benchmark: backfill N days from the local simulator, then query spend.

Run: ``python bench/bench_collect.py [--days 90] [--cuts none|default]``. Prints one JSON
object: wall seconds for the backfill and for the spend queries, rows stored, and the process's
peak memory. ``--cuts none`` collects the key cut only (the baseline for the cost of the other
cuts: run both on the same machine, one after the other). Speed and
memory are measured here, not in timed tests (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import date, datetime, timedelta, timezone

from _setup import KEY, collected
from collectors.simulator import start_simulator
from spendwatch.warehouse.batch import Batch, read
from spendwatch.warehouse.spend import spend

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--cuts", choices=("none", "default"), default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, start_simulator(admin_keys=[KEY], now=NOW,
                                                                 fast_and_us=True) as sim:
        started = time.perf_counter()
        config, result = collected(folder, sim, NOW - timedelta(days=args.days), NOW,
                                   [] if args.cuts == "none" else None)
        collect_seconds = time.perf_counter() - started
        started = time.perf_counter()
        def three(batch: Batch) -> None:
            for by in (["model"], ["date", "feature"], ["api_key", "cache_status"]):
                spend(batch, date(2026, 8, 1), date(2026, 11, 24), by)

        read(config, three)
        query_seconds = time.perf_counter() - started
        print(json.dumps({
            "days": args.days, "cuts": args.cuts, "windows": result.windows, "usage_rows": result.usage_rows,
            "cost_rows": result.cost_rows, "collect_seconds": round(collect_seconds, 2),
            "rows_per_second": round((result.usage_rows + result.cost_rows) / collect_seconds),
            "three_spend_queries_seconds": round(query_seconds, 3),
            "database_mb": round(config.database_path.stat().st_size / 1e6, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }))


if __name__ == "__main__":
    main()
