"""The bench suite's machinery: load a synthetic large organization through the project's own
path, then measure every figure beside a baseline from the same run.

Entry points: ``bench/generate.py`` (the load) and ``bench/run.py`` (the measurements and
``bench/RESULTS.md``). The organization (``_synthetic.py``: by default 400 API keys, 40
workspaces, 10 models; about 80 usage and 340 cost rows an hour) is served over HTTP as the
Analytics API sends it (``_serve.py``: the simulator's server in its own process) and
collected by the real ``spendwatch collect --since`` code: the SDK, paging, the collectors'
parsers and ``write_windows``. Each measurement has a baseline from the same run (the machines
are shared and noisy: the ratios are what counts):

- ingest rows/s, parse and write time as collect spends them, the whole collection's wall
  time (baseline: DuckDB's bulk INSERT of the same rows as Arrow into a fresh file of the
  same schema), and the write time per window early and late;
- spend queries over 7 local days, p50/p95 over ranges across the stored year and four
  groupings, each run beside a plain GROUP BY of the same rows;
- the queries of every page (as the pages call them, one Batch per page run), p50/p95, every
  page rendered cold through Streamlit's AppTest, and the peak memory of a fresh process
  running every page's queries (baseline: one running the plain GROUP BYs, same imports);
- the weekly report's rows (and a process's peak memory doing them), the savings ledger over
  the loaded year, repricing every row after a price change (rolled back), alert evaluation
  over more than 1,000 scopes, a scheduled run's requests against the paging minimum (the
  local simulator over HTTP, the small organization), the file size and rows per table.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

import duckdb
import pyarrow as pa
import requests

from _synthetic import MODELS
from alerts import history
from collectors.sync import Window, analytics_floor
from reports import history as report_history
from reports import weekly
from spendwatch import estimates, storage
from spendwatch.config import Config, load_config
from spendwatch.pricing import price_table
from spendwatch.timeutil import local_range, local_today
from spendwatch.warehouse import figures as views
from spendwatch.warehouse.batch import Batch, read
from spendwatch.warehouse.spend import spend

ROOT = Path(__file__).resolve().parent.parent
ORG = "bench"
END = datetime(2027, 1, 1, tzinfo=timezone.utc)  # the last synthetic hour ends here: "now"
# (2027: a year back is all in the Analytics API's history, which starts in 2026)
DAY = timedelta(days=1)
RUNS = 7
EXTRA_PRICE = ('[[pricing.prices]]\nmodel = "claude-sonnet-5-5"\ncomponent = "input"\n'
               'price_usd = "2.50"\nunit = "per_mtok"\neffective_from = "2026-11-15"\n')


def s(seconds: float) -> float:
    return round(seconds, 3)


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 2) if baseline else None


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def write_config(folder: Path, name: str = "config.toml", extra: str = "") -> Config:
    path = folder / name
    path.write_text(f'timezone = "America/Chicago"\n[storage]\ndatabase = "spendwatch.duckdb"\n'
                    f'[[organizations]]\nname = "{ORG}"\ncuts = []\n{extra}', encoding="utf-8")
    path.chmod(0o600)
    os.environ.setdefault("ANTHROPIC_ADMIN_KEY", "sk-ant-admin01-bench")  # never used here
    return load_config(path)


def start_of(months: int) -> datetime:
    year, month = divmod(END.year * 12 + END.month - 1 - months, 12)
    return END.replace(year=year, month=month + 1)


# --- the load ----------------------------------------------------------------------------------

def arrow_of(rows: list[Any], columns: list[str], provisional_after: datetime) -> pa.Table:
    """The rows as write_window stores them, for the baseline's bulk INSERT."""
    values: dict[str, list[Any]] = {c: [] for c in columns}
    for row in rows:
        for c in columns:
            values[c].append(row.row_key if c == "row_key" else
                             row.bucket_end > provisional_after if c == "provisional" else
                             END if c == "fetched_at" else getattr(row, c))
    types = {"amount_usd": pa.decimal128(38, 12), "list_amount_usd": pa.decimal128(38, 12)}
    return pa.table({c: pa.array(v, types.get(c, pa.string() if all(x is None for x in v)
                                               else None)) for c, v in values.items()})


