"""The outbox and delivery: notifications wait in ``alert_notifications``, go out, and every
attempt is logged in ``alert_deliveries``.

Delivery is at least once: a notification waits as "pending" and counts as "sent" only after
the channel acknowledged it; a transient failure leaves it pending for the next check, a
permanent one marks it failed and the channel broken (``alert_channels``). Notifications are
claimed before sending, so two processes (the worker and ``alerts check``) never send one
twice. Network calls happen with no database connection open, so the dashboard and the
collector are never blocked by a slow channel. One channel failing never blocks another.

Letters (kind "report": the weekly report) go through the same outbox: their sender writes
them whole (:class:`alerts.model.Letter`), the channels only carry them, and a file that goes
with one is read just before sending, for the channels that carry files. A letter refused for
what it is (too big, its content) fails alone and never marks the channel broken.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Callable, Sequence

import duckdb

from alerts import settings
from alerts.channels import Channel, build_channel
from alerts.model import CheckReport, DeliveryResult, Letter, Message, Notification, decode
from alerts.states import Kind, Status
from alerts.words import page_url
from spendwatch import storage
from spendwatch.config import Config, resolve_channel_secret
from spendwatch.errors import ConfigError, DatabaseMissing, SpendwatchError

log = logging.getLogger(__name__)
ChannelFactory = Callable[[Config, str], Channel]

MAX_CHECKS_PER_NOTIFICATION = 6  # then it is failed for good, and said so
CLAIM_LEASE = timedelta(minutes=15)  # a claim older than this (a crash mid-send) is retried

# config key -> the channel's own setting name
SETTING_NAMES = {"timeout_seconds": "timeout", "min_interval_seconds": "min_interval",
                 "from": "sender", "to": "recipients"}


def default_channel(config: Config, name: str) -> Channel:
    """The configured channel ``name``, its secret read now. Raises ConfigError."""
    config = settings.validate(config)
    channel = config.alerts.channel(name)
    if channel is None:
        raise ConfigError(f"{config.path}: no channel named {name!r} in [[alerts.channels]]")
    options = {SETTING_NAMES.get(k, k): (list(v) if isinstance(v, tuple) else v)
               for k, v in channel.settings.items()}
    try:
        return build_channel(channel.name, channel.kind, options,
                             resolve_channel_secret(config, channel))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{config.path}: channel {name!r}: {exc}") from None


# --- into the outbox -------------------------------------------------------------------------

def queue(conn: duckdb.DuckDBPyConnection, message: Message, channels: Sequence[str],
          now: datetime, episode: int | None = None, status: str = Status.PENDING,
          ids: Callable[[str], int] | None = None) -> None:
    """Put ``message`` in the outbox for each of ``channels``, in the caller's transaction;
    :func:`deliver_pending` sends it (``status`` "silenced": stored, never sent). ``ids``
    gives a table's next id (default :func:`spendwatch.storage.next_id` on ``conn``)."""
    next_id = ids or (lambda table: storage.next_id(conn, table))
    for channel in channels:
        conn.execute("""
            INSERT INTO alert_notifications (id, episode_id, kind, channel, created_at, status,
                attempts, payload_json) VALUES (?, ?, ?, ?, ?, ?, 0, ?)""",
                     [next_id("alert_notifications"), episode, message.kind,
                      channel, now, status, message.to_json()])


def queued_letters(config: Config) -> list[Letter]:
    """The letters waiting to go out (pending), oldest first, each once: for their sender to
    make sure what they carry is there (a report file cleaned away meanwhile)."""
    with storage.reader(config) as conn:
        payloads = conn.execute(
            "SELECT payload_json FROM alert_notifications WHERE kind = ? AND status = ? "
            "GROUP BY payload_json ORDER BY min(id)", [Kind.REPORT, Status.PENDING]).fetchall()
    letters = []
    for (payload,) in payloads:
        try:
            letters.append(Letter.from_json(payload))
        except ValueError:
            continue  # deliver_pending says so when it comes to it
    return letters


# --- the delivery log -----------------------------------------------------------------------

