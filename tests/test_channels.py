"""Slack and email channels against real local servers: a scripted HTTP stand-in for Slack's
webhooks (tests/fake_slack.py) and aiosmtpd, with STARTTLS and implicit TLS on a throwaway CA.

Waits are recorded by an injected ``sleep`` instead of slept; the Slack rate limit runs on a
fake clock that the recorded sleeps move forward.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from alerts.channels import CHANNEL_KINDS, build_channel
from alerts.email import EmailChannel, email_message
from alerts.model import Notification
from alerts.slack import SlackChannel, slack_payload
from alerts.words import format_value
from fake_slack import FakeSlack
from fake_smtp import Mailbox, TLSFiles, closed_port

WEBHOOK_TOKEN = "s3cr3tW3bh00kT0k3n"
WEBHOOK_PATH = f"/services/T0ACME/B0ALERTS/{WEBHOOK_TOKEN}"
PASSWORD = "hunter2-Pa55w0rd-never-shown"
SENDER = "spendwatch@acme.example"


def make_notification(kind: str = "firing", **changes: Any) -> Notification:
    notification = Notification(
        kind=kind, rule="daily-budget", rule_kind="daily_spend",
        scope={"organization": "acme", "feature": "search & <beta>"}, level="80%",
        value=Decimal("1234.56"), threshold=Decimal("1000"), unit="usd",
        window="today (America/Chicago), since 00:00",
        summary="Spend today $1,234.56 crossed 80% of the $1,250.00 daily budget",
        started_at=datetime(2026, 11, 24, 9, 5, tzinfo=ZoneInfo("America/Chicago")),
        at=datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc),
        dashboard_url="http://spendwatch.local/Overview?rule=daily-budget&org=acme")
    return replace(notification, **changes)


class FakeTime:
    """A clock that only moves when something sleeps on it; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def slack(url: str, fake_time: FakeTime, **options: Any) -> SlackChannel:
    options.setdefault("min_interval", 0)  # spacing has its own tests
    return SlackChannel("ops-slack", url, sleep=fake_time.sleep, clock=fake_time.clock,
                        **options)


# ---- Slack: the payload ----------------------------------------------------------------------

def test_slack_payload_says_what_crossed_what() -> None:
    payload = slack_payload(make_notification())
    text = json.dumps(payload, ensure_ascii=False)
    for expected in ("$1,234.56", "$1,000.00", "organization acme", "daily-budget",
                     "daily_spend", "today (America/Chicago), since 00:00", "80%",
                     "2026-11-24 09:05 CST", "Open in spendwatch",
                     "http://spendwatch.local/Overview?rule=daily-budget&org=acme"):
        assert expected in text
    assert "search &amp; &lt;beta&gt;" in text  # Slack markup escaped
    assert "$1,234.56" in payload["text"] and "threshold $1,000.00" in payload["text"]
    assert payload["blocks"][-1]["elements"][0]["url"] == make_notification().dashboard_url


def test_slack_payload_has_no_link_without_a_dashboard_url() -> None:
    payload = slack_payload(make_notification(dashboard_url=None))
    assert "Open in spendwatch" not in json.dumps(payload)
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section"]