def load(config: Config, months: int, keys: int = 400, workspaces: int = 40,
         models: int = len(MODELS)) -> dict[str, Any]:
    """``months`` of the organization collected as a user's ``spendwatch collect --since``
    does: ``bench/_serve.py`` (the simulator's server, this organization behind it) in its
    own process, the real ``collect`` (the SDK over HTTP, paging, parsing, ``write_windows``).
    The parse and write calls are timed where collect makes them (a batch of windows' write
    whole, with its writer's open and checkpoint; each window's own transaction too, for the
    write's growth with history), and every window's rows are
    bulk-loaded as Arrow into a fresh DuckDB file beside it, as the baseline (its time is
    counted apart). Days before the Analytics API's history (365 days, 2026 on) are left out:
    a real organization would have them from the legacy reports."""
    from collectors import clients as collect_clients
    from collectors import sync as collect_sync

    first = max(start_of(months), analytics_floor(END))
    base_path = config.database_path.with_name("baseline.duckdb")
    base_path.unlink(missing_ok=True)
    base = duckdb.connect(str(base_path))
    storage.migrate(base)
    columns = {t: [r[0] for r in base.execute(f"DESCRIBE {t}").fetchall()]
               for t in ("usage_hourly", "cost_buckets")}
    totals = {k: 0.0 for k in ("parse", "write", "arrow", "bulk_insert")}
    counts = {"usage": 0, "cost": 0}
    fetched_windows = {"usage": 0, "cost": 0}
    # per stream: (window start, write_window seconds, bulk INSERT seconds) of each window
    per_window: dict[str, list[tuple[datetime, float, float]]] = {"usage": [], "cost": []}
    real_parse = {"usage": collect_clients.analytics_usage_rows,
                  "cost": collect_clients.analytics_cost_rows}
    real_write = collect_sync.write_windows
    real_window = collect_sync.write_window

    def parse_timed(stream: str) -> Callable[..., Any]:
        def parse(page: Any, organization: str, where: str) -> Any:
            seconds, rows = timed(lambda: real_parse[stream](page, organization, where))
            totals["parse"] += seconds
            return rows
        return parse

    # Each write_window call of a batch: one transaction, of one fetched window or of several
    # adjacent ones (write_windows writes a backfill's adjacent days as one).
    transactions: list[tuple[Window, float]] = []

    def window_timed(config: Config, organization: str, window: Window, rows: list[Any],
                     *args: Any, **kwargs: Any) -> Any:
        seconds, out = timed(lambda: real_window(config, organization, window, rows,
                                                 *args, **kwargs))
        transactions.append((window, seconds))
        return out

    def write_timed(config: Config, organization: str, fetched: list[Any],
                    *args: Any, **kwargs: Any) -> Any:
        # The batch whole: its writer's open, every window's transaction, the checkpoint.
        seconds, out = timed(lambda: real_write(config, organization, fetched,
                                                *args, **kwargs))
        totals["write"] += seconds
        bulk: list[tuple[Window, float]] = []
        for item in fetched:
            stream, rows = item.window.stream, item.rows
            if stream not in counts:
                continue
            counts[stream] += len(rows)
            fetched_windows[stream] += 1
            table = "usage_hourly" if stream == "usage" else "cost_buckets"
            built, incoming = timed(lambda: arrow_of(rows, columns[table],
                                                     END - timedelta(hours=48)))
            totals["arrow"] += built
            base.register("incoming", incoming)
            inserted, _ = timed(lambda: base.execute(
                f"INSERT INTO {table} SELECT * FROM incoming"))
            base.unregister("incoming")
            totals["bulk_insert"] += inserted
            bulk.append((item.window, inserted))
        for window, took in transactions:
            if window.stream in per_window:  # beside the bulk load of the windows it holds
                per_window[window.stream].append((window.start, took, sum(
                    inserted for w, inserted in bulk if w.stream == window.stream
                    and window.start <= w.start < window.end)))
        transactions.clear()
        return out

    key = "sk-ant-admin01-bench-" + os.urandom(8).hex()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_serve.py"), "--keys", str(keys),
         "--workspaces", str(workspaces), "--models", str(models),
         "--now", END.strftime("%Y-%m-%dT%H:%M:%SZ"), "--admin-key", key],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        collected = write_config(config.path.parent, extra=f'base_url = "{url}"\n')
        os.environ["ANTHROPIC_ADMIN_KEY"] = key
        collect_clients.analytics_usage_rows = parse_timed("usage")
        collect_clients.analytics_cost_rows = parse_timed("cost")
        collect_sync.write_windows = write_timed
        collect_sync.write_window = window_timed
        started = time.perf_counter()
        try:
            (result,) = collect_sync.collect(
                collected, collect_sync.CollectOptions(since=first), now=END)
        finally:
            collect_clients.analytics_usage_rows = real_parse["usage"]
            collect_clients.analytics_cost_rows = real_parse["cost"]
            collect_sync.write_windows = real_write
            collect_sync.write_window = real_window
        wall = time.perf_counter() - started
        spent = wall - totals["arrow"] - totals["bulk_insert"]  # collect's own time
        if not result.ok:
            sys.exit(f"the collection failed: {result.error}")
        served = requests.get(url + "/_sim/requests", timeout=60).json()
    finally:
        server.kill()
        server.wait(timeout=30)
    base.execute("CHECKPOINT")
    base.close()
    asked = [r for r in served if r["path"].startswith("/v1/organizations/analytics/")]
    rows = counts["usage"] + counts["cost"]
    return {
        "through": "spendwatch collect over HTTP (bench/_serve.py)",
        "first_day": first.date().isoformat(), "collect_wall_s": s(wall),
        "load_wall_s": s(spent), "days": (END - first).days,
        "windows": fetched_windows["usage"], "requests": len(asked),
        "write_transactions": {k: len(v) for k, v in per_window.items()},
        "collect_rows_per_s": round((counts["usage"] + counts["cost"]) / spent),
        "ratio_collect_to_bulk_insert": ratio(spent, totals["bulk_insert"]),
        "usage_rows": counts["usage"], "cost_rows": counts["cost"],
        "parse_s": s(totals["parse"]),
        "write_s": s(totals["write"]),
        "rows_per_s": round(rows / (totals["parse"] + totals["write"])),
        "parse_rows_per_s": round(rows / totals["parse"]),
        "write_rows_per_s": round(rows / totals["write"]),
        "baseline_arrow_build_s": s(totals["arrow"]),
        "baseline_bulk_insert_s": s(totals["bulk_insert"]),
        "baseline_rows_per_s": round(rows / totals["bulk_insert"]),
        "ratio_parse_plus_write_to_bulk_insert": ratio(totals["parse"] + totals["write"],
                                                       totals["bulk_insert"]),
        "ratio_write_to_bulk_insert": ratio(totals["write"], totals["bulk_insert"]),
        "write_per_window_p50_s": {k: growth(v, 30 if months > 1 else 7)
                                   for k, v in per_window.items()},
    }


