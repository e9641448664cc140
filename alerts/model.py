"""The words alerts are made of, shared by rules, the state machine and the channels.

Vocabulary from Prometheus Alertmanager: an evaluation of a rule for one scope is *ok*,
*firing* or *no data*; a (rule, scope, level) that starts firing opens an *episode*, which may
wait *pending* for the rule's ``for`` duration first; while it fires, *reminders* go out at the
*repeat interval*; when it stops firing it is *resolved*. *Silences* stop notifications (the
episode is still recorded).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Mapping

from alerts.states import FIRING, NO_DATA, OK, Kind

__all__ = ["FIRING", "NO_DATA", "OK", "Evaluation", "Notification", "DeliveryResult",
           "Attachment", "Letter", "Message", "CheckReport", "decode", "KIND_PREFIX"]

#: How a notification's title and headline mark its kind.
KIND_PREFIX = {Kind.FIRING: "FIRING", Kind.REMINDER: "STILL FIRING", Kind.RESOLVED: "RESOLVED",
               Kind.TEST: "TEST"}


@dataclass(frozen=True)
class Evaluation:
    """One rule's verdict for one scope and level, from stored data and a given ``now``.

    ``scope`` names what the value is about (``{"organization": "acme", "feature": "search"}``);
    ``level`` tells apart the thresholds of one rule (``"80%"``); ``window`` is the time the
    value covers, in words (``"today (America/Chicago), since 00:00"``).
    """

    rule: str
    kind: str
    scope: Mapping[str, str]
    level: str
    state: str                   # OK | FIRING | NO_DATA
    value: Decimal | None        # None when there is no data
    threshold: Decimal
    unit: str                    # "usd" | "ratio" | "hours" | "percent" | "x"
    window: str
    summary: str                 # one line a person reads: what crossed what
    page: str = "Overview"       # the dashboard page that shows it

    @property
    def scope_key(self) -> str:
        """A stable text key of the scope, e.g. ``feature=search,organization=acme``."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.scope.items())) or "all"


@dataclass(frozen=True)
class Notification:
    """What a channel sends: built from an episode when it fires, reminds or resolves."""

    kind: str                    # one of Kind.ALERTS
    rule: str
    rule_kind: str
    scope: Mapping[str, str]
    level: str
    value: Decimal | None
    threshold: Decimal
    unit: str
    window: str
    summary: str
    started_at: datetime
    at: datetime
    dashboard_url: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        scope = ", ".join(f"{k} {v}" for k, v in sorted(self.scope.items())) or "all"
        return f"[spendwatch {KIND_PREFIX[self.kind]}] {self.rule} ({scope})"

    def to_json(self) -> str:
        """The stored form (``alert_notifications.payload_json``)."""
        def default(value: Any) -> Any:
            if isinstance(value, Decimal):
                return str(value)
            if isinstance(value, datetime):
                return value.isoformat()
            raise TypeError(type(value).__name__)
        return json.dumps(asdict(self), default=default, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Notification:
        data = json.loads(text)
        for key in ("value", "threshold"):
            data[key] = Decimal(data[key]) if data[key] is not None else None
        for key in ("started_at", "at"):
            data[key] = datetime.fromisoformat(data[key])
        return cls(**data)


@dataclass(frozen=True)
class DeliveryResult:
    """A channel's answer to one attempt. ``permanent`` failures mark the channel broken."""

    ok: bool
    answer: str                  # status and body, or the SMTP reply: never a secret
    permanent: bool = False
    retry_after: float | None = None
    attempts: tuple[str, ...] = ()   # the answer of every attempt, in order (the last = answer)
    # The refusal is about this message (too big, its content), not the channel: another
    # message may well go through (SMTP 552, 5.3.4, 5.6.x; Slack 400, 413).
    about_message: bool = False


@dataclass(frozen=True)
class Attachment:
    """A file that goes with a :class:`Letter` on the channels that carry files (email).

    The outbox reads ``path`` just before sending (``content``, never stored); a file bigger
    than ``zip_above`` bytes goes as ``<name>.zip``.
    """

    path: str
    name: str
    mime: str = "text/csv"
    zip_above: int | None = None
    content: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def zipped(self) -> bool:
        return (self.zip_above is not None and self.content is not None
                and len(self.content) > self.zip_above)


@dataclass(frozen=True)
class Letter:
    """A message that is not an alert (kind "report"), written whole by its sender and only
    carried by the channels: the same words on every channel, in each channel's form.

    ``key`` is stable (``report|acme|2026-W47``): a retry or a resend is the same message
    (the email's Message-ID). ``at`` becomes the moment it goes out. ``labels`` say what it
    is about, for the delivery history (``{"organization": "acme", "week": "2026-W47"}``).
    """

    key: str
    title: str                   # one line naming it: logs, the delivery list
    subject: str                 # the email's subject
    text: str                    # plain text (the email's text part)
    html: str                    # the email's HTML part
    slack: Mapping[str, Any]     # the Slack message: {"text": ..., "blocks": [...]}
    at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    attachment: Attachment | None = None

    kind: ClassVar[str] = Kind.REPORT

    def to_json(self) -> str:
        """The stored form, without the attachment's content."""
        a = self.attachment
        return json.dumps({
            "key": self.key, "title": self.title, "subject": self.subject, "text": self.text,
            "html": self.html, "slack": self.slack, "at": self.at.isoformat(),
            "labels": dict(self.labels),
            "attachment": None if a is None else {"path": a.path, "name": a.name, "mime": a.mime,
                                                  "zip_above": a.zip_above}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Letter:
        """Raises ValueError for a payload that is not a letter (one stored by an older
        spendwatch)."""
        try:
            d = json.loads(text)
            a = d["attachment"]
            return cls(key=d["key"], title=d["title"], subject=d["subject"], text=d["text"],
                       html=d["html"], slack=d["slack"], at=datetime.fromisoformat(d["at"]),
                       labels=d["labels"],
                       attachment=None if a is None else Attachment(
                           a["path"], a["name"], a["mime"], a["zip_above"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a letter ({type(exc).__name__} {exc})") from None


#: What a channel delivers: an alert's notification or a letter (the weekly report).
Message = Notification | Letter


def decode(kind: str, text: str) -> Message:
    """A stored notification's payload: a letter (kind "report") or an alert's.
    Raises ValueError when it cannot be read."""
    return Letter.from_json(text) if kind == Kind.REPORT else Notification.from_json(text)


@dataclass
class CheckReport:
    """What one check (or one delivery round) saw and did, for the CLI and the worker's log."""

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
