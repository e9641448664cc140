"""The Slack channel: a Block Kit message posted to an incoming webhook.

Slack's answers (https://api.slack.com/messaging/webhooks#handling_errors): success is HTTP 200
with the body ``ok``; errors are short plain-text bodies (400 ``invalid_payload``, 403
``invalid_token``, 404 ``no_service``, 410 ``channel_is_archived``, 429 with ``Retry-After``,
500 ``rollup_error``). A webhook takes about one message a second
(https://api.slack.com/apis/rate-limits).

The webhook URL's path is the credential. It never goes into an answer, a log line or an
exception's text: messages say "the webhook", and since urllib3 logs request paths at DEBUG,
a filter on its logger hides the paths of the webhooks this process knows.

This module also holds the words every channel uses (``format_value``, ``headline``,
``notification_facts``); the email channel imports them from here.
"""

from __future__ import annotations

from dataclasses import replace

import logging
import threading
import time
from datetime import datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests

from alerts.model import DeliveryResult, Message, Notification, WeeklyReport

log = logging.getLogger(__name__)

PERMANENT_STATUSES = frozenset({400, 403, 404, 410})
SETTINGS = frozenset({"timeout", "max_attempts", "max_wait", "min_interval"})
TEST_NOTICE = "This is a test message from spendwatch: nothing crossed a threshold."
_HEADER_EMOJI = {"firing": ":rotating_light:", "reminder": ":bell:",
                 "resolved": ":white_check_mark:", "test": ":test_tube:"}
_HEADLINE_PREFIX = {"firing": "FIRING", "reminder": "STILL FIRING", "resolved": "RESOLVED",
                    "test": "TEST"}

# When each webhook was last posted to (clock time, or the time a waiting post has booked),
# shared by every SlackChannel of the process so that two channels on one webhook are spaced.
_last_post_at: dict[str, float] = {}
_last_post_lock = threading.Lock()


# ---- the words every channel uses ------------------------------------------------------------

def format_value(value: Decimal | None, unit: str) -> str:
    """``Decimal("1234.56"), "usd"`` -> ``"$1,234.56"``; ratio 0.42 -> ``"42.0%"``; percent
    7.5 -> ``"7.5%"``; hours -> ``"3.0 h"``; x -> ``"2.4x"``; ``None`` -> ``"no data"``."""
    if value is None:
        return "no data"
    if unit == "usd":
        return f"{'-' if value < 0 else ''}${abs(value):,.2f}"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "hours":
        return f"{value:.1f} h"
    if unit == "x":
        return f"{value:.1f}x"
    return f"{value} {unit}"


def scope_text(scope: Mapping[str, str]) -> str:
    """``{"organization": "acme", "feature": "search"}`` -> ``"feature search, organization
    acme"``, the words ``Notification.title`` uses."""
    return ", ".join(f"{k} {v}" for k, v in sorted(scope.items())) or "all"


def format_time(moment: datetime) -> str:
    """``2026-11-24 14:05 CST``: minutes are enough, and the zone the time was given in."""
    zone = moment.tzname()
    return f"{moment:%Y-%m-%d %H:%M}" + (f" {zone}" if zone else "")


def headline(n: Notification) -> str:
    """One sentence that opens every message: what happened, marked by kind."""
    notice = f" {TEST_NOTICE}" if n.kind == "test" else ""
    return f"{_HEADLINE_PREFIX[n.kind]}:{notice} {n.summary}"


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
    if n.kind == "resolved":
        facts.append(("Resolved", format_time(n.at)))
    return facts + list(n.details.items())


# ---- the payload -----------------------------------------------------------------------------

def slack_payload(n: Notification) -> dict[str, Any]:
    """The Block Kit message for ``n``, with a plain-text ``text`` fallback for notifications
    and clients that do not show blocks (https://api.slack.com/reference/block-kit/blocks)."""
    facts = notification_facts(n)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _clip(f"{_HEADER_EMOJI[n.kind]} {n.title}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(_mrkdwn(headline(n)), 3000)}},
        # A section takes at most 10 fields; the rest go on as lines.
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{_mrkdwn(label)}*\n{_mrkdwn(text)}", 2000)}
            for label, text in facts[:10]]},
    ]
    if facts[10:]:
        lines = "\n".join(f"*{_mrkdwn(label)}*: {_mrkdwn(text)}" for label, text in facts[10:])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(lines, 3000)}})
    if n.dashboard_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in spendwatch"},
             "url": n.dashboard_url}]})
    return {"text": _fallback_text(n), "blocks": blocks}


