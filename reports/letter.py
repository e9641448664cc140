"""The weekly report's words, and its letter: what every channel sends of a
:class:`reports.summary.WeeklyReport`.

A summary is a list of sections (a heading and its lines). A section that has nothing to say
is left out, never shown empty; an empty week is one line. :func:`letter` writes it once, in
each channel's form (plain text and HTML for email with the CSV attached, Block Kit for Slack
with the file left on the server), as an :class:`alerts.model.Letter` the alerts' outbox
carries.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from alerts.model import Attachment, Letter
from alerts.words import clip, format_time, format_value, mrkdwn, mrkdwn_object
from reports.summary import Mover, WeeklyReport
from spendwatch.numbers import percent, tokens, usd
from spendwatch.text import header_text

Sections = list[tuple[str, list[str]]]


# Email zips a CSV above this: mail servers commonly refuse 10 to 25 MB.
ZIP_ABOVE_BYTES = 5_000_000


def previous_week(report: WeeklyReport) -> str:
    year, number, _ = (report.since - timedelta(days=7)).isocalendar()
    return f"{year}-W{number:02d}"


def change_text(now: Decimal, before: Decimal) -> str:
    """``up $134.50 (+12.2%)``, ``down $3.00 (-50.0%)``, ``unchanged``, ``up $5.00 (new)``."""
    change = now - before
    if not change:
        return "unchanged"
    direction = "up" if change > 0 else "down"
    share = percent(change / before, signed=True) if before else "new"
    return f"{direction} {usd(abs(change))} ({share})"


def empty_line(report: WeeklyReport) -> str:
    return (f"No spend recorded for {report.organization} in {report.week} "
            f"({report.period}, {report.timezone}).")


def headline(report: WeeklyReport) -> str:
    """``acme spent $1,234.56 in 2026-W47 (Mon 16 Nov - Sun 22 Nov 2026, America/Chicago).``"""
    return (f"{report.organization} spent {usd(report.total_usd)} in {report.week} "
            f"({report.period}, {report.timezone}).")


def mover_line(mover: Mover) -> str:
    return f"{mover.label}: {usd(mover.cost_usd)}, " \
           f"{change_text(mover.cost_usd, mover.previous_usd)}"


def mover_sections(movers: tuple[Mover, ...], against: str = "") -> Sections:
    """"Top movers by feature" and "by model" (``against``: what they are compared with, in
    the heading), each left out when nothing moved."""
    out: Sections = []
    for dimension in ("feature", "model"):
        moved = [m for m in movers if m.dimension == dimension]
        if moved:
            out.append((f"Top movers by {dimension}" + (f" (against {against})" if against
                                                        else ""),
                        [mover_line(m) for m in moved]))
    return out


def month_section(at: datetime, timezone: str, month_to_date_usd: Decimal | None,
                  forecast_usd: Decimal | None) -> Sections:
    """"This month": the month to date at ``at`` and the forecast (the Overview's figures);
    nothing when the month is not stored whole."""
    if month_to_date_usd is None:
        return []
    local = at.astimezone(ZoneInfo(timezone))
    return [("This month", [f"{local:%B} to date: {usd(month_to_date_usd)}"
                            + (f"; month-end forecast {usd(forecast_usd)}"
                               if forecast_usd is not None else "")])]


def zipped(report: WeeklyReport) -> bool:
    """Whether the email carries the CSV zipped (see ZIP_ABOVE_BYTES)."""
    return report.csv_size is not None and report.csv_size > ZIP_ABOVE_BYTES


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
    out += mover_sections(report.movers)
    if report.top_people:
        out.append(("Top people", [f"{label}: {usd(value)}" for label, value in
                                   report.top_people]))
    if report.cache_hit_ratio is not None:
        out.append(("Cache-hit ratio", [f"{format_value(report.cache_hit_ratio, 'ratio')} of "
                                        "input tokens were read from the cache"]))
    if report.savings:
        out.append(("Savings", [f"{label}: {usd(value)}" for label, value in report.savings]))
    out += month_section(report.at, report.timezone, report.month_to_date_usd,
                         report.forecast_usd)
    if report.provisional_until is not None:
        out.append(("Still settling", [
            f"Cost of the week's last days may still change until "
            f"{format_time(report.provisional_until.astimezone(ZoneInfo(report.timezone)))}; "
            "the CSV file is written again then."]))
    where = (("attached, zipped" if zipped(report) else "attached") if attached
             else f"on the spendwatch server: {report.csv_path}")
    out.append(("CSV", [f"{report.csv_name} ({tokens(report.rows)} rows), {where}"]))
    return out


def compose_text(head: str, parts: Sections, url: str | None) -> str:
    """A headline, its sections and the dashboard link as plain text (an email body)."""
    lines = [head]
    for heading, body in parts:
        lines += ["", f"{heading}:", *(f"  {line}" for line in body)]
    if url:
        lines += ["", f"Open in spendwatch: {url}"]
    return "\n".join(lines) + "\n"


def compose_html(head: str, parts: Sections, url: str | None) -> str:
    """The same as an HTML page (an email's HTML part), every text escaped."""
    e = html.escape
    out = [f"<p><strong>{e(head)}</strong></p>"]
    for heading, lines in parts:
        items = "".join(f"<li>{e(line)}</li>" for line in lines)
        out.append(f"<p><strong>{e(heading)}</strong></p><ul>{items}</ul>")
    if url:
        out.append(f'<p><a href="{e(url)}">Open in spendwatch</a></p>')
    return f"<!DOCTYPE html><html><body>{''.join(out)}</body></html>\n"


def compose_slack(header: str, head: str, parts: Sections, url: str | None) -> dict[str, Any]:
    """The same as a Block Kit message: a header, the headline, one section per part and a
    button to the dashboard; every text made inert (:func:`alerts.words.mrkdwn`)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": header_text(header, 150)}},
        {"type": "section", "text": mrkdwn_object(clip(mrkdwn(head), 3000))}]
    for heading, lines in parts:
        text = f"*{mrkdwn(heading)}*\n" + "\n".join(f"• {mrkdwn(line)}" for line in lines)
        blocks.append({"type": "section", "text": mrkdwn_object(clip(text, 3000))})
    if url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in spendwatch"},
             "url": url}]})
    text = clip(mrkdwn(head), 3000)
    if url:
        text += f" <{url}|Open in spendwatch>"
    return {"text": text, "blocks": blocks}


def one_line_slack(line: str) -> dict[str, Any]:
    """A Slack message of one line (an empty week, a day without spend)."""
    text = mrkdwn(line)
    return {"text": text, "blocks": [{"type": "section", "text": mrkdwn_object(text)}]}


def plain_text(report: WeeklyReport, attached: bool) -> str:
    """The summary as plain text (an email body)."""
    if report.empty:
        return empty_line(report) + "\n"
    return compose_text(headline(report), sections(report, attached), report.dashboard_url)


def html_text(report: WeeklyReport) -> str:
    """The summary as an HTML page (an email's HTML part; the CSV is attached)."""
    if report.empty:
        return f"<!DOCTYPE html><html><body><p>{html.escape(empty_line(report))}</p>" \
               "</body></html>\n"
    return compose_html(headline(report), sections(report, attached=True),
                        report.dashboard_url)


def slack_message(report: WeeklyReport) -> dict[str, Any]:
    """The Block Kit message: the headline, one section per part of the summary that has
    something to say, and the dashboard link. An empty week is one line."""
    if report.empty:
        return one_line_slack(empty_line(report))
    return compose_slack(f":bar_chart: Weekly spend {report.week}: {report.organization}",
                         headline(report), sections(report, attached=False),
                         report.dashboard_url)


def letter(report: WeeklyReport) -> Letter:
    """The report as the channels send it. Its key is the organization's and the week's, so a
    retry or a resend shows as the same email."""
    total = "no spend" if report.empty else usd(report.total_usd)
    return Letter(
        key=f"report|{report.organization}|{report.week}", title=report.title,
        subject=f"{report.title} ({total})", text=plain_text(report, attached=True),
        html=html_text(report), slack=slack_message(report), at=report.at,
        labels={"organization": report.organization, "week": report.week},
        attachment=Attachment(report.csv_path, report.csv_name, "text/csv", ZIP_ABOVE_BYTES))
