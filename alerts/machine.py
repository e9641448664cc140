"""The alert state machine: per (rule, scope, level), stored in ``alert_states`` so a restart
changes nothing:

    ok --firing--> pending (if the rule has ``for``) --still firing after ``for``--> firing
    ok --firing--> firing                       one "firing" notification per channel
    firing --firing, repeat interval passed-->  one "reminder" per channel
    firing --ok--> ok                           one "resolved" notification per channel
    pending --ok--> ok                          nothing sent
    no data                                     no change (missing data is never "ok")
    not evaluated any more                      the episode ends as "expired", nothing sent
                                                (yesterday's daily level, a removed rule)

Every change is a row in ``alert_transitions``; every episode a row in ``alert_episodes``.
Notifications go into the outbox (:mod:`alerts.outbox`) in the same transaction; one covered
by an active silence (:mod:`alerts.silences`) is stored as "silenced" and not sent.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

import duckdb
import pyarrow as pa

from alerts import settings
from alerts.model import CheckReport, Evaluation, Notification
from alerts.outbox import queue
from alerts.rules import evaluate, page_view
from alerts.silences import active_silences, covers
from alerts.states import EndReason, Kind, State, Status
from alerts.words import page_url
from spendwatch import storage
from spendwatch.config import Config, RuleConfig


_QUANTUM = Decimal(1).scaleb(-12)  # alert_states.last_value is DECIMAL(38, 12)


class _Machine:
    """Applies one check's evaluations inside one transaction."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, config: Config, now: datetime,
                 report: CheckReport):
        self.conn, self.config, self.now, self.report = conn, config, now, report
        self.rules: Mapping[str, RuleConfig] = {r.name: r for r in config.alerts.rules}
        self._states: dict[tuple[str, str, str], tuple[Any, ...]] | None = None
        self._saved: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._silences: frozenset[tuple[str, str | None]] | None = None
        self._ids: dict[str, int] = {}

    def silenced(self, ev: Evaluation) -> bool:
        """Whether a silence active at ``now`` covers the evaluation; the silences are read
        once per check (a check that opened 600 episodes asked twice for each)."""
        if self._silences is None:
            self._silences = active_silences(self.conn, self.now)
        return covers(self._silences, ev.rule, ev.scope_key)

    def next_id(self, table: str) -> int:
        """:func:`spendwatch.storage.next_id`, asked once per table and check: its first call
        takes the table's lock, held to the end of this transaction, so no other writer
        inserts into the table meanwhile and the ids after it are this check's to count."""
        if table not in self._ids:
            self._ids[table] = storage.next_id(self.conn, table)
        else:
            self._ids[table] += 1
        return self._ids[table]

    def state(self, ev: Evaluation) -> tuple[Any, ...] | None:
        """(state, since, episode_id, last_notified_at) of the evaluation's (rule, scope, level),
        read once per check for every stored state (one query, not one per scope)."""
        if self._states is None:
            self._states = {(r, k, lv): (st, since, ep, notified)
                            for r, k, lv, st, since, ep, notified in self.conn.execute(
                                "SELECT rule, scope_key, level, state, since, episode_id, "
                                "last_notified_at FROM alert_states").fetchall()}
        return self._states.get((ev.rule, ev.scope_key, ev.level))

    def save(self, ev: Evaluation, state: str, since: datetime, episode: int | None,
             notified: datetime | None) -> None:
        """Keep the new state; :meth:`flush` writes every saved state in one statement."""
        key = (ev.rule, ev.scope_key, ev.level)
        if self._states is not None:
            self._states[key] = (state, since, episode, notified)
        self._saved[key] = (state, since, episode, ev.state, ev.value, notified)

    def flush(self) -> None:
        """Write the states :meth:`save` kept: one upsert from an Arrow table."""
        if not self._saved:
            return
        keys, values = list(self._saved), list(self._saved.values())
        table = pa.table({
            "rule": pa.array([k[0] for k in keys], pa.string()),
            "scope_key": pa.array([k[1] for k in keys], pa.string()),
            "level": pa.array([k[2] for k in keys], pa.string()),
            "state": pa.array([str(v[0]) for v in values], pa.string()),
            "since": pa.array([v[1] for v in values], pa.timestamp("us", tz="UTC")),
            "episode_id": pa.array([v[2] for v in values], pa.int64()),
            "last_result": pa.array([str(v[3]) for v in values], pa.string()),
            "last_value": pa.array([None if v[4] is None else Decimal(v[4]).quantize(_QUANTUM)
                                    for v in values], pa.decimal128(38, 12)),
            "last_evaluated_at": pa.array([self.now] * len(keys), pa.timestamp("us", tz="UTC")),
            "last_notified_at": pa.array([v[5] for v in values],
                                         pa.timestamp("us", tz="UTC"))})
        storage.register(self.conn, "saved_alert_states", table)
        storage.replace_rows(self.conn, "alert_states", ("rule", "scope_key", "level"),
                             "SELECT * FROM saved_alert_states")
        storage.unregister(self.conn, "saved_alert_states")
        self._saved.clear()

    def transition(self, ev: Evaluation, episode: int | None, old: str, new: str) -> None:
        self.conn.execute("INSERT INTO alert_transitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [episode, ev.rule, ev.scope_key, ev.level, old, new, self.now,
                           ev.value])
        self.report.transitions.append(f"{ev.rule} [{ev.scope_key}] {ev.level}: {old} -> {new}")

    def open_episode(self, ev: Evaluation, firing: bool) -> int:
        episode = self.next_id("alert_episodes")
        self.conn.execute("""
            INSERT INTO alert_episodes (id, rule, rule_kind, scope_key, scope_json, level,
                started_at, firing_at, silenced, threshold, peak_value, unit, summary)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                          [episode, ev.rule, ev.kind, ev.scope_key, json.dumps(dict(ev.scope)),
                           ev.level, self.now, self.now if firing else None,
                           self.silenced(ev),
                           ev.threshold, ev.value, ev.unit, ev.summary])
        return episode

    def end_episode(self, episode: int, reason: str) -> None:
        self.conn.execute("UPDATE alert_episodes SET ended_at = ?, end_reason = ? WHERE id = ?",
                          [self.now, reason, episode])

    def notify(self, ev: Evaluation, episode: int, kind: str, opened: bool = False) -> None:
        """Queue the notification of ``episode`` (``opened``: it began in this check, now)."""
        started = (self.now,) if opened else self.conn.execute(
            "SELECT started_at FROM alert_episodes WHERE id = ?", [episode]).fetchone()
        notification = Notification(
            kind=kind, rule=ev.rule, rule_kind=ev.kind, scope=dict(ev.scope), level=ev.level,
            value=ev.value, threshold=ev.threshold, unit=ev.unit, window=ev.window,
            summary=ev.summary, started_at=started[0] if started else self.now, at=self.now,
            dashboard_url=page_url(self.config.alerts.dashboard_url, ev.page,
                                   page_view(ev, self.now, self.config.tz,
                                             self.rules[ev.rule].params)))
        silenced = self.silenced(ev)
        if silenced:
            self.conn.execute("UPDATE alert_episodes SET silenced = true WHERE id = ?", [episode])
        queue(self.conn, notification, self.rules[ev.rule].channels, self.now, episode,
              Status.SILENCED if silenced else Status.PENDING, ids=self.next_id)

    def apply(self, ev: Evaluation) -> None:
        rule = self.rules[ev.rule]
        current = self.state(ev)
        state, since, episode, notified = current if current else (State.OK, self.now, None,
                                                                   None)
        if ev.state == State.NO_DATA:  # missing data changes nothing, and is never "ok"
            self.save(ev, state, since, episode, notified)
            return
        if episode is not None and ev.value is not None:
            self.conn.execute("UPDATE alert_episodes SET peak_value = greatest(peak_value, ?), "
                              "summary = ? WHERE id = ?", [ev.value, ev.summary, episode])
        if ev.state == State.FIRING:
            if state == State.OK:
                pending = rule.pending_for.total_seconds() > 0
                episode = self.open_episode(ev, firing=not pending)
                new = State.PENDING if pending else State.FIRING
                self.transition(ev, episode, State.OK, new)
                if new == State.FIRING:
                    self.notify(ev, episode, Kind.FIRING, opened=True)
                    notified = self.now
                self.save(ev, new, self.now, episode, notified)
            elif state == State.PENDING:
                if self.now - since >= rule.pending_for:
                    assert episode is not None
                    self.conn.execute("UPDATE alert_episodes SET firing_at = ? WHERE id = ?",
                                      [self.now, episode])
                    self.transition(ev, episode, State.PENDING, State.FIRING)
                    self.notify(ev, episode, Kind.FIRING)
                    self.save(ev, State.FIRING, self.now, episode, self.now)
                else:
                    self.save(ev, state, since, episode, notified)
            else:  # firing
                assert episode is not None
                if notified is None or self.now - notified >= rule.repeat_interval:
                    self.notify(ev, episode, Kind.REMINDER)
                    notified = self.now
                self.save(ev, state, since, episode, notified)
            return
        # OK
        if state in (State.PENDING, State.FIRING) and episode is not None:
            self.end_episode(episode, EndReason.RESOLVED if state == State.FIRING else
                             EndReason.CLEARED_WHILE_PENDING)
            self.transition(ev, episode, state, State.OK)
            if state == State.FIRING:
                self.notify(ev, episode, Kind.RESOLVED)
        self.save(ev, State.OK, self.now if state != State.OK else since, None, None)

    def expire(self, seen: set[tuple[str, str, str]]) -> None:
        """States that nothing evaluated this time (a past day's level, a removed rule)."""
        for rule, scope_key, level, state, episode in self.conn.execute(
                "SELECT rule, scope_key, level, state, episode_id FROM alert_states "
                "WHERE state <> ?", [State.OK]).fetchall():
            if (rule, scope_key, level) in seen:
                continue
            if episode is not None:
                self.end_episode(episode, EndReason.EXPIRED)
            self.conn.execute("INSERT INTO alert_transitions VALUES (?, ?, ?, ?, ?, ?, ?, "
                              "NULL)", [episode, rule, scope_key, level, state, State.OK,
                                        self.now])
            self.conn.execute("UPDATE alert_states SET state = ?, since = ?, episode_id = "
                              "NULL WHERE rule = ? AND scope_key = ? AND level = ?",
                              [State.OK, self.now, rule, scope_key, level])


def evaluate_and_record(config: Config, now: datetime, report: CheckReport) -> None:
    """Evaluate every rule and apply the state machine, in one transaction."""
    config = settings.validate(config)
    with storage.writer(config) as conn:
        report.evaluations = evaluate(conn, config, now)

    def record(conn: duckdb.DuckDBPyConnection) -> None:
        # One check at a time records (the lock): a second, at once in another worker,
        # conflicts, is retried and finds the states the first one left.
        storage.lock(conn, "alerts")
        report.transitions.clear()
        machine = _Machine(conn, config, now, report)
        for ev in report.evaluations:
            machine.apply(ev)
        machine.flush()
        machine.expire({(e.rule, e.scope_key, e.level) for e in report.evaluations})
    storage.written(config, record, "recording the alert check")