def report_payload(report: WeeklyReport) -> dict[str, Any]:
    """The Block Kit message of a weekly report: the headline, one section per part of the
    summary that has something to say, and the dashboard link. An empty week is one line."""
    from alerts import report_text

    if report.empty:
        line = _mrkdwn(report_text.empty_line(report))
        return {"text": line, "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                                      "text": line}}]}
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": _clip(
            f":bar_chart: Weekly spend {report.week}: {report.organization}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": _clip(_mrkdwn(report_text.headline(report)), 3000)}}]
    for heading, lines in report_text.sections(report, attached=False):
        text = f"*{_mrkdwn(heading)}*\n" + "\n".join(f"• {_mrkdwn(line)}" for line in lines)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
    if report.dashboard_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in spendwatch"},
             "url": report.dashboard_url}]})
    text = _clip(_mrkdwn(report_text.headline(report)), 3000)
    if report.dashboard_url:
        text += f" <{report.dashboard_url}|Open in spendwatch>"
    return {"text": text, "blocks": blocks}


def payload_of(message: Message) -> dict[str, Any]:
    """The Slack message of an alert notification or a weekly report."""
    return report_payload(message) if isinstance(message, WeeklyReport) else \
        slack_payload(message)


def _fallback_text(n: Notification) -> str:
    notice = f"{TEST_NOTICE} " if n.kind == "test" else ""
    text = (f"{n.title}: {notice}{n.summary} (value {format_value(n.value, n.unit)}, threshold "
            f"{format_value(n.threshold, n.unit)}, window {n.window})")
    link = f" <{n.dashboard_url}|Open in spendwatch>" if n.dashboard_url else ""
    return _clip(_mrkdwn(text), 3000) + link


