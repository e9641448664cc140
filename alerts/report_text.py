"""The words of the weekly report's summary, shared by the Slack and email channels.

A summary is a list of sections (a heading and its lines). A section that has nothing to say
is left out, never shown empty; an empty week is one line.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from alerts.model import Mover, WeeklyReport
from alerts.slack import format_time, format_value


# alerts.email zips a CSV above this: mail servers commonly refuse 10 to 25 MB.
ZIP_ABOVE_BYTES = 5_000_000


def usd(value: Decimal) -> str:
    return format_value(value, "usd")


def previous_week(report: WeeklyReport) -> str:
    year, number, _ = (report.since - timedelta(days=7)).isocalendar()
    return f"{year}-W{number:02d}"


def change_text(now: Decimal, before: Decimal) -> str:
    """``up $134.50 (+12.2%)``, ``down $3.00 (-50.0%)``, ``unchanged``, ``up $5.00 (new)``."""
    change = now - before
    if not change:
        return "unchanged"
    direction = "up" if change > 0 else "down"
    percent = f"{change / before * 100:+.1f}%" if before else "new"
    return f"{direction} {usd(abs(change))} ({percent})"


def empty_line(report: WeeklyReport) -> str:
    return (f"No spend recorded for {report.organization} in {report.week} "
            f"({report.period}, {report.timezone}).")


def headline(report: WeeklyReport) -> str:
    """``acme spent $1,234.56 in 2026-W47 (Mon 16 Nov - Sun 22 Nov 2026, America/Chicago).``"""
    return (f"{report.organization} spent {usd(report.total_usd)} in {report.week} "
            f"({report.period}, {report.timezone}).")


def _mover_line(mover: Mover) -> str:
    return f"{mover.label}: {usd(mover.cost_usd)}, " \
           f"{change_text(mover.cost_usd, mover.previous_usd)}"


def sections(report: WeeklyReport, attached: bool) -> list[tuple[str, list[str]]]:
    """The summary's sections after the headline: (heading, lines), empty ones left out.

    ``attached``: the CSV goes with the message (email) rather than staying on the server.
    """
    if report.empty:
        return []
    out: list[tuple[str, list[str]]] = []
    if report.previous_usd is not None:
        out.append(("Change", [f"{change_text(report.total_usd, report.previous_usd)} on "
                               f"{previous_week(report)} ({usd(report.previous_usd)})"]))
    for dimension in ("feature", "model"):
        movers = [m for m in report.movers if m.dimension == dimension]
        if movers:
            out.append((f"Top movers by {dimension}", [_mover_line(m) for m in movers]))
    if report.cache_hit_ratio is not None:
        out.append(("Cache-hit ratio", [f"{format_value(report.cache_hit_ratio, 'ratio')} of "
                                        "input tokens were read from the cache"]))
    if report.savings:
        out.append(("Savings", [f"{label}: {usd(value)}" for label, value in report.savings]))
    if report.provisional_until is not None:
        out.append(("Still settling", [
            f"Cost of the week's last days may still change until "
            f"{format_time(report.provisional_until.astimezone(ZoneInfo(report.timezone)))}; "
            "the CSV file is written again then."]))
    big = report.csv_bytes is not None and len(report.csv_bytes) > ZIP_ABOVE_BYTES
    where = (("attached, zipped" if big else "attached") if attached
             else f"on the spendwatch server: {report.csv_path}")
    out.append(("CSV", [f"{report.csv_name} ({report.rows:,} rows), {where}"]))
    return out


def plain_text(report: WeeklyReport, attached: bool) -> str:
    """The summary as plain text (an email body)."""
    if report.empty:
        return empty_line(report) + "\n"
    lines = [headline(report)]
    for heading, body in sections(report, attached):
        lines += ["", f"{heading}:", *(f"  {line}" for line in body)]
    if report.dashboard_url:
        lines += ["", f"Open in spendwatch: {report.dashboard_url}"]
    return "\n".join(lines) + "\n"
