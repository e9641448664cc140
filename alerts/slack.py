"""The Slack channel: a Block Kit message posted to an incoming webhook.

Slack's answers (https://api.slack.com/messaging/webhooks#handling_errors): success is HTTP 200
with the body ``ok``; errors are short plain-text bodies (400 ``invalid_payload``, 403
``invalid_token``, 404 ``no_service``, 410 ``channel_is_archived``, 429 with ``Retry-After``,
500 ``rollup_error``). A webhook takes about one message a second
(https://api.slack.com/apis/rate-limits).

The webhook URL's path is the credential. It never goes into an answer, a log line or an
exception's text: messages say "the webhook", and since urllib3 logs request paths at DEBUG,
a filter on its logger hides the paths of the webhooks this process knows.

The words are :mod:`alerts.words`; a letter (the weekly report) brings its own Block Kit
message.
"""

from __future__ import annotations

from dataclasses import replace

import logging
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests

from alerts.model import DeliveryResult, Letter, Message, Notification
from alerts.states import Kind
from alerts.words import TEST_NOTICE, clip, mrkdwn_object, format_value, headline, mrkdwn, \
    notification_facts
from spendwatch.retry import GaveUp, RetryPolicy, TryAgain, call_with_retries, parse_retry_after
from spendwatch.text import header_text

log = logging.getLogger(__name__)

PERMANENT_STATUSES = frozenset({400, 403, 404, 410})
SETTINGS = frozenset({"timeout", "max_attempts", "max_wait", "min_interval"})
HEADER_EMOJI = {Kind.FIRING: ":rotating_light:", Kind.REMINDER: ":bell:",
                Kind.RESOLVED: ":white_check_mark:", Kind.TEST: ":test_tube:"}

# When each webhook was last posted to (clock time, or the time a waiting post has booked),
# shared by every SlackChannel of the process so that two channels on one webhook are spaced.
_last_post_at: dict[str, float] = {}
_last_post_lock = threading.Lock()


# ---- the payload -----------------------------------------------------------------------------

def slack_payload(n: Notification) -> dict[str, Any]:
    """The Block Kit message for ``n``, with a plain-text ``text`` fallback for notifications
    and clients that do not show blocks (https://api.slack.com/reference/block-kit/blocks).

    Names come from the API: the header is one cleaned line, every text is cleaned and
    escaped (:func:`alerts.words.mrkdwn`), and ``verbatim`` keeps Slack from turning a URL or
    a channel name inside a name into a link or a mention
    (https://api.slack.com/reference/block-kit/composition-objects#text)."""
    facts = notification_facts(n)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": header_text(f"{HEADER_EMOJI[n.kind]} {n.title}",
                                                        150)}},
        {"type": "section", "text": mrkdwn_object(clip(mrkdwn(headline(n)), 3000))},
        # A section takes at most 10 fields; the rest go on as lines.
        {"type": "section", "fields": [
            mrkdwn_object(clip(f"*{mrkdwn(label)}*\n{mrkdwn(text)}", 2000))
            for label, text in facts[:10]]},
    ]
    if facts[10:]:
        lines = "\n".join(f"*{mrkdwn(label)}*: {mrkdwn(text)}" for label, text in facts[10:])
        blocks.append({"type": "section", "text": mrkdwn_object(clip(lines, 3000))})
    if n.dashboard_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in spendwatch"},
             "url": n.dashboard_url}]})
    return {"text": _fallback_text(n), "blocks": blocks}


def payload_of(message: Message) -> dict[str, Any]:
    """The Slack message of an alert notification, or the one a letter brings."""
    return dict(message.slack) if isinstance(message, Letter) else slack_payload(message)


def _fallback_text(n: Notification) -> str:
    notice = f"{TEST_NOTICE} " if n.kind == Kind.TEST else ""
    text = (f"{n.title}: {notice}{n.summary} (value {format_value(n.value, n.unit)}, threshold "
            f"{format_value(n.threshold, n.unit)}, window {n.window})")
    link = f" <{n.dashboard_url}|Open in spendwatch>" if n.dashboard_url else ""
    return clip(mrkdwn(text), 3000) + link


# ---- the channel -----------------------------------------------------------------------------

class SlackChannel:
    """Posts notifications to one Slack incoming webhook.

    ``deliver`` never raises for a failure of Slack or the network; it returns a
    ``DeliveryResult`` whose answer is ``"HTTP <status> <body>"`` or a sentence of ours.
    The constructor raises ``ValueError`` when the webhook URL is not an http(s) URL.
    """

    takes_attachments = False  # a letter's file stays on the server; the text says where

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

        def post(attempt: int) -> DeliveryResult:
            result, retryable = self._post_once(payload)
            answers.append(result.answer)
            if retryable:
                raise TryAgain(result.answer, result.retry_after)
            return replace(result, attempts=tuple(answers))

        # Exact waits (no jitter): one webhook, and _wait_for_turn already spaces posts.
        policy = RetryPolicy(max_attempts=self.max_attempts, base_delay=1.0,
                             max_delay=self.max_wait, max_retry_after=self.max_wait, jitter=0,
                             sleep=self._sleep)
        try:
            return call_with_retries(post, policy, f"Slack channel {self.name}")
        except GaveUp as gave_up:
            return DeliveryResult(ok=False, retry_after=gave_up.last.retry_after,
                                  answer=f"{gave_up.last.reason} (after {gave_up.attempts} "
                                         "attempts)", attempts=tuple(answers))

    def _post_once(self, payload: dict[str, Any]) -> tuple[DeliveryResult, bool]:
        """One post: its result, and whether another post may do better (a 429 says how long
        to wait in ``retry_after``)."""
        self._wait_for_turn()
        try:
            response = requests.post(self._webhook_url, json=payload, timeout=self.timeout)
        # requests' exceptions name the URL: describe them in our own words.
        except requests.Timeout:
            return _failure(f"no answer from the webhook on {self._host} within "
                            f"{self.timeout:g} s"), True
        except requests.exceptions.SSLError:
            return _failure(f"TLS with the webhook on {self._host} failed (certificate not "
                            f"trusted or handshake refused)", permanent=True), False
        except requests.ConnectionError:
            return _failure(f"could not connect to the webhook on {self._host}"), True
        except requests.RequestException as exc:
            return _failure(f"posting to the webhook failed ({type(exc).__name__})"), False
        answer = f"HTTP {response.status_code} {self._one_line(response.text)}".rstrip()
        if response.status_code == 200:
            if response.text.strip() == "ok":
                return DeliveryResult(ok=True, answer=answer), False
            # Something answered 200 that is not Slack's "ok": the message may have been
            # taken, so posting again could duplicate it. Report it, don't retry.
            return _failure(f"{answer} (not Slack's \"ok\")"), False
        if response.status_code in PERMANENT_STATUSES or response.status_code == 413:
            # 400 (invalid_payload, invalid_blocks) and 413 refuse this message, not the hook.
            return replace(_failure(answer, permanent=True),
                           about_message=response.status_code in (400, 413)), False
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return DeliveryResult(ok=False, answer=answer, retry_after=retry_after), True
        if response.status_code >= 500 or response.status_code == 408:
            return _failure(answer), True
        return _failure(answer), False

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
        return clip(text, 200)


def _failure(answer: str, permanent: bool = False) -> DeliveryResult:
    return DeliveryResult(ok=False, answer=answer, permanent=permanent)


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