def growth(windows: list[tuple[datetime, float, float]], span: int) -> dict[str, Any]:
    """Median write_window and bulk INSERT seconds per transaction (a window, or a batch's
    adjacent windows written as one), in blocks of ``span`` days by their first day, counted
    back from the last one, and the median of each transaction's write over its rows' bulk
    load: does the write slow down as history grows, more than the baseline does?"""
    ordered = sorted(windows)
    last = ordered[-1][0]
    blocks: list[list[tuple[datetime, float, float]]] = []
    edge = last - timedelta(days=span - 1)
    while True:
        block = [w for w in ordered if edge <= w[0] < edge + timedelta(days=span)]
        if block:
            blocks.insert(0, block)
        if edge <= ordered[0][0]:
            break
        edge -= timedelta(days=span)
    if len(blocks) > 1 and blocks[0][0][0] > edge:
        blocks = blocks[1:]  # whole blocks only: the first one starts with the history
    writes = [statistics.median(w for _, w, _ in b) for b in blocks]
    inserts = [statistics.median(i for _, _, i in b) for b in blocks]
    ratios = [statistics.median(w / i for _, w, i in b if i) for b in blocks]
    return {"block_days": span, "transactions": [len(b) for b in blocks],
            "write": [s(w) for w in writes], "bulk_insert": [s(i) for i in inserts],
            "write_ratio_last_to_first": ratio(writes[-1], writes[0]),
            "bulk_insert_ratio_last_to_first": ratio(inserts[-1], inserts[0]),
            "write_to_bulk_insert_first": round(ratios[0], 2),
            "write_to_bulk_insert_last": round(ratios[-1], 2)}


# --- the queries ---------------------------------------------------------------------------

def days(config: Config) -> dict[str, date]:
    today = local_today(END, config.tz)
    return {"today": today, "since7": today - timedelta(days=6)}


def with_batch(config: Config, func: Callable[[Batch], Any]) -> Any:
    """``func`` on a reader batch opened as the dashboard, the CLI and the worker open one."""
    return read(config, func)