def _mrkdwn(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup:
    https://api.slack.com/reference/surfaces/formatting#escaping"""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the channel -----------------------------------------------------------------------------

class SlackChannel:
    """Posts notifications to one Slack incoming webhook.

    ``deliver`` never raises for a failure of Slack or the network; it returns a
    ``DeliveryResult`` whose answer is ``"HTTP <status> <body>"`` or a sentence of ours.
    The constructor raises ``ValueError`` when the webhook URL is not an http(s) URL.
    """

    def __init__(self, name: str, webhook_url: str, timeout: float = 10, max_attempts: int = 4,
                 max_wait: float = 60, min_interval: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        parts = urlsplit(webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Slack channel {name!r}: the webhook URL is not an http(s) URL")
        if max_attempts < 1:
            raise ValueError(f"Slack channel {name!r}: max_attempts must be at least 1")
        self.name = name
        self._webhook_url = webhook_url  # the credential: kept out of repr and answers
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.min_interval = min_interval
        self._sleep = sleep
        self._clock = clock
        self._host = parts.hostname
        _hide_in_urllib3_logs(webhook_url)

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], secret: str | None, *,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> SlackChannel:
        """A channel from config: ``secret`` is the webhook URL, ``settings`` the tuning
        (``timeout``, ``max_attempts``, ``max_wait``, ``min_interval``). Raises ``ValueError``."""
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise ValueError(f"Slack channel {name!r}: unknown settings {', '.join(unknown)}"
                             f" (known: {', '.join(sorted(SETTINGS))})")
        if not secret:
            raise ValueError(f"Slack channel {name!r}: no webhook URL was given")
        return cls(name, secret, sleep=sleep, clock=clock, **settings)

    def __repr__(self) -> str:
        return f"SlackChannel({self.name!r}, webhook on {self._host})"

    def deliver(self, notification: Message) -> DeliveryResult:
        """Post ``notification`` (or a weekly report): up to ``max_attempts`` posts, waiting out 429s (Retry-After,
        at most ``max_wait``) and backing off after 5xx answers, timeouts and connection errors."""
        payload = payload_of(notification)
        answers: list[str] = []
        attempt = 1
        while True:
            result, wait = self._post_once(payload, attempt)
            answers.append(result.answer)
            if result.ok or result.permanent or wait is None:
                return replace(result, attempts=tuple(answers))
            if attempt == self.max_attempts:
                return DeliveryResult(ok=False, retry_after=result.retry_after,
                                      answer=f"{result.answer} (after {attempt} attempts)",
                                      attempts=tuple(answers))
            log.warning("Slack channel %s: %s; trying again in %.1f s (attempt %d of %d)",
                        self.name, result.answer, wait, attempt, self.max_attempts)
            self._sleep(wait)
            attempt += 1

    def _post_once(self, payload: dict[str, Any],
                   attempt: int) -> tuple[DeliveryResult, float | None]:
        """One post: its result, and how long to wait before trying again (``None``: don't)."""
        self._wait_for_turn()
        backoff = min(self.max_wait, 2.0 ** (attempt - 1))
        try:
            response = requests.post(self._webhook_url, json=payload, timeout=self.timeout)
        # requests' exceptions name the URL: describe them in our own words.
        except requests.Timeout:
            return _failure(f"no answer from the webhook on {self._host} within "
                            f"{self.timeout:g} s"), backoff
        except requests.exceptions.SSLError:
            return _failure(f"TLS with the webhook on {self._host} failed (certificate not "
                            f"trusted or handshake refused)", permanent=True), None
        except requests.ConnectionError:
            return _failure(f"could not connect to the webhook on {self._host}"), backoff
        except requests.RequestException as exc:
            return _failure(f"posting to the webhook failed ({type(exc).__name__})"), None
        answer = f"HTTP {response.status_code} {self._one_line(response.text)}".rstrip()
        if response.status_code == 200:
            if response.text.strip() == "ok":
                return DeliveryResult(ok=True, answer=answer), None
            # Something answered 200 that is not Slack's "ok": the message may have been
            # taken, so posting again could duplicate it. Report it, don't retry.
            return _failure(f"{answer} (not Slack's \"ok\")"), None
        if response.status_code in PERMANENT_STATUSES or response.status_code == 413:
            # 400 (invalid_payload, invalid_blocks) and 413 refuse this message, not the hook.
            return replace(_failure(answer, permanent=True),
                           about_message=response.status_code in (400, 413)), None
        if response.status_code == 429:
            retry_after = _seconds(response.headers.get("retry-after"))
            wait = backoff if retry_after is None else min(self.max_wait, retry_after)
            return DeliveryResult(ok=False, answer=answer, retry_after=retry_after), wait
        if response.status_code >= 500 or response.status_code == 408:
            return _failure(answer), backoff
        return _failure(answer), None

    def _wait_for_turn(self) -> None:
        """Keep ``min_interval`` between posts to this webhook from this process."""
        if self.min_interval <= 0:
            return
        with _last_post_lock:
            now = self._clock()
            last = _last_post_at.get(self._webhook_url)
            turn = now if last is None else max(now, last + self.min_interval)
            _last_post_at[self._webhook_url] = turn  # booked before sleeping: threads queue up
        if turn > now:
            self._sleep(turn - now)

    def _one_line(self, body: str) -> str:
        text = " ".join(body.split()).replace(self._webhook_url, "the webhook")
        path = urlsplit(self._webhook_url).path
        if len(path) > 1:
            text = text.replace(path, "the webhook")
        return _clip(text, 200)


def _failure(answer: str, permanent: bool = False) -> DeliveryResult:
    return DeliveryResult(ok=False, answer=answer, permanent=permanent)


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


# ---- keeping webhook paths out of urllib3's DEBUG lines --------------------------------------

class _HideWebhooks(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: frozenset[str] = frozenset()  # replaced whole, never changed in place

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = sorted(self.secrets, key=len, reverse=True)
        message = record.getMessage()
        if any(secret in message for secret in secrets):
            for secret in secrets:
                message = message.replace(secret, "[the webhook]")
            record.msg, record.args = message, ()
        return True


_hide_webhooks = _HideWebhooks()
logging.getLogger("urllib3.connectionpool").addFilter(_hide_webhooks)


def _hide_in_urllib3_logs(webhook_url: str) -> None:
    path = urlsplit(webhook_url).path
    _hide_webhooks.secrets = _hide_webhooks.secrets | {webhook_url, path} - {"", "/"}