@pytest.mark.parametrize(("value", "unit", "text"), [
    (Decimal("1234.56"), "usd", "$1,234.56"), (Decimal("-3.5"), "usd", "-$3.50"),
    (Decimal("0.42"), "ratio", "42.0%"), (Decimal("7.5"), "percent", "7.5%"),
    (Decimal("3"), "hours", "3.0 h"), (Decimal("2.4"), "x", "2.4x"), (None, "usd", "no data"),
])
def test_values_are_formatted_by_unit(value: Decimal | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_resolved_and_test_messages_are_marked() -> None:
    resolved = slack_payload(make_notification("resolved"))
    assert "RESOLVED" in resolved["blocks"][0]["text"]["text"]
    assert resolved["text"].startswith("[spendwatch RESOLVED]")
    assert "2026-11-24 15:30 UTC" in json.dumps(resolved)  # when it resolved
    test = slack_payload(make_notification("test"))
    assert "TEST" in test["blocks"][0]["text"]["text"]
    assert "This is a test message from spendwatch" in test["blocks"][1]["text"]["text"]
    assert "This is a test message from spendwatch" in test["text"]


# ---- Slack: delivery -------------------------------------------------------------------------

def test_it_posts_to_slack_and_accepts_ok(fake_slack: FakeSlack,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs request paths at DEBUG
    fake_slack.script((500, "rollup_error"), (200, "ok"))
    result = slack(fake_slack.url(WEBHOOK_PATH), FakeTime()).deliver(make_notification())
    assert (result.ok, result.answer) == (True, "HTTP 200 ok")
    request = fake_slack.received[-1]
    assert request.path == WEBHOOK_PATH
    assert request.json == slack_payload(make_notification())
    assert WEBHOOK_TOKEN not in json.dumps(request.json)
    assert WEBHOOK_TOKEN not in caplog.text
    assert "the webhook" in caplog.text  # the retry was logged, in words


def test_it_retries_after_429_waiting_retry_after(fake_slack: FakeSlack) -> None:
    fake_slack.script((429, "rate_limited", {"Retry-After": "7"}))
    fake_time = FakeTime()
    result = slack(fake_slack.url(), fake_time).deliver(make_notification())
    assert result.ok
    assert fake_time.sleeps == [7.0]
    assert len(fake_slack.received) == 2


def test_retry_after_is_capped_at_max_wait(fake_slack: FakeSlack) -> None:
    fake_slack.script((429, "rate_limited", {"Retry-After": "3600"}))
    fake_time = FakeTime()
    assert slack(fake_slack.url(), fake_time, max_wait=60).deliver(make_notification()).ok
    assert fake_time.sleeps == [60]


def test_it_retries_500_with_backoff(fake_slack: FakeSlack) -> None:
    fake_slack.script((500, "rollup_error"), (503, "unavailable"))
    fake_time = FakeTime()
    assert slack(fake_slack.url(), fake_time).deliver(make_notification()).ok
    assert fake_time.sleeps == [1.0, 2.0]
    assert len(fake_slack.received) == 3


def test_it_gives_up_after_max_attempts(fake_slack: FakeSlack) -> None:
    fake_slack.script(*[(500, "rollup_error")] * 4)
    fake_time = FakeTime()
    result = slack(fake_slack.url(), fake_time, max_attempts=4).deliver(make_notification())
    assert (result.ok, result.permanent) == (False, False)
    assert result.answer == "HTTP 500 rollup_error (after 4 attempts)"
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
    assert len(fake_slack.received) == 4


@pytest.mark.parametrize(("status", "body"), [
    (400, "invalid_payload"), (403, "invalid_token"), (404, "no_service"),
    (410, "channel_is_archived")])
def test_client_errors_are_permanent_after_one_call(fake_slack: FakeSlack, status: int,
                                                    body: str) -> None:
    fake_slack.script((status, body))
    fake_time = FakeTime()
    result = slack(fake_slack.url(WEBHOOK_PATH), fake_time).deliver(make_notification())
    assert (result.ok, result.permanent, result.answer) == (False, True, f"HTTP {status} {body}")
    assert len(fake_slack.received) == 1
    assert fake_time.sleeps == []


def test_200_with_another_body_is_a_failure(fake_slack: FakeSlack) -> None:
    fake_slack.script((200, f"<html>welcome to {WEBHOOK_PATH}</html>"))
    result = slack(fake_slack.url(WEBHOOK_PATH), FakeTime()).deliver(make_notification())
    assert not result.ok
    assert result.answer.startswith("HTTP 200 <html>welcome to the webhook</html>")
    assert WEBHOOK_TOKEN not in result.answer
    assert len(fake_slack.received) == 1  # it may have been taken: not posted twice


def test_messages_to_one_webhook_are_spaced_by_min_interval(fake_slack: FakeSlack) -> None:
    url = fake_slack.url(f"/services/T0/B0/{uuid.uuid4().hex}")  # its own turn record
    other_url = fake_slack.url(f"/services/T0/B1/{uuid.uuid4().hex}")
    fake_time = FakeTime()
    first = slack(url, fake_time, min_interval=1.0)
    second = slack(url, fake_time, min_interval=1.0)  # another channel, the same webhook
    other = slack(other_url, fake_time, min_interval=1.0)
    assert first.deliver(make_notification()).ok
    assert second.deliver(make_notification()).ok
    assert fake_time.sleeps == [1.0]
    fake_time.now += 0.25
    assert first.deliver(make_notification()).ok
    assert fake_time.sleeps == [1.0, 0.75]
    assert other.deliver(make_notification()).ok  # other webhooks don't wait
    assert fake_time.sleeps == [1.0, 0.75]


def test_spacing_holds_on_the_real_clock(fake_slack: FakeSlack) -> None:
    channel = SlackChannel("ops", fake_slack.url(f"/services/T0/B0/{uuid.uuid4().hex}"),
                           min_interval=0.3)
    assert channel.deliver(make_notification()).ok and channel.deliver(make_notification()).ok
    first, second = fake_slack.received
    assert second.at - first.at >= 0.29


def test_a_timeout_is_retried_and_reported_without_the_url(fake_slack: FakeSlack) -> None:
    fake_slack.script((200, "ok", {}, 2.0), (200, "ok", {}, 2.0))
    fake_time = FakeTime()
    channel = slack(fake_slack.url(WEBHOOK_PATH), fake_time, timeout=0.2, max_attempts=2)
    started = time.monotonic()
    result = channel.deliver(make_notification())
    assert time.monotonic() - started < 1.5
    assert (result.ok, result.permanent) == (False, False)
    assert result.answer == ("no answer from the webhook on 127.0.0.1 within 0.2 s "
                             "(after 2 attempts)")
    assert fake_time.sleeps == [1.0]


def test_a_refused_connection_is_retried_without_the_url_in_the_answer() -> None:
    fake_time = FakeTime()
    url = f"http://127.0.0.1:{closed_port()}{WEBHOOK_PATH}"
    result = slack(url, fake_time, max_attempts=3).deliver(make_notification())
    assert (result.ok, result.permanent) == (False, False)
    assert result.answer == "could not connect to the webhook on 127.0.0.1 (after 3 attempts)"
    assert fake_time.sleeps == [1.0, 2.0]


# ---- building channels from config ----------------------------------------------------------

def test_build_channel_makes_each_kind() -> None:
    assert set(CHANNEL_KINDS) == {"slack", "email"}
    slack_channel = build_channel("ops", "slack", {"min_interval": 2}, "https://hooks.slack.com"
                                  + WEBHOOK_PATH)
    assert isinstance(slack_channel, SlackChannel) and slack_channel.min_interval == 2
    assert WEBHOOK_TOKEN not in repr(slack_channel)
    mail = build_channel("mail", "email", {"host": "smtp.acme.example", "sender": SENDER,
                                           "recipients": "a@acme.example, b@acme.example",
                                           "security": "tls", "username": "alerts"}, PASSWORD)
    assert isinstance(mail, EmailChannel)
    assert (mail.port, mail.recipients) == (465, ["a@acme.example", "b@acme.example"])
    assert PASSWORD not in repr(mail)


@pytest.mark.parametrize(("kind", "settings", "secret", "message"), [
    ("pager", {}, None, "unknown kind 'pager'"),
    ("slack", {"timout": 3}, "https://hooks.slack.com/x", "unknown settings timout"),
    ("slack", {}, None, "no webhook URL"),
    ("slack", {}, "hooks.slack.com" + WEBHOOK_PATH, r"not an http\(s\) URL"),
    ("email", {"host": "h", "sender": SENDER}, None, "missing settings recipients"),
    ("email", {"host": "h", "sender": SENDER, "recipients": ["a@b"], "security": "ssl"},
     None, "security must be one of"),
    ("email", {"host": "h", "sender": SENDER, "recipients": ["a@b"], "security": "none",
               "username": "u"}, PASSWORD, "in the clear"),
])
def test_build_channel_refuses_settings_that_cannot_work(kind: str, settings: dict[str, Any],
                                                         secret: str | None,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        build_channel("ops", kind, settings, secret)
    assert WEBHOOK_TOKEN not in str(raised.value) and PASSWORD not in str(raised.value)


# ---- email: the message ----------------------------------------------------------------------

def test_email_message_is_multipart_text_and_html() -> None:
    n = make_notification()
    message = email_message(n, SENDER, ["a@acme.example", "b@acme.example"])
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == n.title
    assert message["To"] == "a@acme.example, b@acme.example"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    text, html = text_part.get_content(), html_part.get_content()
    for expected in (n.summary, "$1,000.00", "daily-budget", n.window, "Open in spendwatch"):
        assert expected in text and expected in html
    assert "search &amp; &lt;beta&gt;" in html and "<beta>" not in html
    assert 'href="http://spendwatch.local/Overview?rule=daily-budget&amp;org=acme"' in html
    assert message["Message-ID"] == email_message(n, SENDER, ["x@y"])["Message-ID"]


def test_test_email_says_it_is_a_test() -> None:
    message = email_message(make_notification("test"), SENDER, ["a@acme.example"])
    assert message["Subject"].startswith("[spendwatch TEST]")
    text_part = message.get_body(("plain",))
    assert isinstance(text_part, EmailMessage)
    assert "This is a test message from spendwatch" in text_part.get_content()


# ---- email: delivery to aiosmtpd -------------------------------------------------------------

def mail_channel(port: int, recipients: list[str] | None = None, **options: Any) -> EmailChannel:
    options.setdefault("security", "none")
    options.setdefault("timeout", 5)
    return EmailChannel("ops-mail", "127.0.0.1", port, SENDER,
                        recipients or ["alice@acme.example"], **options)


def accept_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    good = (isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts"
            and auth_data.password == PASSWORD.encode())
    # A rejection must say handled=False, or smtplib waits for its timeout.
    return AuthResult(success=True) if good else AuthResult(success=False, handled=False)


def test_it_emails_a_multipart_message(smtp_server: Callable[..., int]) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    n = make_notification()
    result = mail_channel(port, ["alice@acme.example", "bob@acme.example"]).deliver(n)
    assert result.ok and result.answer == "SMTP 250 accepted for 2 recipient(s)"
    [delivered] = mailbox.delivered
    assert delivered.rcpt_tos == ["alice@acme.example", "bob@acme.example"]
    assert delivered.mail_from == SENDER
    message = delivered.message
    # The "&" makes Python fold the whole subject onto a continuation line; its parser then
    # keeps the folding space (mail clients don't).
    assert message["Subject"].strip() == n.title
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage) and n.summary in part.get_content()


def test_starttls_verifies_the_server_with_the_ca_file(smtp_server: Callable[..., int],
                                                       tls: TLSFiles) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=tls.server_context, require_starttls=True)
    result = mail_channel(port, security="starttls", ca_file=tls.ca_file).deliver(
        make_notification())
    assert result.ok, result.answer
    assert len(mailbox.delivered) == 1


def test_starttls_refuses_an_untrusted_certificate(smtp_server: Callable[..., int],
                                                   tls: TLSFiles) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=tls.server_context, require_starttls=True)
    sleeps: list[float] = []
    result = mail_channel(port, security="starttls", sleep=sleeps.append).deliver(
        make_notification())
    assert (result.ok, result.permanent) == (False, True)
    assert result.answer.startswith("certificate not trusted: set ca_file")
    assert sleeps == [] and mailbox.delivered == []