def record(config: Config, notification_id: int | None, channel: str, result: DeliveryResult,
           now: datetime, channel_answered: bool = True) -> None:
    """Store one delivery's outcome; only a channel's own answer changes the channel's state."""
    def write(conn: duckdb.DuckDBPyConnection) -> None:
        if notification_id is not None:
            answers = result.attempts or (result.answer,)
            for index, answer in enumerate(answers):  # every attempt, the last one decides
                last = index == len(answers) - 1
                conn.execute("INSERT INTO alert_deliveries VALUES (?, ?, ?, ?, ?, ?)",
                             [notification_id, channel, now, result.ok and last,
                              result.permanent and last, answer])
            row = conn.execute("SELECT attempts FROM alert_notifications WHERE id = ?",
                               [notification_id]).fetchone()
            attempts = (int(row[0]) if row else 0) + 1
            status = (Status.SENT if result.ok else Status.FAILED
                      if result.permanent or attempts >= MAX_CHECKS_PER_NOTIFICATION
                      else Status.PENDING)
            conn.execute("UPDATE alert_notifications SET status = ?, attempts = ?, "
                         "last_answer = ?, claimed_at = NULL, sent_at = CASE WHEN ? THEN ? "
                         "ELSE sent_at END WHERE id = ?",
                         [status, attempts, result.answer, result.ok, now, notification_id])
        if not channel_answered:
            return
        if result.ok:
            conn.execute("DELETE FROM alert_channels WHERE channel = ?", [channel])
        elif result.permanent:  # broken since the first permanent failure
            conn.execute("INSERT INTO alert_channels SELECT ?, true, ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM alert_channels WHERE channel = ?)",
                         [channel, result.answer, now, channel])
    storage.written(config, write, f"recording a delivery to {channel!r}")


def broken_channels(config: Config) -> dict[str, str]:
    """Channels marked broken by a permanent failure, and why (none before the first write)."""
    try:
        with storage.reader(config) as conn:
            return {c: r for c, r in conn.execute(
                "SELECT channel, reason FROM alert_channels WHERE broken").fetchall()}
    except (DatabaseMissing, duckdb.CatalogException):
        return {}


def has_pending(config: Config, now: datetime, kinds: Sequence[str]) -> bool:
    """Whether a notification of ``kinds`` waits to be claimed: read with a reader, so a round
    with nothing to send never takes the writer's lock (True when that cannot be told)."""
    try:
        with storage.reader(config) as conn:
            row = conn.execute("""
                SELECT count(*) FROM alert_notifications
                WHERE kind <> ? AND status = ? AND list_contains(?::VARCHAR[], kind)
                  AND (claimed_at IS NULL OR claimed_at < ?)""",
                               [Kind.TEST, Status.PENDING, list(kinds),
                                now - CLAIM_LEASE]).fetchone()
    except (SpendwatchError, duckdb.CatalogException):  # no file or no table yet: the writer
        return True                                     # creates them
    return bool(row and row[0])


def claim(config: Config, now: datetime, kinds: Sequence[str]
          ) -> list[tuple[int, str, str, str]]:
    """Take the pending notifications of ``kinds`` for this delivery round, so a
    concurrent one (the worker and ``alerts check``) cannot send them too. A claim left by a
    crash expires after a lease. Returns (id, channel, kind, payload)."""
    if not has_pending(config, now, kinds):  # the usual case: no writer for nothing
        return []
    def take(conn: duckdb.DuckDBPyConnection) -> list[tuple[int, str, str, str]]:
        # The lock: a round claiming at the same time (another worker) conflicts, is retried
        # and finds these claimed.
        storage.lock(conn, "outbox")
        claimable = """kind <> ? AND status = ? AND list_contains(?::VARCHAR[], kind)
                       AND (claimed_at IS NULL OR claimed_at < ?)"""
        params = [Kind.TEST, Status.PENDING, list(kinds), now - CLAIM_LEASE]
        taken = [(int(i), c, k, p) for i, c, k, p in conn.execute(
            f"SELECT id, channel, kind, payload_json FROM alert_notifications "
            f"WHERE {claimable}", params).fetchall()]
        if taken:
            conn.execute(f"UPDATE alert_notifications SET claimed_at = ? WHERE {claimable}",
                         [now, *params])
        return taken
    return storage.written(config, take, "claiming the outbox")


# --- sending ---------------------------------------------------------------------------------

def with_attachment(letter: Letter) -> Letter:
    """``letter`` with its file's bytes read now. Raises OSError."""
    if letter.attachment is None:
        return letter
    content = Path(letter.attachment.path).read_bytes()
    return replace(letter, attachment=replace(letter.attachment, content=content))


def _loaded(letter: Letter) -> Letter | DeliveryResult:
    """:func:`with_attachment`, or why not as a result to try again. Never raises: one
    letter's file must not hold up the alerts claimed with it."""
    path = letter.attachment.path if letter.attachment else ""
    try:
        return with_attachment(letter)
    except OSError as exc:
        reason = f"{exc.strerror or type(exc).__name__}; check the reports folder"
    except Exception as exc:
        log.exception("reading the file %s failed", path)
        reason = f"unexpected {type(exc).__name__}"
    return DeliveryResult(False, f"not sent: the report file {path} cannot be read "
                          f"({reason})", permanent=False)