def plain(config: Config, since: date, until: date, by: str) -> Callable[[Batch], Any]:
    """The baseline: tokens and amounts summed ``by`` over the local days, in plain SQL."""
    start, end = local_range(since, until, config.tz)

    def run(batch: Batch) -> Any:
        where = "organization = ? AND bucket_start >= ? AND bucket_start < ?"
        span = [ORG, start, end]
        usage = batch.conn.execute(
            f"SELECT {by}, sum(uncached_input_tokens), sum(cache_write_5m_tokens), "
            f"sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(output_tokens) "
            f"FROM usage_hourly WHERE {where} GROUP BY ALL", span).fetchall()
        cost = batch.conn.execute(f"SELECT {by}, sum(amount_usd), sum(list_amount_usd) "
                                  f"FROM cost_buckets WHERE {where} GROUP BY ALL",
                                  span).fetchall()
        return usage, cost
    return run


def weekly_by(config: Config) -> str:
    return (f"(bucket_start AT TIME ZONE '{config.tz.key}')::DATE, workspace_id, api_key_id, "
            "model, service_tier")


def last_week(config: Config) -> tuple[date, date]:
    return weekly.iso_week_range(weekly.last_complete_week(END, config.tz))


def overview_page(config: Config, batch: Batch) -> None:
    today = days(config)["today"]
    first, savings_until = today.replace(day=1), today - DAY
    views.has_data(batch)  # the figures app/pages/overview.py reads, in its order
    views.month_to_date(batch, END)
    views.cache_hit_ratio(batch, first, today)
    history.firing_alerts(batch.conn, END)
    views.freshness(batch, END)
    views.daily_spend(batch, today - timedelta(days=29), today)
    views.savings_headline(batch, savings_until - timedelta(days=29), savings_until)
    views.last_month(batch, END)


def spend_page(config: Config, batch: Batch) -> None:
    since, until = days(config)["since7"], days(config)["today"]
    keep: dict = {}
    views.dimension_values(batch, since, until)
    views.spend(batch, since, until, ("period", "cache_status", "cost_basis"), keep, "day")
    views.spend(batch, since, until, ("period", "model"), keep, "day")
    views.top_spenders(batch, since, until, "model", keep, 15, END)
    views.compared_total(batch, since, until, keep, END)


def caching_page(config: Config, batch: Batch) -> None:
    since, until = days(config)["since7"], days(config)["today"]
    views.cache_series(batch, since, until, next(iter(views.CACHE_GROUPS)), "day")
    hourly = views.cache_series(batch, since, until, "feature and model", "hour")
    views.spend(batch, since, until, ("cache_status",))
    views.cache_hit_ratio(batch, since, until)
    views.cache_waste(batch, since, until)
    views.cache_ratio_drops(hourly)


def reports_page(config: Config, batch: Batch) -> None:
    since, until = days(config)["since7"], days(config)["today"]
    by = ("date", "feature", "model")
    views.dimension_values(batch, since, until)
    views.spend(batch, since, until, by, {})
    views.spend(batch, since, until, ("date", "feature"), {})
    # Both CSV files are built when their download button is clicked, not on a page run
    # (app/pages/reports.py); the weekly CSV is measured on its own (weekly_rows).
    report_history.report_runs(batch.conn, 20)


def savings_page(config: Config, batch: Batch) -> None:
    until = days(config)["today"] - DAY
    views.savings_view(batch, until - timedelta(days=29), until)


def alerts_page(config: Config, batch: Batch) -> None:
    history.firing_alerts(batch.conn, END)
    history.recent_episodes(batch.conn, END - timedelta(days=14))
    history.delivery_attempts(batch.conn, 100)
    history.notification_counts(batch.conn)
    history.broken_channels(batch.conn)
    history.silences(batch.conn, END)
    history.alert_scopes(batch.conn)


def run_page(config: Config, page: Callable[[Config, Batch], None]) -> None:
    """One page's queries on one fresh Batch, as app.data.load does for a page run."""
    with_batch(config, lambda batch: page(config, batch))


PAGES = {"overview": overview_page, "spend": spend_page, "caching": caching_page,
         "savings": savings_page, "reports": reports_page, "alerts": alerts_page}
#: The dashboard's pages rendered cold (app/pages); "people" needs the people cuts, which the
#: synthetic organization does not have.
APP_PAGES = ("spend", "caching", "savings", "reports", "alerts")  # and Overview