def test_implicit_tls_works(smtp_server: Callable[..., int], tls: TLSFiles) -> None:
    mailbox = Mailbox()
    port = smtp_server(mailbox, ssl_context=tls.server_context)
    result = mail_channel(port, security="tls", ca_file=tls.ca_file).deliver(make_notification())
    assert result.ok, result.answer
    assert len(mailbox.delivered) == 1


def test_a_refused_recipient_is_named_and_the_others_still_get_it(
        smtp_server: Callable[..., int]) -> None:
    mailbox = Mailbox({"bob@acme.example": ["550 5.1.1 no such user"]})
    port = smtp_server(mailbox)
    sleeps: list[float] = []
    result = mail_channel(port, ["alice@acme.example", "bob@acme.example"],
                          sleep=sleeps.append).deliver(make_notification())
    # delivered (the channel works), with the refusal said plainly in the answer
    assert (result.ok, result.permanent) == (True, False)
    assert result.answer == ("SMTP 550 5.1.1 no such user, refused: bob@acme.example; "
                             "1 of 2 recipient(s) got it")
    assert len(mailbox.inbox("alice@acme.example")) == 1
    assert mailbox.inbox("bob@acme.example") == [] and sleeps == []


def test_a_451_on_rcpt_is_retried_for_that_recipient_only(
        smtp_server: Callable[..., int]) -> None:
    mailbox = Mailbox({"bob@acme.example": ["451 4.3.0 try again later"]})
    port = smtp_server(mailbox)
    sleeps: list[float] = []
    result = mail_channel(port, ["alice@acme.example", "bob@acme.example"],
                          sleep=sleeps.append).deliver(make_notification())
    assert result.ok, result.answer
    assert sleeps == [1.0]
    assert len(mailbox.inbox("alice@acme.example")) == 1  # not twice
    assert len(mailbox.inbox("bob@acme.example")) == 1


