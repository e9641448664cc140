"""The words alerts are made of, shared by rules, the state machine and the channels.

Vocabulary from Prometheus Alertmanager: an evaluation of a rule for one scope is *ok*,
*firing* or *no data*; a (rule, scope, level) that starts firing opens an *episode*, which may
wait *pending* for the rule's ``for`` duration first; while it fires, *reminders* go out at the
*repeat interval*; when it stops firing it is *resolved*. *Silences* stop notifications (the
episode is still recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Mapping

OK, FIRING, NO_DATA = "ok", "firing", "no_data"
NOTIFICATION_KINDS = ("firing", "reminder", "resolved", "test")


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