def child(kind: str, config_path: str) -> None:
    """One job in a fresh process (``--child``): prints its seconds and peak memory."""
    config = load_config(Path(config_path))
    if kind == "apptest":
        print(json.dumps({**apptest(config_path), "peak_rss_mb": peak_mb()}))
        return
    def pages() -> None:
        for page in PAGES.values():
            run_page(config, page)

    jobs: dict[str, Callable[[], Any]] = {
        "pages": pages,
        "weekly": lambda: with_batch(config, lambda b: weekly.weekly_rows(
            b, *last_week(config), ORG)),
        "baseline": lambda: with_batch(config, lambda b: (
            plain(config, days(config)["since7"], days(config)["today"], "model, api_key_id")(b),
            plain(config, *last_week(config), weekly_by(config))(b))),
    }
    seconds, _ = timed(jobs[kind])
    print(json.dumps({"seconds": s(seconds), "peak_rss_mb": peak_mb(), "ru_maxrss_mb": round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def peak_mb() -> float | None:
    """This process's peak resident memory since it started (VmHWM). Not ru_maxrss: Linux
    carries the parent's resident size at fork into the child's ru_maxrss across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def apptest(config_path: str) -> dict[str, Any]:
    """Overview (the first run), then every other page with an empty cache, through AppTest."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    os.environ["SPENDWATCH_CONFIG"] = config_path
    os.environ["SPENDWATCH_NOW"] = END.strftime("%Y-%m-%dT%H:%M:%SZ")
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=1800)
    first_s, _ = timed(at.run)
    out: dict[str, Any] = {"first_run_s": s(first_s)}  # imports, the door, Overview
    for page in ("overview", *APP_PAGES):
        st.cache_data.clear()
        seconds, _ = timed(lambda: at.switch_page(f"pages/{page}.py").run())
        out[f"{page}_cold_s"] = s(seconds)
    out["exceptions"] = [e.value for e in at.exception]
    out["errors"] = [e.value for e in at.error]
    return out


def in_child(kind: str, config: Config) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(config.path)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:], "stderr_tail": done.stderr[-3000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def percentiles(config: Config, func: Callable[[Batch], Any]) -> dict[str, float]:
    runs = sorted(timed(lambda: with_batch(config, func))[0] for _ in range(RUNS))
    return {"p50_s": s(statistics.median(runs)),
            "p95_s": s(runs[min(len(runs) - 1, round(0.95 * (len(runs) - 1)))])}


def reprice(config: Config, folder: Path) -> dict[str, Any]:
    """ensure_current with one extra price row, inside a writer transaction rolled back
    afterwards (the file keeps its prices); baseline: every usage row priced in plain SQL."""
    changed = price_table(write_config(folder, "config-repriced.toml", EXTRA_PRICE).prices)

    class Undo(Exception):
        pass

    def rolled_back(func: Callable[[duckdb.DuckDBPyConnection], Any]) -> tuple[float, Any]:
        out: list[tuple[float, Any]] = []
        with contextlib.suppress(Undo), storage.writer(config) as conn, \
                storage.transaction(conn):
            out.append(timed(lambda: func(conn)))
            raise Undo
        return out[0]

    def plain_sql(conn: duckdb.DuckDBPyConnection) -> None:
        models = [m for (m,) in conn.execute("SELECT DISTINCT model FROM usage_hourly "
                                             "WHERE model IS NOT NULL").fetchall()]
        comps = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
        values = ", ".join(f"('{m}', " + ", ".join(
            str(changed.price(m, c, END.date()) or 0) for c in comps) + ")" for m in models)
        conn.execute(f"""CREATE TEMP TABLE repriced AS SELECT u.row_key,
            u.uncached_input_tokens * p.i / 1e6 * b AS input_usd,
            u.cache_write_5m_tokens * p.w5 / 1e6 * b AS w5_usd,
            u.cache_write_1h_tokens * p.w1 / 1e6 * b AS w1_usd,
            u.cache_read_tokens * p.r / 1e6 * b AS read_usd,
            u.output_tokens * p.o / 1e6 * b AS output_usd
            FROM (SELECT *, CASE service_tier WHEN 'batch' THEN 0.5 ELSE 1 END AS b
                  FROM usage_hourly) u
            JOIN (VALUES {values}) p(model, i, w5, w1, r, o) USING (model)""")

    seconds, repriced = rolled_back(lambda conn: estimates.ensure_current(conn, changed))
    baseline, _ = rolled_back(plain_sql)
    return {"ensure_current_s": s(seconds), "repriced": repriced,
            "baseline_plain_sql_s": s(baseline), "ratio": ratio(seconds, baseline)}


GROUPINGS = (["model"], ["feature"], ["api_key", "cache_status"],
             ["model", "feature", "api_key", "cache_status"])
#: Where the 7-day ranges end, in days back from the last one (those inside the loaded data).
RANGE_ENDS = (0, 30, 90, 180, 300)


def spend_ranges(config: Config) -> list[tuple[date, date]]:
    today = days(config)["today"]
    with storage.reader(config) as conn:
        (first,) = conn.execute("SELECT min(bucket_start) FROM usage_hourly").fetchone()
    oldest = local_today(first, config.tz) + DAY
    ends = [today - timedelta(days=n) for n in RANGE_ENDS]
    return [(end - timedelta(days=6), end) for end in ends if end - timedelta(days=6) >= oldest]


def spend_varied(config: Config) -> dict[str, Any]:
    """spend() over 7 local days at every range end and grouping, each run beside the plain
    GROUP BY of the same range; p50/p95 of each and of their ratios (fresh reader each). A
    history shorter than the range ends repeats its ranges, so every load gets as many runs."""
    runs, bases, ratios = [], [], []
    by_range: dict[str, list[float]] = {}
    ranges = spend_ranges(config)
    # As many runs whatever the history: a short one repeats its ranges. One warm-up first
    # (the file's first read, the process's first query), not counted.
    slots = [ranges[i % len(ranges)] for i in range(len(RANGE_ENDS))]
    with_batch(config, lambda b: spend(b, *ranges[0], GROUPINGS[-1]))
    for since, until in slots:
        for by in GROUPINGS:
            base, _ = timed(lambda: with_batch(config, plain(config, since, until,
                                                             "model, api_key_id")))
            seconds, _ = timed(lambda: with_batch(config, lambda b: spend(b, since, until, by)))
            runs.append(seconds)
            bases.append(base)
            ratios.append(seconds / base)
            by_range.setdefault(f"{since}..{until}", []).append(seconds)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    return {"runs": len(runs), "groupings": [",".join(g) for g in GROUPINGS],
            "p50_s": s(statistics.median(runs)), "p95_s": s(pct(runs, 0.95)),
            "baseline_p50_s": s(statistics.median(bases)), "baseline_p95_s": s(pct(bases, 0.95)),
            "ratio_p50": round(statistics.median(ratios), 2),
            "ratio_p95": round(pct(ratios, 0.95), 2),
            "median_s_by_range": {k: s(statistics.median(v)) for k, v in by_range.items()}}


PAGE_RUNS = 5


def alert_rules(scopes_feature: int) -> str:
    """Rules with more than 1,000 scopes on the synthetic organization: cache hit ratio per
    feature at three floors (one scope per key), per model, and cost drift per model and day."""
    rules = []
    for name, floor, per in (("cache per feature", "0.5", "feature"),
                             ("cache per feature, mid", "0.4", "feature"),
                             ("cache per feature, low", "0.3", "feature"),
                             ("cache per model", "0.5", "model")):
        rules.append(f'[[alerts.rules]]\nname = "{name}"\nkind = "cache_hit_ratio"\n'
                     f'floor = {floor}\nper = "{per}"\nmin_input_tokens = 1\n'
                     'channels = []\n')
    rules.append('[[alerts.rules]]\nname = "drift"\nkind = "cost_drift"\n'
                 'threshold_percent = "5"\ndays = 30\nchannels = []\n')
    rules.append('[[alerts.rules]]\nname = "daily"\nkind = "daily_spend"\n'
                 'threshold_usd = "100000"\nchannels = []\n')
    return "".join(rules)


def alerts_bench(config: Config, folder: Path) -> dict[str, Any]:
    """One alert check (evaluate every rule, apply the state machine) over the rules of
    :func:`alert_rules`, beside the plain GROUP BY of their last 30 days."""
    from alerts.machine import evaluate_and_record
    from alerts.model import CheckReport
    ruled = write_config(folder, "config-alerts.toml", alert_rules(400))
    with storage.writer(ruled) as conn, storage.transaction(conn):  # as if never checked
        for table in ("alert_notifications", "alert_transitions", "alert_episodes",
                      "alert_states"):
            conn.execute(f"DELETE FROM {table}")
    report = CheckReport()
    seconds, _ = timed(lambda: evaluate_and_record(ruled, END, report))
    opened = len(report.transitions)
    again, _ = timed(lambda: evaluate_and_record(ruled, END + timedelta(minutes=5),
                                                 CheckReport()))
    d = days(config)
    base_s, _ = timed(lambda: with_batch(config, plain(config, d["today"] - timedelta(days=29),
                                                        d["today"], "model, api_key_id")))
    return {"scopes": len({(e.rule, e.scope_key) for e in report.evaluations}),
            "evaluations": len(report.evaluations), "seconds": s(seconds),
            "transitions": opened, "second_check_s": s(again),
            "baseline_group_by_s": s(base_s), "ratio": ratio(seconds, base_s)}


def scheduled_run() -> dict[str, Any]:
    """A routine run's requests against the paging minimum: the local simulator (the small
    organization, over HTTP through the SDK), 3 days collected, then a run an hour later with
    a small page limit so its re-read range needs several pages."""
    from _setup import KEY
    from collectors.simulator import start_simulator
    from collectors.sync import CollectOptions, collect
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as folder, start_simulator(admin_keys=[KEY], now=now) \
            as sim:
        path = Path(folder) / "config.toml"
        path.write_text(f'timezone = "America/Chicago"\n[collection]\npage_limit = 200\n'
                        f'[[organizations]]\nname = "bench"\nbase_url = "{sim.url}"\n'
                        'cuts = []\n', encoding="utf-8")
        path.chmod(0o600)
        os.environ["ANTHROPIC_ADMIN_KEY"] = KEY
        config = load_config(path)
        (first,) = collect(config, CollectOptions(since=now - timedelta(days=3)),
                           now=now - timedelta(minutes=30))
        assert first.ok, first.error
        sim.clear_requests()
        seconds, (result,) = timed(lambda: collect(config, CollectOptions(), now=now))
        assert result.ok, result.error
        served = sim.requests()
        since = now - timedelta(hours=config.collection.usage_lookback_hours)
        since = since.replace(hour=0, minute=0, second=0, microsecond=0)
        with storage.reader(config) as conn:
            usage, cost = (conn.execute(f"SELECT count(*) FROM {t} WHERE bucket_start >= ?",
                                        [since]).fetchone()[0]
                           for t in ("usage_hourly", "cost_buckets"))
    by_path: dict[str, int] = {}
    for r in served:
        by_path[r["path"]] = by_path.get(r["path"], 0) + 1
    usage_requests = by_path.get("/v1/organizations/analytics/usage", 0)
    return {"seconds": s(seconds), "requests": sum(by_path.values()), "by_path": by_path,
            "usage_rows_reread": usage, "cost_rows_reread": cost,
            "usage_requests": usage_requests, "usage_paging_minimum": -(-usage // 200),
            "page_limit": 200}


def measure(config: Config, folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["spend_7_days"] = spend_varied(config)
    base_runs = sorted(timed(lambda: with_batch(config, plain(
        config, days(config)["since7"], days(config)["today"], "model, api_key_id")))[0]
        for _ in range(PAGE_RUNS))
    pages: dict[str, Any] = {}
    for name, page in PAGES.items():
        runs = sorted(timed(partial(run_page, config, page))[0] for _ in range(PAGE_RUNS))
        pages[name] = {"p50_s": s(statistics.median(runs)), "p95_s": s(runs[-1])}
    out["pages_queries"] = {**pages, "runs": PAGE_RUNS,
                            "baseline_7_day_group_by_p50_s": s(statistics.median(base_runs))}
    out["apptest"] = in_child("apptest", config)
    base_child = in_child("baseline", config)
    pages_child = in_child("pages", config)
    weekly_child = in_child("weekly", config)
    base_mb = base_child.get("peak_rss_mb") or 0
    out["memory"] = {"pages_process": pages_child, "weekly_process": weekly_child,
                     "baseline_process": base_child}
    for name, job in (("pages", pages_child), ("weekly", weekly_child)):
        mb = job.get("peak_rss_mb") or 0
        out["memory"][f"ratio_{name}"] = ratio(mb, base_mb)
        out["memory"][f"{name}_over_baseline_mb"] = round(mb - base_mb, 1)
    monday, sunday = last_week(config)
    seconds, rows = timed(lambda: with_batch(config, lambda b: weekly.weekly_rows(
        b, monday, sunday, ORG)))
    base_s, _ = timed(lambda: with_batch(config, plain(config, monday, sunday,
                                                        weekly_by(config))))
    out["weekly_rows"] = {"week": f"{monday}..{sunday}", "rows": len(rows), "seconds": s(seconds),
                          "baseline_group_by_s": s(base_s), "ratio": ratio(seconds, base_s)}
    d = days(config)
    with storage.reader(config) as conn:
        (first,) = conn.execute("SELECT min(bucket_start) FROM usage_hourly").fetchone()
    since = max(local_today(first, config.tz), d["today"] - timedelta(days=364))
    seconds, _ = timed(lambda: with_batch(config, lambda b: views.savings_view(
        b, since, d["today"])))
    base_s, _ = timed(lambda: with_batch(config, plain(config, since, d["today"],
                                                        "model, service_tier")))
    out["savings_ledger"] = {"since": str(since), "until": str(d["today"]), "seconds": s(seconds),
                             "baseline_group_by_s": s(base_s), "ratio": ratio(seconds, base_s)}
    out["alerts"] = alerts_bench(config, folder)
    out["scheduled_run"] = scheduled_run()
    out["reprice"] = reprice(config, folder)
    database = config.database_path
    baseline_file = database.with_name("baseline.duckdb")
    size = database.stat().st_size
    with storage.reader(config) as conn:
        tables = [t for (t,) in conn.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_type = 'BASE TABLE' ORDER BY 1"
                                             ).fetchall()]
        stored = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    out["storage"] = {"file_mb": round(size / 1e6, 1),
                      "rows": {k: v for k, v in stored.items() if v}}
    if baseline_file.exists():
        out["storage"]["baseline_file_mb"] = round(baseline_file.stat().st_size / 1e6, 1)
        out["storage"]["ratio"] = ratio(size, baseline_file.stat().st_size)
    return out


def code_state() -> dict[str, Any]:
    """The commit measured, and the files changed in the work tree beside it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout
    return {"head": git("rev-parse", "--short", "HEAD").strip(),
            "changed": [line[3:] for line in git("status", "--porcelain").splitlines()
                        if not line[3:].startswith("bench/")]}


MANIFEST = "loaded.json"


def generate(folder: Path, months: int, keys: int, workspaces: int, models: int) -> dict[str, Any]:
    """Write ``folder/config.toml`` and load the warehouse it names (``folder/loaded.json``
    records what was loaded and the ingest figures). Refuses a folder already loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / MANIFEST).exists():
        sys.exit(f"{folder} already holds a load ({folder / MANIFEST}); use another --out")
    config = write_config(folder)
    for stale in (config.database_path,
                  config.database_path.with_name(config.database_path.name + ".wal")):
        stale.unlink(missing_ok=True)
    built = {"months": months, "keys": keys, "workspaces": workspaces, "models": models,
             "code_at_load": code_state(),
             "ingest": load(config, months, keys, workspaces, models)}
    (folder / MANIFEST).write_text(json.dumps(built), encoding="utf-8")
    return built


def run(folder: Path) -> dict[str, Any]:
    """Every measurement on the warehouse ``generate`` loaded into ``folder``; the result is
    written to ``bench/results/scale-<months>m.json`` and ``bench/RESULTS.md`` is rebuilt."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        sys.exit(f"{folder} holds no finished load: run bench/generate.py --out {folder} first")
    built = json.loads(manifest.read_text(encoding="utf-8"))
    config = write_config(folder)
    result = {"months": built["months"], "keys": built.get("keys", 400),
              "workspaces": built.get("workspaces", 40), "models": built.get("models", 10),
              "now": END.isoformat(), "measured_at": datetime.now(timezone.utc).isoformat(),
              "machine": machine(), "code": code_state(),
              "code_at_load": built.get("code_at_load"), "ingest": built["ingest"],
              **measure(config, folder)}
    out = ROOT / "bench" / "results" / f"scale-{built['months']}m.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    return result


def machine() -> dict[str, Any]:
    import platform
    memory = next((int(line.split()[1]) // 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), None)
    return {"cpus": os.cpu_count(), "memory_mb": memory, "python": platform.python_version(),
            "duckdb": duckdb.__version__, "system": platform.platform()}


def child_main() -> None:
    """``python bench/_scale.py --child KIND CONFIG``: one job in a fresh process."""
    child(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    child_main()
