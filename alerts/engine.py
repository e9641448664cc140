"""The alert state machine, the notification outbox, and delivery.

Per (rule, scope, level), stored in ``alert_states`` so a restart changes nothing:

    ok --firing--> pending (if the rule has ``for``) --still firing after ``for``--> firing
    ok --firing--> firing                       one "firing" notification per channel
    firing --firing, repeat interval passed-->  one "reminder" per channel
    firing --ok--> ok                           one "resolved" notification per channel
    pending --ok--> ok                          nothing sent
    no data                                     no change (missing data is never "ok")
    not evaluated any more                      the episode ends as "expired", nothing sent
                                                (yesterday's daily level, a removed rule)

Every change is a row in ``alert_transitions``; every episode a row in ``alert_episodes``.
A notification covered by an active silence is stored with status "silenced" and not sent.

Delivery is at least once: notifications wait in ``alert_notifications`` as "pending" and count
as "sent" only after the channel acknowledged them; a transient failure leaves them pending
for the next check, a permanent one marks them failed and the channel broken
(``alert_channels``). Network calls happen with no database connection open, so the dashboard
and the collector are never blocked by a slow channel. One channel failing never blocks another.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import duckdb

from alerts.channels import Channel, build_channel
from alerts.model import FIRING, NO_DATA, REPORT_KIND, DeliveryResult, Evaluation, Message, \
    Notification, WeeklyReport
from alerts.rules import evaluate
from spendwatch import storage
from spendwatch.config import Config, RuleConfig, resolve_channel_secret
from spendwatch.errors import ConfigError, SpendwatchError

log = logging.getLogger(__name__)
ChannelFactory = Callable[[Config, str], Channel]
SCOPE_KEY = re.compile(r"^[a-z_]+=[^,=]+(,[a-z_]+=[^,=]+)*$")


@dataclass
class CheckReport:
    """What one check saw and did, for the CLI and the worker's log."""

    evaluations: list[Evaluation] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)
    deliveries: list[tuple[str, str, DeliveryResult]] = field(default_factory=list)
    broken_channels: dict[str, str] = field(default_factory=dict)
    config_errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A delivery failed for good, a channel is broken or misconfigured: exit non-zero."""
        return bool(self.broken_channels or self.config_errors) or any(
            not r.ok and r.permanent for _, _, r in self.deliveries)


# config key -> the channel's own setting name
_SETTING_NAMES = {"timeout_seconds": "timeout", "min_interval_seconds": "min_interval",
                  "from": "sender", "to": "recipients"}


def default_channel(config: Config, name: str) -> Channel:
    """The configured channel ``name``, its secret read now. Raises ConfigError."""
    channel = config.alerts.channel(name)
    if channel is None:
        raise ConfigError(f"{config.path}: no channel named {name!r} in [[alerts.channels]]")
    settings = {_SETTING_NAMES.get(k, k): (list(v) if isinstance(v, tuple) else v)
                for k, v in channel.settings.items()}
    try:
        return build_channel(channel.name, channel.kind, settings,
                             resolve_channel_secret(config, channel))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{config.path}: channel {name!r}: {exc}") from None


# --- serialising notifications -------------------------------------------------------------

def _to_json(notification: Notification) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)
    return json.dumps(asdict(notification), default=default, sort_keys=True)


def decode(kind: str, text: str) -> Message:
    """A stored notification's payload: a weekly report (kind "report") or an alert's."""
    return WeeklyReport.from_json(text) if kind == REPORT_KIND else _from_json(text)


def _from_json(text: str) -> Notification:
    data = json.loads(text)
    for key in ("value", "threshold"):
        data[key] = Decimal(data[key]) if data[key] is not None else None
    for key in ("started_at", "at"):
        data[key] = datetime.fromisoformat(data[key])
    return Notification(**data)


# --- the state machine -----------------------------------------------------------------------

def _silenced(conn: duckdb.DuckDBPyConnection, rule: str, scope_key: str, now: datetime) -> bool:
    row = conn.execute("SELECT count(*) FROM alert_silences WHERE rule = ? AND "
                       "(scope_key IS NULL OR scope_key = ?) AND created_at <= ? AND "
                       "expires_at > ?", [rule, scope_key, now, now]).fetchone()
    return bool(row and row[0])


class _Machine:
    """Applies one check's evaluations inside one transaction."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, config: Config, now: datetime,
                 report: CheckReport):
        self.conn, self.config, self.now, self.report = conn, config, now, report
        self.rules: Mapping[str, RuleConfig] = {r.name: r for r in config.alerts.rules}

    def state(self, ev: Evaluation) -> tuple[Any, ...] | None:
        return self.conn.execute(
            "SELECT state, since, episode_id, last_notified_at FROM alert_states WHERE rule = ? "
            "AND scope_key = ? AND level = ?", [ev.rule, ev.scope_key, ev.level]).fetchone()

    def save(self, ev: Evaluation, state: str, since: datetime, episode: int | None,
             notified: datetime | None) -> None:
        self.conn.execute("""
            INSERT INTO alert_states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (rule, scope_key, level) DO UPDATE SET state = excluded.state,
              since = excluded.since, episode_id = excluded.episode_id,
              last_result = excluded.last_result, last_value = excluded.last_value,
              last_evaluated_at = excluded.last_evaluated_at,
              last_notified_at = excluded.last_notified_at""",
                          [ev.rule, ev.scope_key, ev.level, state, since, episode, ev.state,
                           ev.value, self.now, notified])

    def transition(self, ev: Evaluation, episode: int | None, old: str, new: str) -> None:
        self.conn.execute("INSERT INTO alert_transitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [episode, ev.rule, ev.scope_key, ev.level, old, new, self.now,
                           ev.value])
        self.report.transitions.append(f"{ev.rule} [{ev.scope_key}] {ev.level}: {old} -> {new}")

    def open_episode(self, ev: Evaluation, firing: bool) -> int:
        row = self.conn.execute("""
            INSERT INTO alert_episodes (rule, rule_kind, scope_key, scope_json, level,
                started_at, firing_at, silenced, threshold, peak_value, unit, summary)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                                [ev.rule, ev.kind, ev.scope_key, json.dumps(dict(ev.scope)),
                                 ev.level, self.now, self.now if firing else None,
                                 _silenced(self.conn, ev.rule, ev.scope_key, self.now),
                                 ev.threshold, ev.value, ev.unit, ev.summary]).fetchone()
        assert row is not None
        return int(row[0])

    def end_episode(self, episode: int, reason: str) -> None:
        self.conn.execute("UPDATE alert_episodes SET ended_at = ?, end_reason = ? WHERE id = ?",
                          [self.now, reason, episode])

    def notify(self, ev: Evaluation, episode: int, kind: str) -> None:
        started = self.conn.execute("SELECT started_at FROM alert_episodes WHERE id = ?",
                                    [episode]).fetchone()
        notification = Notification(
            kind=kind, rule=ev.rule, rule_kind=ev.kind, scope=dict(ev.scope), level=ev.level,
            value=ev.value, threshold=ev.threshold, unit=ev.unit, window=ev.window,
            summary=ev.summary, started_at=started[0] if started else self.now, at=self.now,
            dashboard_url=_page_url(self.config.alerts.dashboard_url, ev.page))
        silenced = _silenced(self.conn, ev.rule, ev.scope_key, self.now)
        if silenced:
            self.conn.execute("UPDATE alert_episodes SET silenced = true WHERE id = ?", [episode])
        for channel in self.rules[ev.rule].channels:
            self.conn.execute("""
                INSERT INTO alert_notifications (episode_id, kind, channel, created_at, status,
                    attempts, payload_json) VALUES (?, ?, ?, ?, ?, 0, ?)""",
                              [episode, kind, channel, self.now,
                               "silenced" if silenced else "pending", _to_json(notification)])

    def apply(self, ev: Evaluation) -> None:
        rule = self.rules[ev.rule]
        current = self.state(ev)
        state, since, episode, notified = current if current else ("ok", self.now, None, None)
        if ev.state == NO_DATA:  # missing data changes nothing, and is never "ok"
            self.save(ev, state, since, episode, notified)
            return
        if episode is not None and ev.value is not None:
            self.conn.execute("UPDATE alert_episodes SET peak_value = greatest(peak_value, ?), "
                              "summary = ? WHERE id = ?", [ev.value, ev.summary, episode])
        if ev.state == FIRING:
            if state == "ok":
                pending = rule.pending_for.total_seconds() > 0
                episode = self.open_episode(ev, firing=not pending)
                new = "pending" if pending else "firing"
                self.transition(ev, episode, "ok", new)
                if new == "firing":
                    self.notify(ev, episode, "firing")
                    notified = self.now
                self.save(ev, new, self.now, episode, notified)
            elif state == "pending":
                if self.now - since >= rule.pending_for:
                    assert episode is not None
                    self.conn.execute("UPDATE alert_episodes SET firing_at = ? WHERE id = ?",
                                      [self.now, episode])
                    self.transition(ev, episode, "pending", "firing")
                    self.notify(ev, episode, "firing")
                    self.save(ev, "firing", self.now, episode, self.now)
                else:
                    self.save(ev, state, since, episode, notified)
            else:  # firing
                assert episode is not None
                if notified is None or self.now - notified >= rule.repeat_interval:
                    self.notify(ev, episode, "reminder")
                    notified = self.now
                self.save(ev, state, since, episode, notified)
            return
        # OK
        if state in ("pending", "firing") and episode is not None:
            self.end_episode(episode, "resolved" if state == "firing" else
                             "cleared_while_pending")
            self.transition(ev, episode, state, "ok")
            if state == "firing":
                self.notify(ev, episode, "resolved")
        self.save(ev, "ok", self.now if state != "ok" else since, None, None)

    def expire(self, seen: set[tuple[str, str, str]]) -> None:
        """States that nothing evaluated this time (a past day's level, a removed rule)."""
        for rule, scope_key, level, state, episode in self.conn.execute(
                "SELECT rule, scope_key, level, state, episode_id FROM alert_states "
                "WHERE state <> 'ok'").fetchall():
            if (rule, scope_key, level) in seen:
                continue
            if episode is not None:
                self.end_episode(episode, "expired")
            self.conn.execute("INSERT INTO alert_transitions VALUES (?, ?, ?, ?, ?, 'ok', ?, "
                              "NULL)", [episode, rule, scope_key, level, state, self.now])
            self.conn.execute("UPDATE alert_states SET state = 'ok', since = ?, episode_id = "
                              "NULL WHERE rule = ? AND scope_key = ? AND level = ?",
                              [self.now, rule, scope_key, level])


def _page_url(base: str | None, page: str) -> str | None:
    """The dashboard page's address; Overview is the dashboard's front page."""
    if not base:
        return None
    return base.rstrip("/") + ("" if page == "Overview" else f"/{page}")


def evaluate_and_record(config: Config, now: datetime, report: CheckReport) -> None:
    """Evaluate every rule and apply the state machine, in one transaction."""
    with storage.writer(config) as conn:
        report.evaluations = evaluate(conn, config, now)
        with storage.transaction(conn):
            machine = _Machine(conn, config, now, report)
            for ev in report.evaluations:
                machine.apply(ev)
            machine.expire({(e.rule, e.scope_key, e.level) for e in report.evaluations})


# --- delivery --------------------------------------------------------------------------------

MAX_CHECKS_PER_NOTIFICATION = 6  # then it is failed for good, and said so
CLAIM_LEASE = timedelta(minutes=15)  # a claim older than this (a crash mid-send) is retried


def _record(config: Config, notification_id: int | None, channel: str, result: DeliveryResult,
            now: datetime, channel_answered: bool = True) -> None:
    """Store one delivery's outcome; only a channel's own answer changes the channel's state."""
    with storage.writer(config) as conn, \
            storage.transaction(conn):
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
            status = ("sent" if result.ok else "failed"
                      if result.permanent or attempts >= MAX_CHECKS_PER_NOTIFICATION
                      else "pending")
            conn.execute("UPDATE alert_notifications SET status = ?, attempts = ?, "
                         "last_answer = ?, claimed_at = NULL, sent_at = CASE WHEN ? THEN ? "
                         "ELSE sent_at END WHERE id = ?",
                         [status, attempts, result.answer, result.ok, now, notification_id])
        if not channel_answered:
            return
        if result.ok:
            conn.execute("DELETE FROM alert_channels WHERE channel = ?", [channel])
        elif result.permanent:
            conn.execute("INSERT INTO alert_channels VALUES (?, true, ?, ?) ON CONFLICT "
                         "(channel) DO NOTHING", [channel, result.answer, now])


def broken_channels(config: Config) -> dict[str, str]:
    with storage.writer(config) as conn:
        return {c: r for c, r in conn.execute(
            "SELECT channel, reason FROM alert_channels WHERE broken").fetchall()}


def _claim(config: Config, now: datetime, kind: str | None = None
           ) -> list[tuple[int, str, str, str]]:
    """Take the pending notifications (of ``kind``, or all) for this check, so a concurrent
    check (the worker and ``alerts check``) cannot send them too. A claim left by a crash
    expires after a lease."""
    with storage.writer(config) as conn, \
            storage.transaction(conn):
        return [(int(i), c, k, p) for i, c, k, p in conn.execute("""
            UPDATE alert_notifications SET claimed_at = ?
            WHERE kind <> 'test' AND status = 'pending' AND (?::VARCHAR IS NULL OR kind = ?)
                  AND (claimed_at IS NULL OR claimed_at < ?)
            RETURNING id, channel, kind, payload_json""",
                                                    [now, kind, kind, now - CLAIM_LEASE]
                                                    ).fetchall()]


def queue_report(conn: duckdb.DuckDBPyConnection, report: WeeklyReport,
                 channels: Sequence[str], now: datetime) -> None:
    """Put ``report`` in the outbox for each of ``channels``, in the caller's transaction;
    ``deliver_pending`` sends it with the alerts, under the same retry rules."""
    for channel in channels:
        conn.execute("""
            INSERT INTO alert_notifications (episode_id, kind, channel, created_at, status,
                attempts, payload_json) VALUES (NULL, ?, ?, ?, 'pending', 0, ?)""",
                     [REPORT_KIND, channel, now, report.to_json()])


def _with_csv(config: Config, report: WeeklyReport) -> WeeklyReport | DeliveryResult:
    """The report with its CSV file's bytes; a file gone since it was written is written
    again from the warehouse first. Never raises: a failure is a result to try again."""
    from reports.weekly import weekly_rows, write_csv

    path = Path(report.csv_path)
    try:
        if not path.exists():
            log.warning("the report file %s is gone; writing it again", path)
            with storage.reader(config) as conn:
                rows = weekly_rows(conn, config, report.since, report.until,
                                   report.organization)
            write_csv(rows, path)
        return replace(report, csv_bytes=path.read_bytes())
    except OSError as exc:
        reason = f"{exc.strerror or type(exc).__name__}; check the reports folder"
    except SpendwatchError as exc:
        reason = str(exc)
    except Exception as exc:  # never let one report hold up the alerts claimed with it
        log.exception("loading the report file %s failed", path)
        reason = f"unexpected {type(exc).__name__}"
    return DeliveryResult(False, f"not sent: the report file {path} cannot be read or "
                          f"written ({reason})", permanent=False)


def _needs_csv(config: Config, name: str) -> bool:
    channel = config.alerts.channel(name)
    return channel is not None and channel.kind == "email"


def deliver_pending(config: Config, now: datetime, report: CheckReport,
                    factory: ChannelFactory = default_channel, kind: str | None = None) -> None:
    """Send every pending notification (of ``kind``, or all); no database connection is held
    while sending.

    Notifications are claimed first (no double send across processes). A channel that fails
    is not tried again for the rest of this check, so it cannot hold up the others for long;
    its notifications wait for the next check, up to MAX_CHECKS_PER_NOTIFICATION checks.

    A weekly report refused for what it is (``about_message``: too big, its content) fails
    that report only and never marks the channel broken for the alerts.
    """
    claimed = sorted(_claim(config, now, kind))
    broken = broken_channels(config)
    channels: dict[str, Channel | DeliveryResult] = {}
    for notification_id, name, sort, payload in claimed:
        decoded = decode(sort, payload)
        title = decoded.title
        message: Message | DeliveryResult = decoded
        answered = True
        if name in broken:
            result = DeliveryResult(False, f"not sent: the channel is broken ({broken[name]}); "
                                    "fix it and run `spendwatch alerts test`", permanent=True)
            answered = False
        elif config.alerts.channel(name) is None:
            result = DeliveryResult(False, "not sent: the channel is no longer configured",
                                    permanent=True)
            answered = False
        else:
            if name not in channels:
                try:
                    channels[name] = factory(config, name)
                except ConfigError as exc:  # a missing secret: visible, not a broken channel
                    channels[name] = DeliveryResult(False, str(exc), permanent=False)
                    report.config_errors[name] = str(exc)
            channel = channels[name]
            if isinstance(message, WeeklyReport) and not isinstance(channel, DeliveryResult):
                # The email's Date is when it goes out; only email carries the file.
                message = replace(message, at=now)
                if _needs_csv(config, name):
                    message = _with_csv(config, message)
            if isinstance(channel, DeliveryResult):
                result, answered = channel, False
            elif isinstance(message, DeliveryResult):  # the report's file, not the channel
                result, answered = message, False
            else:
                try:
                    result = channel.deliver(message)
                except Exception as exc:  # a channel's bug must not hold up the others
                    log.exception("channel %r raised while delivering", name)
                    result = DeliveryResult(False, f"unexpected {type(exc).__name__} in the "
                                            "channel", permanent=False)
                if sort == REPORT_KIND and result.about_message:
                    answered = False  # see above: about the report, not the channel
                if not result.ok and not result.permanent:
                    channels[name] = DeliveryResult(
                        False, f"not tried: channel {name} failed earlier in this check "
                        f"({result.answer})", permanent=False)
        _record(config, notification_id, name, result, now, answered)
        report.deliveries.append((name, title, result))
        if not result.ok:
            log.error("%s to channel %r not delivered: %s", title, name, result.answer)
    report.broken_channels = broken_channels(config)


def check(config: Config, now: datetime, factory: ChannelFactory = default_channel
          ) -> CheckReport:
    """Evaluate, record, notify: what ``spendwatch alerts check`` and the worker run."""
    report = CheckReport()
    evaluate_and_record(config, now, report)
    deliver_pending(config, now, report, factory)
    return report


def send_test(config: Config, name: str, now: datetime,
              factory: ChannelFactory = default_channel) -> DeliveryResult:
    """A clearly marked test message to one channel; success clears its broken flag."""
    test = Notification(kind="test", rule="test message", rule_kind="test",
                        scope={"channel": name}, level="test", value=None,
                        threshold=Decimal(0), unit="usd", window="now",
                        summary="This is a test of spendwatch alerts: no action needed.",
                        started_at=now, at=now,
                        dashboard_url=_page_url(config.alerts.dashboard_url, "Alerts"))
    with storage.writer(config) as conn:
        row = conn.execute("""INSERT INTO alert_notifications (episode_id, kind, channel,
            created_at, status, attempts, payload_json, claimed_at) VALUES (NULL, 'test', ?, ?,
            'sending', 0, ?, ?) RETURNING id""", [name, now, _to_json(test), now]).fetchone()
    answered = True
    try:
        result = factory(config, name).deliver(test)
    except ConfigError as exc:  # this shell's environment, not the channel: break nothing
        result, answered = DeliveryResult(False, str(exc), permanent=True), False
    _record(config, int(row[0]) if row else None, name, result, now, answered)
    if not result.ok:
        with storage.writer(config) as conn:
            conn.execute("UPDATE alert_notifications SET status = 'failed' WHERE id = ?",
                         [row[0] if row else None])
    return result


def add_silence(config: Config, rule: str, scope_key: str | None, until: datetime,
                now: datetime, comment: str | None = None) -> int:
    """Silence ``rule`` (one scope, or all) until ``until``; the CLI and the dashboard use it."""
    if rule not in {r.name for r in config.alerts.rules}:
        raise ConfigError(f"{config.path}: no alert rule named {rule!r}; rules: "
                          + (", ".join(r.name for r in config.alerts.rules) or "none"))
    if scope_key is not None and not SCOPE_KEY.match(scope_key):
        raise ConfigError(f"scope {scope_key!r} is not a scope key; use the form `alerts "
                          "check` shows in brackets, e.g. organization=acme,model=claude-opus-5-5")
    with storage.writer(config) as conn:
        row = conn.execute("INSERT INTO alert_silences (rule, scope_key, created_at, "
                           "expires_at, comment) VALUES (?, ?, ?, ?, ?) RETURNING id",
                           [rule, scope_key, now, until, comment]).fetchone()
    return int(row[0]) if row else 0


def check_after_collection(config: Config, now: datetime) -> None:
    """The worker's hook: check alerts once a collection is stored, and log the outcome."""
    report = check(config, now)
    for line in report.transitions:
        log.warning("alert %s", line)
    for channel, reason in report.broken_channels.items():
        log.error("alert channel %r is broken: %s", channel, reason)


def expire_silence(config: Config, silence_id: int, now: datetime) -> bool:
    """End silence ``silence_id`` at ``now`` (its ``expires_at`` becomes ``now``).

    Returns False when it had already ended (or does not exist). Opens a writer for this one
    update; raises DatabaseBusy when the file stays locked.
    """
    with storage.writer(config) as conn:
        row = conn.execute("UPDATE alert_silences SET expires_at = ? WHERE id = ? "
                           "AND expires_at > ? RETURNING id", [now, silence_id, now]).fetchone()
    return row is not None