def test_a_451_for_the_only_recipient_is_retried_then_reported(
        smtp_server: Callable[..., int]) -> None:
    mailbox = Mailbox({"alice@acme.example": ["451 4.3.0 try again later"] * 3})
    port = smtp_server(mailbox)
    sleeps: list[float] = []
    result = mail_channel(port, sleep=sleeps.append).deliver(make_notification())
    assert (result.ok, result.permanent) == (False, False)
    assert result.answer == ("SMTP 451 4.3.0 try again later, refused: alice@acme.example; "
                             "0 of 1 recipient(s) got it (after 3 attempts)")
    assert sleeps == [1.0, 2.0]


def test_login_over_starttls_never_shows_the_password(smtp_server: Callable[..., int],
                                                      tls: TLSFiles,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="alerts")
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=tls.server_context, require_starttls=True,
                       authenticator=accept_login)
    channel = mail_channel(port, security="starttls", ca_file=tls.ca_file, username="alerts",
                           password=PASSWORD)
    result = channel.deliver(make_notification())
    assert result.ok, result.answer
    assert len(mailbox.delivered) == 1
    wrong = mail_channel(port, security="starttls", ca_file=tls.ca_file, username="alerts",
                         password=PASSWORD + "-wrong", timeout=3)
    refused = wrong.deliver(make_notification())
    assert (refused.ok, refused.permanent) == (False, True)
    assert refused.answer.startswith("SMTP 535")
    for text in (result.answer, refused.answer, caplog.text, repr(channel)):
        assert PASSWORD not in text


