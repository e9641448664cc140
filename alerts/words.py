"""The words every channel uses: values by unit, times, scopes, an alert's headline and facts,
Slack's escaping and length limits, dashboard links.

Money and percentages read as everywhere else (:mod:`spendwatch.numbers`: half up to the
shown digit).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

from alerts.model import KIND_PREFIX, Notification
from alerts.states import Kind
from spendwatch import numbers
from spendwatch.text import clean

TEST_NOTICE = "This is a test message from spendwatch: nothing crossed a threshold."
TENTH = Decimal("0.1")


def format_value(value: Decimal | None, unit: str) -> str:
    """``Decimal("1234.56"), "usd"`` -> ``"$1,234.56"``; ratio 0.42 -> ``"42.0%"``; percent
    7.5 -> ``"7.5%"``; hours -> ``"3.0 h"``; x -> ``"2.4x"``; ``None`` -> ``"no data"``."""
    if value is None:
        return numbers.NO_DATA
    if unit == "usd":
        return numbers.usd(value)
    if unit == "ratio":
        return numbers.percent(value)
    if unit == "percent":
        return numbers.percent(Decimal(value) / 100)
    if unit == "hours":
        return f"{_tenths(value)} h"
    if unit == "x":
        return f"{_tenths(value)}x"
    return f"{value} {unit}"


def _tenths(value: Decimal) -> str:
    return f"{Decimal(value).quantize(TENTH, rounding=ROUND_HALF_UP):,}"


def scope_text(scope: Mapping[str, str]) -> str:
    """``{"organization": "acme", "feature": "search"}`` -> ``"feature search, organization
    acme"``, the words ``Notification.title`` uses."""
    return ", ".join(f"{k} {v}" for k, v in sorted(scope.items())) or "all"


def scope_detail(scope: Mapping[str, str]) -> str:
    """The scope past its organization, in :func:`scope_text`'s words (``feature evals``;
    "" when it is the organization alone): what tells two alerts of one rule apart where the
    organization is said already (the demo's lines, the daily digest)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(scope.items()) if k != "organization")


def format_time(moment: datetime) -> str:
    """``2026-11-24 14:05 CST``: minutes are enough, and the zone the time was given in."""
    zone = moment.tzname()
    return f"{moment:%Y-%m-%d %H:%M}" + (f" {zone}" if zone else "")


def headline(n: Notification) -> str:
    """One sentence that opens every message: what happened, marked by kind."""
    notice = f" {TEST_NOTICE}" if n.kind == Kind.TEST else ""
    return f"{KIND_PREFIX[n.kind]}:{notice} {n.summary}"


def notification_facts(n: Notification) -> list[tuple[str, str]]:
    """Label and text of what crossed what, in reading order, then the notification's details."""
    facts = [
        ("Value", format_value(n.value, n.unit)),
        ("Threshold", format_value(n.threshold, n.unit)),
        ("Scope", scope_text(n.scope)),
        ("Rule", f"{n.rule} ({n.rule_kind})"),
        ("Window", n.window),
        ("Level", n.level),
        ("Started", format_time(n.started_at)),
    ]
    if n.kind == Kind.RESOLVED:
        facts.append(("Resolved", format_time(n.at)))
    return facts + list(n.details.items())


def mrkdwn(text: str) -> str:
    """``text`` as one line of Slack mrkdwn that cannot add markup: control characters and
    line breaks cleaned (:func:`spendwatch.text.clean`), and ``&``, ``<`` and ``>`` escaped,
    which Slack reads as markup (``<!channel>``, ``<url|label>``):
    https://api.slack.com/reference/surfaces/formatting#escaping"""
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (Slack's block limits), ending in an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def page_url(base: str | None, page: str,
             view: Mapping[str, str | Sequence[str]] | None = None) -> str | None:
    """The dashboard page's address; Overview is the dashboard's front page. ``view`` sets the
    page's controls through its query parameters (``{"period": ["2026-11-30"], "feature":
    "evals"}``: app/widgets.py binds each control to the parameter of its name)."""
    if not base:
        return None
    url = base.rstrip("/") + ("" if page == "Overview" else f"/{page}")
    if view:
        url += "?" + urlencode({k: v for k, v in view.items() if v}, doseq=True)
    return url


def mrkdwn_object(text: str) -> dict[str, Any]:
    """A Slack mrkdwn text object shown as written: no auto-linked URLs, channels or mentions
    (names come from the API); alerts and reports build theirs here."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}
