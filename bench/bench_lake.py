"""Benchmark: the same organization on a DuckDB file and on a DuckLake, side by side.

Run (in the DuckLake install, ``.venv-lake``, with a PostgreSQL server for the catalog):
``python bench/bench_lake.py --catalog "dbname=postgres host=127.0.0.1 port=5432 user=postgres"
--password-file PW [--days 14]``. For each backend, in the same run against the same local
simulator: the backfill's wall time and rows per second; a 7-day spend query's p50 and p95
(20 runs); opening a reader and a writer; one alert check; and 8 concurrent viewers (threads,
each running the 7-day query in a loop) while a second collection of the last two days writes:
their queries per second and slowest query. Writes ``bench/results/lake.json`` and
``bench/LAKE.md``. Figures are as measured here; compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

from _setup import KEY
from alerts.check import check
from collectors.simulator import start_simulator
from collectors.sync import CollectOptions, collect
from spendwatch import storage
from spendwatch.config import load_config
from spendwatch.warehouse.batch import read
from spendwatch.warehouse.spend import spend

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
HERE = Path(__file__).resolve().parent
RULES = '''
[[alerts.channels]]
name = "log"
kind = "slack"
webhook_url_env = "BENCH_WEBHOOK"
[[alerts.rules]]
name = "daily"
kind = "daily_spend"
channels = ["log"]
threshold_usd = "1000000"
[[alerts.rules]]
name = "cache"
kind = "cache_hit_ratio"
channels = ["log"]
floor = 0.01
per = "model"
'''


def config_text(url: str, storage_lines: str) -> str:
    return (f'timezone = "America/Chicago"\n[storage]\n{storage_lines}[[organizations]]\n'
            f'name = "bench"\nbase_url = "{url}"\ncuts = []\nclaude_code = false\n{RULES}')


def timed(step, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        out.append(time.perf_counter() - started)
    return out


def measure(path: Path, days: int) -> dict:
    config = load_config(path)
    started = time.perf_counter()
    (result,) = collect(config, CollectOptions(since=NOW - timedelta(days=days)), now=NOW)
    assert result.ok, result.error
    collect_seconds = time.perf_counter() - started
    week = (date(2026, 11, 17), date(2026, 11, 23))

    def query() -> None:
        read(config, lambda b: spend(b, week[0], week[1], ["model", "api_key", "cache_status"]))

    query()  # warm
    queries = timed(query, 20)

    def open_reader() -> None:
        with storage.reader(config):
            pass

    def open_writer() -> None:
        storage.written(config, lambda conn: storage.lock(conn, "alerts"), "bench")

    readers, writers = timed(open_reader, 10), timed(open_writer, 10)
    alert = timed(lambda: check(config, NOW), 1)[0]
    stop, latencies, errors = threading.Event(), [], []

    def viewer() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                query()
            except Exception as exc:  # a file's reader may wait out the writer: count it
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=viewer) for _ in range(8)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:  # a file's writer may never get in while readers keep it open
        (again,) = collect(config, CollectOptions(since=NOW - timedelta(days=2)), now=NOW)
        collected = "ok" if again.ok else f"failed: {again.error}"
    except Exception as exc:
        collected = f"failed: {type(exc).__name__}"
    stop.set()
    for thread in threads:
        thread.join()
    busy = time.perf_counter() - started
    return {
        "rows": result.usage_rows + result.cost_rows,
        "collect_seconds": round(collect_seconds, 1),
        "rows_per_second": round((result.usage_rows + result.cost_rows) / collect_seconds),
        "spend_7_days_p50": round(statistics.median(queries), 3),
        "spend_7_days_p95": round(sorted(queries)[18], 3),
        "reader_open_p50": round(statistics.median(readers), 3),
        "writer_transaction_p50": round(statistics.median(writers), 3),
        "alert_check_seconds": round(alert, 2),
        "concurrent_viewers": 8,
        "viewer_queries_per_second_while_collecting": round(len(latencies) / busy, 1),
        "viewer_slowest_query_seconds": round(max(latencies), 2) if latencies else None,
        "viewer_errors": len(errors),
        "recollect_2_days_seconds": round(busy, 1),
        "recollect_2_days": collected,
    }


ROWS = [("rows", "rows stored ({days} days, key cut)"),
        ("collect_seconds", "backfill, wall seconds"),
        ("rows_per_second", "backfill, rows per second"),
        ("spend_7_days_p50", "spend over 7 days by model, key, cache status: p50 s"),
        ("spend_7_days_p95", "the same, p95 s"),
        ("reader_open_p50", "open a reader and close it: p50 s"),
        ("writer_transaction_p50", "one writer transaction (a lock), opened and closed: p50 s"),
        ("alert_check_seconds", "one alert check (a daily total, a cache floor per model)"),
        ("viewer_queries_per_second_while_collecting",
         "8 concurrent viewers while a collection writes: their queries per second"),
        ("viewer_slowest_query_seconds", "  their slowest query, s"),
        ("viewer_errors", "  their queries that failed (data being updated)"),
        ("recollect_2_days_seconds", "  the collection beside them (2 days), wall s"),
        ("recollect_2_days", "  that collection's outcome")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/bench_lake.py")
    parser.add_argument("--catalog", required=True, help="libpq connection string")
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    os.environ["ANTHROPIC_ADMIN_KEY"] = KEY
    os.environ["BENCH_WEBHOOK"] = "http://127.0.0.1:9/never"
    results = {}
    with tempfile.TemporaryDirectory() as folder, start_simulator(admin_keys=[KEY], now=NOW,
                                                                 fast_and_us=True) as sim:
        for backend, lines in (
                ("file", 'database = "file/spendwatch.duckdb"\n'),
                ("ducklake", f'database = "ducklake:postgres:{args.catalog}"\n'
                             f'data_path = "lake/"\nmetadata_schema = '
                             f'"bench_{secrets.token_hex(4)}"\n'
                             f'password_file = "{Path(args.password_file).resolve()}"\n')):
            path = Path(folder) / f"{backend}.toml"
            path.write_text(config_text(sim.url, lines), encoding="utf-8")
            path.chmod(0o600)
            results[backend] = measure(path, args.days)
            print(backend, json.dumps(results[backend]))
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=HERE).stdout.strip()
    meta = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code": code, "days": args.days, "duckdb": duckdb.__version__,
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
                       f"{platform.python_version()}"}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "lake.json").write_text(json.dumps({**meta, **results}, indent=2))
    lines = ["# The file and the DuckLake, side by side", "",
             "Written by `python bench/bench_lake.py --catalog ... --password-file ... "
             f"--days {args.days}` (in `.venv-lake`); as measured, one run, both backends "
             "against the same local simulator.", "",
             f"- Machine: {meta['machine']}, DuckDB {meta['duckdb']}; PostgreSQL for the "
             "catalog on the same machine, the lake's data on local disk",
             f"- Measured: {meta['measured']} (code {code})", "",
             "| what | DuckDB file | DuckLake |", "|---|---|---|"]
    for key, title in ROWS:
        lines.append(f"| {title.format(days=args.days)} | {results['file'][key]} | "
                     f"{results['ducklake'][key]} |")
    (HERE / "LAKE.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written: {HERE / 'LAKE.md'}")


if __name__ == "__main__":
    main()
