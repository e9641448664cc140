"""The words alerts are made of, shared by rules, the state machine and the channels.

Vocabulary from Prometheus Alertmanager: an evaluation of a rule for one scope is *ok*,
*firing* or *no data*; a (rule, scope, level) that starts firing opens an *episode*, which may
wait *pending* for the rule's ``for`` duration first; while it fires, *reminders* go out at the
*repeat interval*; when it stops firing it is *resolved*. *Silences* stop notifications (the
episode is still recorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping

OK, FIRING, NO_DATA = "ok", "firing", "no_data"
NOTIFICATION_KINDS = ("firing", "reminder", "resolved", "test")
REPORT_KIND = "report"


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

    kind: str                    # one of NOTIFICATION_KINDS
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
        prefix = {"firing": "FIRING", "reminder": "STILL FIRING", "resolved": "RESOLVED",
                  "test": "TEST"}[self.kind]
        scope = ", ".join(f"{k} {v}" for k, v in sorted(self.scope.items())) or "all"
        return f"[spendwatch {prefix}] {self.rule} ({scope})"


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
class Mover:
    """A feature or model whose weekly spend changed: this week's and last week's dollars."""

    dimension: str               # "feature" | "model"
    label: str
    cost_usd: Decimal
    previous_usd: Decimal

    @property
    def change_usd(self) -> Decimal:
        return self.cost_usd - self.previous_usd


@dataclass(frozen=True)
class WeeklyReport:
    """The weekly report of one organization, as the channels send it (kind ``"report"``).

    Optional parts are None or empty when they cannot be said: ``previous_usd`` when last week
    was not collected whole (then there are no movers either), ``cache_hit_ratio`` without
    input tokens, ``savings`` with nothing priced. ``csv_bytes`` is the file, loaded just
    before sending (never stored with the notification).
    """

    organization: str
    week: str                    # 2026-W47
    since: date                  # Monday, local
    until: date                  # Sunday, local
    timezone: str
    total_usd: Decimal
    rows: int
    csv_name: str
    csv_path: str
    at: datetime
    previous_usd: Decimal | None = None
    movers: tuple[Mover, ...] = ()
    cache_hit_ratio: Decimal | None = None
    savings: tuple[tuple[str, Decimal], ...] = ()   # label, dollars, in reading order
    provisional_until: datetime | None = None       # cost may still change until then
    dashboard_url: str | None = None
    csv_bytes: bytes | None = field(default=None, compare=False, repr=False)

    kind = REPORT_KIND

    @property
    def empty(self) -> bool:
        return self.rows == 0 and not self.total_usd

    @property
    def period(self) -> str:
        """``Mon 16 Nov - Sun 22 Nov 2026``; ``Mon 28 Dec 2026 - Sun 3 Jan 2027``."""
        year = f" {self.since.year}" if self.since.year != self.until.year else ""
        return (f"Mon {self.since.day} {self.since:%b}{year} - "
                f"Sun {self.until.day} {self.until:%b} {self.until.year}")

    @property
    def title(self) -> str:
        return f"[spendwatch] Weekly report {self.week}: {self.organization}"

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "organization": self.organization, "week": self.week,
            "since": self.since.isoformat(), "until": self.until.isoformat(),
            "timezone": self.timezone, "total_usd": str(self.total_usd), "rows": self.rows,
            "csv_name": self.csv_name, "csv_path": self.csv_path, "at": self.at.isoformat(),
            "previous_usd": None if self.previous_usd is None else str(self.previous_usd),
            "movers": [[m.dimension, m.label, str(m.cost_usd), str(m.previous_usd)]
                       for m in self.movers],
            "cache_hit_ratio": (None if self.cache_hit_ratio is None
                                else str(self.cache_hit_ratio)),
            "savings": [[label, str(value)] for label, value in self.savings],
            "provisional_until": (None if self.provisional_until is None
                                  else self.provisional_until.isoformat()),
            "dashboard_url": self.dashboard_url}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeeklyReport:
        d = json.loads(text)

        def dec(value: str | None) -> Decimal | None:
            return None if value is None else Decimal(value)

        return cls(
            organization=d["organization"], week=d["week"],
            since=date.fromisoformat(d["since"]), until=date.fromisoformat(d["until"]),
            timezone=d["timezone"], total_usd=Decimal(d["total_usd"]), rows=int(d["rows"]),
            csv_name=d["csv_name"], csv_path=d["csv_path"],
            at=datetime.fromisoformat(d["at"]), previous_usd=dec(d["previous_usd"]),
            movers=tuple(Mover(m[0], m[1], Decimal(m[2]), Decimal(m[3])) for m in d["movers"]),
            cache_hit_ratio=dec(d["cache_hit_ratio"]),
            savings=tuple((label, Decimal(value)) for label, value in d["savings"]),
            provisional_until=(None if d["provisional_until"] is None
                               else datetime.fromisoformat(d["provisional_until"])),
            dashboard_url=d["dashboard_url"])


#: What a channel delivers: an alert's notification or a weekly report.
Message = Notification | WeeklyReport