def _send(config: Config, name: str, message: Message, now: datetime,
          broken: dict[str, str], channels: dict[str, Channel | DeliveryResult],
          factory: ChannelFactory, report: CheckReport) -> tuple[DeliveryResult, bool]:
    """Deliver one claimed message to channel ``name``: the result, and whether it is the
    channel's own answer (only that changes the channel's state). ``channels`` holds this
    round's channels, or why one is not tried again."""
    if name in broken:
        return DeliveryResult(False, f"not sent: the channel is broken ({broken[name]}); "
                              "fix it and run `spendwatch alerts test`", permanent=True), False
    if config.alerts.channel(name) is None:
        return DeliveryResult(False, "not sent: the channel is no longer configured",
                              permanent=True), False
    if name not in channels:
        try:
            channels[name] = factory(config, name)
        except ConfigError as exc:  # a missing secret: visible, not a broken channel
            channels[name] = DeliveryResult(False, str(exc), permanent=False)
            report.config_errors[name] = str(exc)
    channel = channels[name]
    if isinstance(channel, DeliveryResult):
        return channel, False
    sending: Message | DeliveryResult = message
    if isinstance(message, Letter):
        # A letter's Date is when it goes out; only the channels that carry files get its file.
        sending = replace(message, at=now)
        if getattr(channel, "takes_attachments", False):
            sending = _loaded(sending)
    if isinstance(sending, DeliveryResult):  # the letter's file, not the channel
        return sending, False
    try:
        result = channel.deliver(sending)
    except Exception as exc:  # a channel's bug must not hold up the others
        log.exception("channel %r raised while delivering", name)
        result = DeliveryResult(False, f"unexpected {type(exc).__name__} in the channel",
                                permanent=False)
    if not result.ok and not result.permanent:
        channels[name] = DeliveryResult(
            False, f"not tried: channel {name} failed earlier in this check "
            f"({result.answer})", permanent=False)
    # A letter refused for what it is (too big, its content): not the channel's state.
    return result, not (message.kind == Kind.REPORT and result.about_message)


def deliver_pending(config: Config, now: datetime, report: CheckReport,
                    factory: ChannelFactory = default_channel,
                    kinds: Sequence[str] = Kind.ALERTS) -> None:
    """Send every pending notification of ``kinds`` (the alerts' by default; the weekly
    reports send their own, :data:`Kind.REPORT`); no database connection is held while
    sending.

    Notifications are claimed first (no double send across processes). A channel that fails
    is not tried again for the rest of this round, so it cannot hold up the others for long;
    its notifications wait for the next check, up to MAX_CHECKS_PER_NOTIFICATION checks.

    A letter refused for what it is (``about_message``: too big, its content) fails that
    letter only and never marks the channel broken for the alerts.
    """
    config = settings.validate(config)
    claimed = sorted(claim(config, now, kinds))
    broken = broken_channels(config)
    channels: dict[str, Channel | DeliveryResult] = {}
    for notification_id, name, sort, payload in claimed:
        try:
            message = decode(sort, payload)
        except ValueError as exc:  # stored by an older spendwatch: it cannot go out
            title = f"{sort} notification {notification_id}"
            result = DeliveryResult(False, f"not sent: the stored {sort} cannot be read "
                                    f"({exc}); send it again", permanent=True)
            answered = False
        else:
            title = message.title
            result, answered = _send(config, name, message, now, broken, channels, factory,
                                     report)
        record(config, notification_id, name, result, now, answered)
        report.deliveries.append((name, title, result))
        if not result.ok:
            log.error("%s to channel %r not delivered: %s", title, name, result.answer)
    report.broken_channels = broken_channels(config)


def send_test(config: Config, name: str, now: datetime,
              factory: ChannelFactory = default_channel) -> DeliveryResult:
    """A clearly marked test message to one channel; success clears its broken flag."""
    config = settings.validate(config)
    test = Notification(kind=Kind.TEST, rule="test message", rule_kind=Kind.TEST,
                        scope={"channel": name}, level="test", value=None,
                        threshold=Decimal(0), unit="usd", window="now",
                        summary="This is a test of spendwatch alerts: no action needed.",
                        started_at=now, at=now,
                        dashboard_url=page_url(config.alerts.dashboard_url, "Alerts"))
    def insert(conn: duckdb.DuckDBPyConnection) -> int:
        notification = storage.next_id(conn, "alert_notifications")
        conn.execute("""INSERT INTO alert_notifications (id, episode_id, kind, channel,
            created_at, status, attempts, payload_json, claimed_at) VALUES (?, NULL, ?, ?, ?,
            ?, 0, ?, ?)""", [notification, Kind.TEST, name, now, Status.SENDING,
                             test.to_json(), now])
        return notification
    notification_id = storage.written(config, insert, "queueing a test message")
    answered = True
    try:
        result = factory(config, name).deliver(test)
    except ConfigError as exc:  # this shell's environment, not the channel: break nothing
        result, answered = DeliveryResult(False, str(exc), permanent=True), False
    record(config, notification_id, name, result, now, answered)
    if not result.ok:
        storage.written(config, lambda conn: conn.execute(
            "UPDATE alert_notifications SET status = ? WHERE id = ?",
            [Status.FAILED, notification_id]), "recording a failed test message")
    return result

