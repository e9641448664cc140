"""``bench/RESULTS.md`` from the results in ``bench/results/`` (written by ``bench/run.py``).

Every figure in the table is read from a result file as measured; "met" is decided here from
the goals of issue 13, so a figure that misses its goal says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "bench" / "RESULTS.md"
PAGES = ("overview", "spend", "caching", "savings", "reports", "alerts")


def _load() -> dict[int, dict[str, Any]]:
    found = {}
    for path in sorted(RESULTS.glob("scale-*m.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "spend_7_days" in data and "runs" in data["spend_7_days"]:  # this suite's shape
            found[int(data["months"])] = data
    return found


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return text + unit


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def _row(what: str, small: str, large: str, goal: str, ok: bool | None) -> str:
    return f"| {what} | {small} | {large} | {goal} | {_met(ok)} |"


def table(by_months: dict[int, dict[str, Any]]) -> list[str]:
    small = by_months.get(1)
    large = by_months.get(max(by_months)) if by_months else None

    def both(*path: str, unit: str = " s") -> tuple[str, str]:
        return _fmt(_get(small, *path), unit), _fmt(_get(large, *path), unit)

    def check(value: Any, test: Callable[[Any], bool]) -> bool | None:
        return None if value is None else test(value)

    lines = ["| what | 1 month | 12 months | goal | |", "|---|---|---|---|---|"]
    p95 = _get(large, "spend_7_days", "p95_s")
    r95 = _get(large, "spend_7_days", "ratio_p95")
    lines.append(_row(
        "spend over 7 days, p50 / p95 (ranges across the year x 4 groupings)",
        f"{_fmt(_get(small, 'spend_7_days', 'p50_s'))} / {_fmt(_get(small, 'spend_7_days', 'p95_s'))} s",
        f"{_fmt(_get(large, 'spend_7_days', 'p50_s'))} / {_fmt(p95)} s",
        "p95 <= 0.1 s", check(p95, lambda v: v <= 0.1)))
    lines.append(_row(
        "the same, as a ratio to a plain GROUP BY of the same rows, p50 / p95",
        f"{_fmt(_get(small, 'spend_7_days', 'ratio_p50'))}x / "
        f"{_fmt(_get(small, 'spend_7_days', 'ratio_p95'))}x",
        f"{_fmt(_get(large, 'spend_7_days', 'ratio_p50'))}x / {_fmt(r95)}x",
        "<= 1.5x", check(r95, lambda v: v <= 1.5)))
    s1, s12 = _get(small, "spend_7_days", "p50_s"), _get(large, "spend_7_days", "p50_s")
    b1, b12 = (_get(small, "spend_7_days", "baseline_p50_s"),
               _get(large, "spend_7_days", "baseline_p50_s"))
    grows = round(s12 / s1, 2) if s1 and s12 else None
    base_grows = round(b12 / b1, 2) if b1 and b12 else None
    lines.append(_row(
        "spend over 7 days at 12 months / at 1 month (p50; a plain GROUP BY of the same rows "
        f"grew {_fmt(base_grows, 'x')} in the same runs)", "1x", _fmt(grows, "x"),
        "the same (<= 1.2x, or no more than the plain GROUP BY grew)",
        check(grows, lambda v: v <= max(1.2, (base_grows or 0) * 1.1))))
    for page in PAGES:
        a, b = both("pages_queries", page, "p50_s")
        value = _get(large, "pages_queries", page, "p50_s")
        lines.append(_row(f"{page} page: its queries, once (p50 of 5)", a, b, "<= 0.5 s",
                          check(value, lambda v: v <= 0.5)))
    for page in PAGES:
        key = f"{page}_cold_s"
        a, b = both("apptest", key)
        value = _get(large, "apptest", key)
        lines.append(_row(f"{page} page rendered cold (AppTest)", a, b, "<= 1 s",
                          check(value, lambda v: v <= 1)))
    m1 = _get(small, "memory", "pages_process", "peak_rss_mb")
    m12 = _get(large, "memory", "pages_process", "peak_rss_mb")
    lines.append(_row("peak memory of a process running every page's queries (VmHWM)",
                      _fmt(m1, " MB"), _fmt(m12, " MB"), "<= 300 MB, the same at 1 and 12",
                      None if m12 is None or m1 is None else
                      m12 <= 300 and m1 <= 300 and m12 <= m1 * 1.1))
    base = _get(large, "memory", "baseline_process", "peak_rss_mb")
    lines.append(_row("  the same process running only plain GROUP BYs (imports included)",
                      _fmt(_get(small, "memory", "baseline_process", "peak_rss_mb"), " MB"),
                      _fmt(base, " MB"), "(baseline)", None))
    d1 = _get(small, "apptest", "peak_rss_mb")
    d12 = _get(large, "apptest", "peak_rss_mb")
    lines.append(_row("  a dashboard process (Streamlit, with the pandas and Altair of its "
                      "charts) rendering every page once, cold (AppTest)",
                      _fmt(d1, " MB"), _fmt(d12, " MB"), "<= 300 MB, the same at 1 and 12",
                      None if d12 is None or d1 is None else
                      d12 <= 300 and d1 <= 300 and d12 <= d1 * 1.1))
    weekly = _get(large, "weekly_rows", "seconds")
    lines.append(_row("weekly report rows", *both("weekly_rows", "seconds"), "<= 0.5 s",
                      check(weekly, lambda v: v <= 0.5)))
    lines.append(_row("  peak memory of a process building them",
                      *both("memory", "weekly_process", "peak_rss_mb", unit=" MB"),
                      "flat", None))
    ledger = _get(large, "savings_ledger", "seconds")
    lines.append(_row("savings ledger over the stored year (up to 365 days)",
                      *both("savings_ledger", "seconds"), "<= 0.5 s",
                      check(ledger, lambda v: v <= 0.5)))
    ingest = _get(large, "ingest", "ratio_parse_plus_write_to_bulk_insert")
    lines.append(_row("ingest: parse + window write, as a multiple of DuckDB's bulk load",
                      _fmt(_get(small, "ingest", "ratio_parse_plus_write_to_bulk_insert"), "x"),
                      _fmt(ingest, "x"), "<= 1.25x (80% of bulk)",
                      check(ingest, lambda v: v <= 1.25)))
    whole = _get(large, "ingest", "ratio_collect_to_bulk_insert")
    lines.append(_row("  the whole collection (HTTP, SDK, paging, parsing, writes: "
                      "`collect --since`), as a multiple of the same bulk load",
                      _fmt(_get(small, "ingest", "ratio_collect_to_bulk_insert"), "x"),
                      _fmt(whole, "x"), "(no goal set)", None))
    for stream in ("usage", "cost"):
        per = _get(large, "ingest", "write_per_window_p50_s", stream) or {}
        first, last = per.get("write_to_bulk_insert_first"), per.get("write_to_bulk_insert_last")
        flat = round(last / first, 2) if first and last else None
        lines.append(_row(
            f"  a {stream} write (one transaction: a batch's adjacent windows) over the bulk "
            "load of its rows, first month -> last month, medians (the write alone grew {}x, "
            "the bulk load {}x, same run)".format(
                per.get("write_ratio_last_to_first"), per.get("bulk_insert_ratio_last_to_first")),
            "-", f"{_fmt(first, 'x')} -> {_fmt(last, 'x')} ({_fmt(flat, 'x')})",
            "flat (<= 1.2x)", check(flat, lambda v: v <= 1.2)))
    reprice = _get(large, "reprice", "ensure_current_s")
    lines.append(_row("reprice every stored row after a price change",
                      *both("reprice", "ensure_current_s"), "<= 2 s",
                      check(reprice, lambda v: v <= 2)))
    run = _get(large, "scheduled_run") or _get(small, "scheduled_run")
    if run:
        lines.append(_row(
            "a scheduled run: usage requests / the paging minimum (simulator, HTTP)",
            f"{run['usage_requests']} / {run['usage_paging_minimum']}", "same simulator",
            "the minimum", run["usage_requests"] <= run["usage_paging_minimum"]))
        lines.append(_row("  its wall time", _fmt(run["seconds"], " s"), "", "<= 2 s",
                          run["seconds"] <= 2))
    alerts = _get(large, "alerts")
    if alerts:
        lines.append(_row(f"one alert check over {alerts['scopes']:,} scopes, the first "
                          f"({_fmt(alerts.get('transitions'))} episodes opened)",
                          _fmt(_get(small, "alerts", "seconds"), " s"),
                          _fmt(alerts["seconds"], " s"), "(no goal set)", None))
        lines.append(_row("  the next check, five minutes later",
                          *both("alerts", "second_check_s"), "(no goal set)", None))
    lines.append(_row("file size", *both("storage", "file_mb", unit=" MB"), "", None))
    return lines


def write() -> Path:
    by_months = _load()
    large = by_months.get(max(by_months)) if by_months else {}
    machine = large.get("machine", {})
    lines = [
        "# Bench results",
        "",
        "Written by `python bench/run.py DIR ...` from `bench/results/scale-*m.json`; every "
        "figure is as measured on the machine below, beside a baseline from the same run "
        "(the machines are shared and noisy: compare ratios).",
        "",
        f"- Machine: {machine.get('cpus')} CPUs, {machine.get('memory_mb')} MB, "
        f"{machine.get('system')}, Python {machine.get('python')}, DuckDB "
        f"{machine.get('duckdb')}",
        f"- Measured: {large.get('measured_at')} (code {_get(large, 'code', 'head')})",
        "- Commands: `python bench/generate.py --out DIR --keys 400 --workspaces 40 "
        "--models 10 --months M` (M = 1 and 12), then `python bench/run.py DIR1 DIR12`",
    ]
    for months, data in sorted(by_months.items()):
        ingest = data.get("ingest", {})
        lines.append(f"- {months} month(s): {ingest.get('usage_rows', 0):,} usage rows, "
                     f"{ingest.get('cost_rows', 0):,} cost rows, "
                     f"{_fmt(_get(data, 'storage', 'file_mb'), ' MB')}, "
                     + (f"{ingest['days']} days from {ingest['first_day']}, collected "
                        f"over HTTP in {ingest['requests']:,} requests "
                        f"({ingest['collect_wall_s']:,.0f} s) "
                        if "requests" in ingest else "")
                     + f"(loaded with code {_get(data, 'code_at_load', 'head')})")
    lines += ["", *table(by_months), ""]
    why = ROOT / "bench" / "WHY.md"  # written by hand from the profiles: what misses and why
    if why.exists():
        lines += [why.read_text(encoding="utf-8").rstrip(), ""]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return OUT