def test_a_silent_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = int(silent.getsockname()[1])
        sleeps: list[float] = []
        channel = mail_channel(port, security="starttls", timeout=0.5, max_attempts=2,
                               sleep=sleeps.append)
        started = time.monotonic()
        result = channel.deliver(make_notification())
        elapsed = time.monotonic() - started
    assert elapsed < 2 * 0.5 + 0.5
    assert (result.ok, result.permanent) == (False, False)
    assert result.answer == f"no answer from 127.0.0.1:{port} within 0.5 s (after 2 attempts)"
    assert sleeps == [1.0]


def test_a_refused_connection_is_retried() -> None:
    port = closed_port()
    sleeps: list[float] = []
    result = mail_channel(port, sleep=sleeps.append).deliver(make_notification())
    assert (result.ok, result.permanent) == (False, False)
    assert result.answer == (f"could not connect to 127.0.0.1:{port}: Connection refused "
                             f"(after 3 attempts)")
    assert sleeps == [1.0, 2.0]


def test_an_alerts_link_opens_its_page_on_its_scope_and_day() -> None:
    from zoneinfo import ZoneInfo
    from alerts.model import Evaluation
    from alerts.rules import page_view
    from alerts.words import page_url
    chicago = ZoneInfo("America/Chicago")
    now = datetime(2026, 12, 1, 3, 30, tzinfo=timezone.utc)  # Nov 30, 21:30 in Chicago
    daily = Evaluation("daily", "daily_spend", {"organization": "acme", "feature": "evals & co"},
                       "2026-11-30 100%", "firing", Decimal(5), Decimal(1), "usd", "today",
                       "today's spend", "Spend")
    assert page_url("http://dash.example:8501/", daily.page, page_view(daily, now, chicago)) == (
        "http://dash.example:8501/Spend?period=2026-11-30&feature=evals+%26+co&organization=acme")
    cache = Evaluation("cache", "cache_hit_ratio", {"organization": "acme", "model": "m"},
                       "floor", "firing", Decimal("0.1"), Decimal("0.5"), "ratio", "24 h",
                       "ratio", "Caching")
    # the cache rule's window (24 complete hours to 21:00 on the 30th) and what it follows
    assert page_view(cache, now, chicago) == {"period": ["2026-11-29", "2026-11-30"],
                                              "per": ["model"]}
    assert page_view(cache, now, chicago, {"window_hours": 72, "per": "feature"}) == {
        "period": ["2026-11-27", "2026-11-30"], "per": ["feature"]}
    drift = Evaluation("drift", "cost_drift", {"organization": "acme", "model": "(none)"},
                       "2026-11-28", "firing", Decimal(9), Decimal(5), "percent", "Nov 28",
                       "drift", "Spend")
    assert page_view(drift, now, chicago) == {"period": ["2026-11-28"], "organization": ["acme"],
                                              "model": ["(not a model)"]}  # the day judged
    spike = Evaluation("spike", "spend_spike", {}, "hourly", "firing", Decimal(9), Decimal(5),
                       "usd", "hour", "spike", "Spend")
    just_after = datetime(2026, 12, 1, 6, 20, tzinfo=timezone.utc)  # 00:20 in Chicago
    assert page_view(spike, just_after, chicago) == {"period": ["2026-11-30"]}  # 23:00's day
    month = Evaluation("month", "monthly_budget", {}, "forecast", "firing", Decimal(9),
                       Decimal(1), "usd", "November", "forecast")
    assert page_url("http://dash.example:8501", month.page, page_view(month, now, chicago)) \
        == "http://dash.example:8501"
