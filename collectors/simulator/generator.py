"""The synthetic organization behind the simulator: a pure, deterministic data model.

Everything here is a function of the seed, the UTC hour asked about and the revision state;
nothing reads the network or the disk (except the price table shipped with spendwatch).

Contracts
---------
- The finest grain is the **hour record** (:class:`UsageRecord`): per UTC hour, one record
  per (kind, model, workspace_id, api_key_id, service_tier, context_window) with usage in that
  hour. ``kind`` is ``"tokens"`` (a model's token usage, optional web searches),
  ``"code_execution"`` (container hours, model/tier/context window null, tokens 0,
  ``requests`` = execution spans > 0) or ``"session_usage"`` (Managed Agents session hours,
  model null, requests 0).
- An hour exists only when ``HISTORY_START <= hour < floor_hour(now)``: no future or
  in-progress data.
- The values of one hour are drawn from ``random.Random`` seeded with a string built from
  (seed, hour, key, model, tier, context window), so any hour can be computed alone and two
  organizations with the same seed agree record for record.
- Costs are Decimal **cents**, computed once per record with
  :func:`spendwatch.pricing.default_price_table` on the record's UTC day; ``amount`` equals
  ``list_amount`` (no discounts). Summing records never rounds.
- Late data: :meth:`SimulatedOrg.revise` opens a revision window over the last ``hours``
  completed hours before now; an hour inside ``k`` such windows has every count scaled by
  ``1.07 ** k`` (rounded half-up to integers; runtime hours to 0.001 h) and its cost follows.
  One combination (``support-bot-staging`` on ``claude-opus-5-5``) exists only in revised
  hours and one (``+ops notebook`` on ``claude-haiku-4-5-20251001``) exists only in
  unrevised hours.
- People and products: every record is split into :class:`UsagePart` s, one per (product,
  actor) that used it (:meth:`SimulatedOrg.parts`), whose integer counts add up exactly to the
  record's (and whose costs, unrounded, to its cost), drawn from the seed and the record's
  combination, so nothing of the records changes. Actors: 30 people in 4 RBAC groups (2 in
  two groups), a deleted user, 2 service accounts, one federated identity, the API keys
  themselves (``api_actor``) and usage with no attributable identity (actor None). Batch
  token traffic is always ``message_batches_api``.
- Fast mode and US-only inference exist only with ``fast_and_us=True`` (CLI
  ``--fast-and-us``; off by default): then a share of each record's counts on a model with a
  fast price (never on the Batch API) becomes a ``speed="fast"`` record, and a share on a model
  with US-only inference an ``inference_geo="us"`` record (the rest ``"global"``), billed at
  their premiums; the counts per combination and hour stay those of the switch off.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from random import Random
from typing import Iterable, Iterator, Mapping, Sequence, TypeVar
from zoneinfo import ZoneInfo

from spendwatch.pricing import PriceTable, default_price_table

UTC = timezone.utc
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

#: First hour of the synthetic history (the legacy API serves from here).
HISTORY_START = datetime(2025, 9, 1, tzinfo=UTC)
#: The Analytics API refuses ``starting_at`` before this instant.
ANALYTICS_EARLIEST = datetime(2026, 1, 1, tzinfo=UTC)
#: The Analytics API refuses ``starting_at`` older than this before now.
ANALYTICS_MAX_AGE = timedelta(days=365)
#: Time zone of the organization's people (drives the daily rhythm).
LOCAL_TZ = ZoneInfo("America/Chicago")

#: Token types in the order they are reported (Analytics ``token_type`` values).
TOKEN_TYPES: tuple[str, ...] = (
    "uncached_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
#: Price-table component of each token type.
TOKEN_COMPONENT: Mapping[str, str] = {
    "uncached_input_tokens": "input",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
    "cache_read_input_tokens": "cache_read",
    "output_tokens": "output",
}
#: Cost types in reporting order.
COST_TYPES: tuple[str, ...] = ("tokens", "web_search", "code_execution", "session_usage")

#: Display names used in legacy cost descriptions.
MODEL_DISPLAY_NAMES: Mapping[str, str] = {
    "claude-haiku-5-5": "Claude Haiku 5.5",
    "claude-sonnet-5-5": "Claude Sonnet 5.5",
    "claude-opus-5-5": "Claude Opus 5.5",
    "claude-sonnet-4-6": "Claude Sonnet 4.6",
    "claude-haiku-4-5-20251001": "Claude Haiku 4.5",
}
TOKEN_TYPE_LABELS: Mapping[str, str] = {
    "uncached_input_tokens": "Input Tokens",
    "cache_creation.ephemeral_5m_input_tokens": "5m Cache Write",
    "cache_creation.ephemeral_1h_input_tokens": "1h Cache Write",
    "cache_read_input_tokens": "Cache Read",
    "output_tokens": "Output Tokens",
}

_CENTS_PER_DOLLAR = Decimal(100)
_REVISION_FACTOR = Decimal("1.07")
_RUNTIME_QUANTUM = Decimal("0.001")


# --------------------------------------------------------------------------------------------
# Time helpers


def floor_hour(moment: datetime) -> datetime:
    """``moment`` (tz-aware) converted to UTC and truncated to the hour."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    """``moment`` (tz-aware) converted to UTC and truncated to midnight UTC."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def format_rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with a ``Z`` suffix and whole seconds, e.g. ``2026-11-24T12:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse a tz-aware RFC 3339 timestamp (``Z`` or an offset) into a UTC datetime.

    A space where the offset's ``+`` belongs (a ``+`` left unescaped in a query string) is
    accepted. Raises ValueError for anything else, including a naive timestamp or a bare date.
    """
    value = text.strip()
    if len(value) > 19 and value[-6] == " " and value[-3] == ":":
        value = value[:-6] + "+" + value[-5:]
    if "T" not in value and "t" not in value:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    parsed = datetime.fromisoformat(value.replace("z", "Z"))
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"RFC 3339 date-time without a time zone offset: {text!r}")
    return parsed.astimezone(UTC)


def hours_between(start: datetime, end: datetime) -> Iterator[datetime]:
    """Hour starts ``h`` with ``floor_hour(start) <= h < end`` (``start`` rounded down)."""
    hour = floor_hour(start)
    while hour < end:
        yield hour
        hour += HOUR


def decimal_str(value: Decimal) -> str:
    """A Decimal as a plain decimal string without exponent or trailing zeros ("12378.912")."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def cents_to_dollars(cents: Decimal) -> Decimal:
    """Exact conversion of cents to dollars."""
    return cents / _CENTS_PER_DOLLAR


def stable_suffix(seed: int, label: str, length: int = 24) -> str:
    """A stable base-32 (Crockford alphabet) string derived from the seed and a label."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz"
    digest = hashlib.sha256(f"spendwatch-sim:{seed}:{label}".encode()).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, len(alphabet))
        chars.append(alphabet[rem])
    return "".join(chars)


# --------------------------------------------------------------------------------------------
# Organization structure


@dataclass(frozen=True)
class Workspace:
    """A workspace. ``is_default`` marks the organization's default workspace."""

    id: str
    slug: str
    name: str
    created_at: datetime
    archived_at: datetime | None
    display_color: str
    is_default: bool = False

    @property
    def legacy_id(self) -> str | None:
        """The id the legacy Admin API reports: None for the default workspace."""
        return None if self.is_default else self.id


@dataclass(frozen=True)
class ApiKey:
    """A named API key. Usage stops at ``usage_until`` (archive/deactivation), if set."""

    id: str
    slug: str
    name: str
    workspace_id: str
    status: str
    created_at: datetime
    usage_until: datetime | None
    partial_key_hint: str
    created_by_user_id: str


@dataclass(frozen=True)
class ModelUse:
    """How one key uses one (model, tier, context window): per-request averages and shares.

    Prompt tokens per request split into cache reads (``read_share``), 5-minute writes
    (``write_5m_share``), 1-hour writes (``write_1h_share``) and the rest uncached.
    """

    model: str
    weight: float
    tier: str = "standard"
    context_window: str = "0-200k"
    prompt_tokens: int = 4000
    output_tokens: int = 400
    read_share: float = 0.5
    write_5m_share: float = 0.05
    write_1h_share: float = 0.0
    web_search_rate: float = 0.0
    absent_prob: float = 0.03
    cold_prob: float = 0.0  # chance an hour's cached prefix is broken: no reads, all uncached
    only_revised: bool = False
    only_unrevised: bool = False


@dataclass(frozen=True)
class KeyProfile:
    """Traffic of one key (``key_slug`` None = Console Workbench, no API key)."""

    key_slug: str | None
    workspace_slug: str
    rhythm: str
    volume: float
    uses: tuple[ModelUse, ...]
    code_exec_spans: float = 0.0
    session_rate: float = 0.0


_WORKSPACES: tuple[tuple[str, str, str, str | None, str, bool], ...] = (
    # slug, name, created_at, archived_at, color, is_default
    ("default", "Default", "2025-05-12T15:04:11Z", None, "#6C5BB9", True),
    ("support", "Support", "2025-06-03T14:20:45Z", None, "#4D9E7A", False),
    ("search", "Search", "2025-06-18T16:02:09Z", None, "#D97757", False),
    ("data-platform", "Data Platform", "2025-07-07T13:45:30Z", None, "#3B7DD8", False),
    ("old-experiments", "Old Experiments", "2025-05-20T18:11:52Z", "2026-11-10T16:00:00Z", "#9B9B9B", False),
)

_API_KEYS: tuple[tuple[str, str, str, str, str, str | None], ...] = (
    # slug, name, workspace slug, status, created_at, usage_until
    ("support-bot-prod", "support-bot-prod", "support", "active", "2025-06-04T09:12:00Z", None),
    ("support-bot-staging", "support-bot-staging", "support", "active", "2025-06-04T09:15:31Z", None),
    ("search-rag", "search-rag", "search", "active", "2025-06-19T10:00:00Z", None),
    ("nightly-summaries", "nightly-summaries", "data-platform", "active", "2025-07-08T11:30:00Z", None),
    ("data-enrichment-batch", "data-enrichment-batch", "data-platform", "active", "2025-07-21T15:45:00Z", None),
    ("eval-harness", "eval-harness", "default", "active", "2025-08-14T17:20:00Z", None),
    ("ops-notebook", "+ops notebook", "default", "active", "2025-08-25T08:05:00Z", None),
    ("legacy-prototype", "legacy-prototype", "old-experiments", "archived", "2025-05-21T12:00:00Z",
     "2026-11-10T16:00:00Z"),
    ("marketing-drafts", "marketing-drafts", "default", "inactive", "2025-06-30T13:00:00Z",
     "2026-10-01T00:00:00Z"),
)

_PROFILES: tuple[KeyProfile, ...] = (
    KeyProfile("support-bot-prod", "support", "support", 900.0, (
        ModelUse("claude-sonnet-5-5", 0.65, prompt_tokens=6000, output_tokens=450,
                 read_share=0.70, write_5m_share=0.08, write_1h_share=0.02),
        ModelUse("claude-haiku-5-5", 0.35, prompt_tokens=3000, output_tokens=250,
                 read_share=0.60, write_5m_share=0.10),
    ), session_rate=0.8),
    KeyProfile("support-bot-staging", "support", "office", 40.0, (
        ModelUse("claude-sonnet-5-5", 1.0, prompt_tokens=6000, output_tokens=450,
                 read_share=0.55, write_5m_share=0.12, absent_prob=0.15),
        ModelUse("claude-opus-5-5", 0.3, prompt_tokens=6000, output_tokens=600,
                 read_share=0.3, write_5m_share=0.2, absent_prob=0.2, only_revised=True),
    )),
    KeyProfile("search-rag", "search", "office", 300.0, (
        ModelUse("claude-sonnet-4-6", 0.60, prompt_tokens=12000, output_tokens=600,
                 read_share=0.50, write_5m_share=0.05, write_1h_share=0.08, web_search_rate=0.4),
        ModelUse("claude-sonnet-4-6", 0.02, context_window="200k-1M", prompt_tokens=350000,
                 output_tokens=900, read_share=0.60, write_1h_share=0.05, web_search_rate=0.2,
                 absent_prob=0.25),
        ModelUse("claude-haiku-4-5-20251001", 0.35, prompt_tokens=2500, output_tokens=150,
                 read_share=0.30, write_5m_share=0.05, web_search_rate=0.1),
    )),
    KeyProfile("nightly-summaries", "data-platform", "nightly", 2500.0, (
        ModelUse("claude-haiku-5-5", 0.8, tier="batch", prompt_tokens=8000, output_tokens=600,
                 read_share=0.20, write_1h_share=0.05),
        ModelUse("claude-sonnet-5-5", 0.2, tier="batch", prompt_tokens=9000, output_tokens=900,
                 read_share=0.20, write_1h_share=0.05),
    )),
    KeyProfile("data-enrichment-batch", "data-platform", "evening", 1500.0, (
        ModelUse("claude-haiku-4-5-20251001", 0.7, tier="batch", prompt_tokens=4000,
                 output_tokens=300, read_share=0.50, write_5m_share=0.10),
        ModelUse("claude-opus-5-5", 0.3, tier="batch", prompt_tokens=6000, output_tokens=800,
                 read_share=0.40, write_1h_share=0.10),
    ), code_exec_spans=30.0),
    KeyProfile("eval-harness", "default", "office", 120.0, (
        # Poor caching: many writes, few reads.
        ModelUse("claude-opus-5-5", 0.4, prompt_tokens=20000, output_tokens=1500,
                 read_share=0.05, write_5m_share=0.40, cold_prob=0.3),
        ModelUse("claude-sonnet-5-5", 0.4, prompt_tokens=15000, output_tokens=1200,
                 read_share=0.05, write_5m_share=0.35),
        ModelUse("claude-sonnet-4-6", 0.2, prompt_tokens=15000, output_tokens=1000,
                 read_share=0.05, write_5m_share=0.30, absent_prob=0.1),
    ), code_exec_spans=12.0),
    KeyProfile("ops-notebook", "default", "office", 15.0, (
        ModelUse("claude-sonnet-5-5", 0.7, prompt_tokens=5000, output_tokens=800,
                 read_share=0.30, write_5m_share=0.10, write_1h_share=0.05, absent_prob=0.2),
        ModelUse("claude-haiku-4-5-20251001", 0.3, prompt_tokens=2000, output_tokens=300,
                 read_share=0.2, write_5m_share=0.1, absent_prob=0.3, only_unrevised=True),
    )),
    KeyProfile("legacy-prototype", "old-experiments", "office", 60.0, (
        ModelUse("claude-sonnet-4-6", 1.0, prompt_tokens=4000, output_tokens=500,
                 read_share=0.30, write_5m_share=0.10, absent_prob=0.1),
    )),
    KeyProfile("marketing-drafts", "default", "office", 30.0, (
        ModelUse("claude-opus-5-5", 0.5, prompt_tokens=3000, output_tokens=1200,
                 read_share=0.2, write_5m_share=0.1, absent_prob=0.2),
        ModelUse("claude-sonnet-5-5", 0.5, prompt_tokens=3000, output_tokens=1000,
                 read_share=0.2, write_5m_share=0.1, absent_prob=0.2),
    )),
    KeyProfile(None, "default", "office", 8.0, (
        ModelUse("claude-sonnet-5-5", 0.6, prompt_tokens=5000, output_tokens=700,
                 read_share=0.2, write_5m_share=0.1, write_1h_share=0.05, absent_prob=0.25),
        ModelUse("claude-opus-5-5", 0.4, prompt_tokens=5000, output_tokens=900,
                 read_share=0.1, write_5m_share=0.1, absent_prob=0.3),
    )),
)


def activity(hour: datetime, rhythm: str) -> float:
    """Fraction of a key's peak hourly volume active in the UTC ``hour``.

    Rhythms follow America/Chicago local time: ``office`` (busy 8-18, quiet at night),
    ``support`` (office hours plus a 24/7 floor), ``nightly`` (batch jobs 1-5 local),
    ``evening`` (batch jobs 19-23 local). Weekends run at 30% of weekdays.
    """
    local = hour.astimezone(LOCAL_TZ)
    h = local.hour
    weekend = 0.3 if local.weekday() >= 5 else 1.0
    if rhythm == "office":
        if 8 <= h < 18:
            base = 1.15 if 11 <= h < 15 else 1.0
        elif 6 <= h < 8 or 18 <= h < 22:
            base = 0.3
        else:
            base = 0.05
    elif rhythm == "support":
        if 8 <= h < 18:
            base = 1.0
        elif 6 <= h < 8 or 18 <= h < 23:
            base = 0.45
        else:
            base = 0.15
    elif rhythm == "nightly":
        base = 1.0 if 1 <= h < 5 else 0.0
    elif rhythm == "evening":
        base = 1.0 if 19 <= h < 23 else 0.0
    else:
        raise ValueError(f"unknown rhythm {rhythm!r}")
    return base * weekend


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class UsageRecord:
    """One hour of one combination. Costs are ``(cost_type, token_type, cents)`` triples.

    ``workspace_id`` is always the real ``wrkspc_`` id (the default workspace too);
    ``api_key_id`` is None for Console Workbench usage. ``speed`` is ``"standard"`` and
    ``inference_geo`` None unless the organization has ``fast_and_us`` on (then ``speed`` may be
    ``"fast"`` and ``inference_geo`` is ``"global"`` or ``"us"`` on the models that offer
    US-only inference); code execution / session records have model, service_tier and
    context_window None.
    """

    hour: datetime
    kind: str
    model: str | None
    workspace_id: str
    api_key_id: str | None
    service_tier: str | None
    context_window: str | None
    speed: str | None
    uncached_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0
    web_search_requests: int = 0
    requests: int = 0
    runtime_hours: Decimal = Decimal(0)
    costs: tuple[tuple[str, str | None, Decimal], ...] = ()
    inference_geo: str | None = None

    @property
    def total_tokens(self) -> int:
        """Sum of the five token counts."""
        return (
            self.uncached_input_tokens
            + self.cache_creation_5m
            + self.cache_creation_1h
            + self.cache_read_input_tokens
            + self.output_tokens
        )

    @property
    def cost_cents(self) -> Decimal:
        """Total cost of the record in cents."""
        return sum((c for _, _, c in self.costs), Decimal(0))

    def token_count(self, token_type: str) -> int:
        """The count of one Analytics ``token_type``."""
        return {
            "uncached_input_tokens": self.uncached_input_tokens,
            "cache_creation.ephemeral_5m_input_tokens": self.cache_creation_5m,
            "cache_creation.ephemeral_1h_input_tokens": self.cache_creation_1h,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }[token_type]


def legacy_description(
    cost_type: str, token_type: str | None, model: str | None, tier: str | None, context_window: str | None
) -> str:
    """The legacy cost report's ``description`` of one cost line.

    Token lines read ``"<Model display name> Usage - <label>"`` with label ``Input Tokens``,
    ``Output Tokens``, ``Cache Read``, ``5m Cache Write`` or ``1h Cache Write``, and a suffix
    ``" (Batch)"``, ``" (Long Context)"`` or ``" (Batch, Long Context)"`` for the batch tier
    and the ``200k-1M`` context window. Others: ``Web Search Usage``, ``Code Execution Usage``,
    ``Session Usage``.
    """
    if cost_type == "web_search":
        return "Web Search Usage"
    if cost_type == "code_execution":
        return "Code Execution Usage"
    if cost_type == "session_usage":
        return "Session Usage"
    assert model is not None and token_type is not None
    name = MODEL_DISPLAY_NAMES.get(model, model)
    text = f"{name} Usage - {TOKEN_TYPE_LABELS[token_type]}"
    extras = []
    if tier == "batch":
        extras.append("Batch")
    if context_window == "200k-1M":
        extras.append("Long Context")
    if extras:
        text += f" ({', '.join(extras)})"
    return text


# --------------------------------------------------------------------------------------------
# People and products (the Analytics API's ``actor``, ``product`` and ``rbac_group_id``)

#: Products the simulated organization uses (Analytics ``product`` values).
PRODUCTS: tuple[str, ...] = (
    "messages_api",
    "message_batches_api",
    "claude_code",
    "managed_agents_api",
    "chat",
    "cowork",
    "claude_console",
)

#: RBAC groups: (slug, name).
_RBAC_GROUPS: tuple[tuple[str, str], ...] = (
    ("engineering", "Engineering"),
    ("support", "Support"),
    ("data", "Data"),
    ("go-to-market", "Go-to-market"),
)

#: The 30 people: (name, RBAC group slugs). Two of them are in two groups.
_PEOPLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ada Okafor", ("engineering",)),
    ("Bruno Lindqvist", ("engineering",)),
    ("Chen Wei", ("engineering",)),
    ("Dara Nwosu", ("engineering",)),
    ("Elif Kaya", ("engineering",)),
    ("Farid Haddad", ("engineering",)),
    ("Greta Vogel", ("engineering",)),
    ("Hiro Tanaka", ("engineering",)),
    ("Ines Moreau", ("engineering",)),
    ("Jonas Berg", ("engineering", "data")),
    ("Kiri Walker", ("engineering",)),
    ("Lena Petrova", ("engineering",)),
    ("Mateo Rossi", ("support",)),
    ("Nadia Rahman", ("support",)),
    ("Omar Said", ("support",)),
    ("Priya Nair", ("support",)),
    ("Quinn Harper", ("support", "go-to-market")),
    ("Rosa Jimenez", ("support",)),
    ("Sven Olsen", ("support",)),
    ("Tara Singh", ("data",)),
    ("Ugo Bianchi", ("data",)),
    ("Vera Novak", ("data",)),
    ("Wen Liu", ("data",)),
    ("Xavi Puig", ("data",)),
    ("Yara Haddad", ("go-to-market",)),
    ("Zoe Clarke", ("go-to-market",)),
    ("Amir Tehrani", ("go-to-market",)),
    ("Bea Santos", ("go-to-market",)),
    ("Cyrus Abara", ("go-to-market",)),
    ("Dina Levi", ("data",)),
)

#: Service accounts: (slug, name).
_SERVICE_ACCOUNTS: tuple[tuple[str, str], ...] = (
    ("nightly-etl", "nightly-etl"),
    ("enrichment-pipeline", "enrichment-pipeline"),
)

#: The one federated identity (workload identity federation): (provider, subject).
_FEDERATED = ("https://token.actions.githubusercontent.com", "repo:acme/search-indexer:ref:refs/heads/main")


@dataclass(frozen=True)
class Actor:
    """Who used the tokens, as the Analytics ``actor`` group names it.

    ``type`` is ``user_actor`` (``id`` = user id, ``email``/``name``; a deleted user has
    ``deleted`` True, no e-mail and the name "Deleted User"), ``service_account_actor``
    (``id`` = service account id), ``api_actor`` (``id`` = API key id) or ``federated_actor``
    (``provider``, ``subject``, no id). ``rbac_group_ids`` are a user's groups (any number);
    ``user_profile_id`` (``uprof_01...``) is set for the 30 people only.
    """

    type: str
    id: str | None
    email: str | None = None
    name: str | None = None
    deleted: bool = False
    provider: str | None = None
    subject: str | None = None
    rbac_group_ids: tuple[str, ...] = ()
    user_profile_id: str | None = None

    @property
    def key(self) -> str:
        """A stable identity: the id, or ``federated:<provider>:<subject>``."""
        if self.type == "federated_actor":
            return f"federated:{self.provider}:{self.subject}"
        assert self.id is not None
        return self.id

    def to_json(self) -> dict[str, object]:
        """JSON-ready description (every field)."""
        return {"type": self.type, "id": self.id, "key": self.key, "email": self.email, "name": self.name,
                "deleted": self.deleted, "provider": self.provider, "subject": self.subject,
                "rbac_group_ids": list(self.rbac_group_ids), "user_profile_id": self.user_profile_id}

    def api_json(self) -> dict[str, object]:
        """The Analytics ``actor`` group value, exactly the SDK's ``BetaAnalyticsActor`` union:
        ``{"type": "user_actor", "user_id", "email_address", "name", "deleted"}``,
        ``{"type": "service_account_actor", "service_account_id"}``, ``{"type": "api_actor",
        "api_key_id"}`` or ``{"type": "federated_actor", "provider": {"type": "oidc", "issuer"},
        "subject"}``."""
        if self.type == "user_actor":
            return {"type": "user_actor", "user_id": self.id, "email_address": self.email, "name": self.name,
                    "deleted": self.deleted}
        if self.type == "service_account_actor":
            return {"type": "service_account_actor", "service_account_id": self.id}
        if self.type == "api_actor":
            return {"type": "api_actor", "api_key_id": self.id}
        return {"type": "federated_actor", "provider": {"type": "oidc", "issuer": self.provider},
                "subject": self.subject}


@dataclass(frozen=True)
class RbacGroup:
    """An RBAC group of users."""

    id: str
    slug: str
    name: str


@dataclass(frozen=True)
class Share:
    """One (product, actor) share of a key's traffic.

    ``actor`` is ``"key"`` (the record's API key as ``api_actor``), ``"sa:<slug>"`` (a service
    account), ``"federated"``, ``"deleted"`` (the deleted user), ``"group:<slug>"`` (up to three
    members of that RBAC group each hour) or None (no attributable identity).
    """

    product: str
    actor: str | None
    weight: float


#: Token and web search traffic of each key (``workbench`` = no API key) by product and actor.
#: Batch-tier traffic is always ``message_batches_api``, and nothing else is.
_SHARES: Mapping[str, tuple[Share, ...]] = {
    "support-bot-prod": (Share("messages_api", "key", 0.75), Share("managed_agents_api", "key", 0.25)),
    "support-bot-staging": (Share("messages_api", "group:support", 0.6), Share("messages_api", "key", 0.4)),
    "search-rag": (Share("messages_api", "key", 0.6), Share("messages_api", "federated", 0.3),
                   Share("messages_api", None, 0.1)),
    "nightly-summaries": (Share("message_batches_api", "sa:nightly-etl", 1.0),),
    "data-enrichment-batch": (Share("message_batches_api", "sa:enrichment-pipeline", 0.8),
                              Share("message_batches_api", "group:data", 0.2)),
    "eval-harness": (Share("claude_code", "group:engineering", 0.5), Share("messages_api", "group:engineering", 0.3),
                     Share("messages_api", "key", 0.1), Share("claude_code", "key", 0.1)),
    "ops-notebook": (Share("claude_code", "group:engineering", 0.6), Share("claude_code", "group:data", 0.2),
                     Share("messages_api", "group:data", 0.2)),
    "legacy-prototype": (Share("messages_api", "deleted", 0.5), Share("messages_api", "key", 0.3),
                         Share("messages_api", "group:engineering", 0.2)),
    "marketing-drafts": (Share("messages_api", "group:go-to-market", 0.7), Share("messages_api", "key", 0.3)),
    "workbench": (Share("claude_console", "group:engineering", 0.2), Share("chat", "group:go-to-market", 0.25),
                  Share("chat", "group:support", 0.15), Share("cowork", "group:data", 0.15),
                  Share("cowork", "group:go-to-market", 0.1), Share("chat", None, 0.15)),
}
#: Code execution and session runtime go whole to one (product, actor).
_RUNTIME_SHARES: Mapping[tuple[str, str], Share] = {
    ("data-enrichment-batch", "code_execution"): Share("message_batches_api", "sa:enrichment-pipeline", 1.0),
    ("eval-harness", "code_execution"): Share("messages_api", "key", 1.0),
    ("support-bot-prod", "session_usage"): Share("managed_agents_api", "key", 1.0),
}
#: People of one group share picked per hour.
_PEOPLE_PER_HOUR = 3
#: The runaway developer: on this UTC day this engineer is drawn in every share of his group
#: with ``RUNAWAY_FACTOR`` times his usual weight (records and key totals do not change).
RUNAWAY_DAY = date(2026, 11, 23)
RUNAWAY_PERSON = "Hiro Tanaka"
RUNAWAY_FACTOR = 40
_WEIGHT_SCALE = 1_000_000


def split_integer(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to positive integer ``weights``, exactly: part ``i`` is
    ``floor(total * W_i / W) - floor(total * W_(i-1) / W)`` with ``W_i`` the running sum of the
    weights, so the parts add up to ``total`` and each is within 1 of its exact share."""
    whole = sum(weights)
    shares = []
    running = 0
    before = 0
    for weight in weights:
        running += weight
        upto = total * running // whole
        shares.append(upto - before)
        before = upto
    return shares


@dataclass(frozen=True)
class UsagePart:
    """The share of one :class:`UsageRecord` used by one (product, actor); ``actor`` None is
    usage with no attributable identity. The counts of a record's parts add up exactly to the
    record's, and so (Decimal, unrounded) do their costs."""

    record: UsageRecord
    product: str
    actor: Actor | None
    uncached_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0
    web_search_requests: int = 0
    requests: int = 0
    runtime_hours: Decimal = Decimal(0)
    costs: tuple[tuple[str, str | None, Decimal], ...] = ()

    @property
    def cost_cents(self) -> Decimal:
        """Total cost of the part in cents."""
        return sum((c for _, _, c in self.costs), Decimal(0))


#: Terminals Claude Code reports (``terminal_type``), one per actor.
_TERMINALS: tuple[str, ...] = ("vscode", "iTerm.app", "cursor", "tmux", "Apple_Terminal", "ghostty")


@dataclass(frozen=True)
class ClaudeCodeModel:
    """One model's share of an actor's Claude Code day: token counts and cents (unrounded)."""

    input: int
    output: int
    cache_read: int
    cache_creation: int
    cents: Decimal


@dataclass(frozen=True)
class ClaudeCodeDay:
    """One record of the legacy Claude Code report: one actor's Claude Code use on one UTC
    day. ``tool_actions`` maps a tool (``edit_tool``, ``multi_edit_tool``, ``write_tool``,
    ``notebook_edit_tool``) to (accepted, rejected)."""

    day: date
    actor: Actor
    terminal_type: str
    num_sessions: int
    lines_added: int
    lines_removed: int
    commits: int
    pull_requests: int
    tool_actions: Mapping[str, tuple[int, int]]
    models: Mapping[str, ClaudeCodeModel]

    @property
    def cost_cents(self) -> Decimal:
        """The cents of every model of the record (unrounded)."""
        return sum((m.cents for m in self.models.values()), Decimal(0))

    @property
    def total_tokens(self) -> int:
        """Every token of every model of the record."""
        return sum(m.input + m.output + m.cache_read + m.cache_creation for m in self.models.values())


@dataclass
class _RevisionWindow:
    start: datetime
    end: datetime


class SimulatedOrg:
    """The synthetic organization for ``seed``; ``now`` fixed (tz-aware) or None for the real
    clock at each call; prices from ``price_table`` (default: spendwatch's shipped table).

    Thread-safe: :meth:`revise` and :meth:`set_now` may run while other threads read.
    """

    def __init__(self, seed: int = 7, now: datetime | None = None, price_table: PriceTable | None = None,
                 fast_and_us: bool = False, people_dimensions: bool = True):
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.seed = seed
        self.fast_and_us = fast_and_us
        #: Whether the Analytics API serves the people and product dimensions (product, actor,
        #: actor_type, rbac_group_id, user_profile_id) to this organization (Claude Enterprise);
        #: off, grouping or filtering by them is a 403. May be flipped at run time.
        self.people_dimensions = people_dimensions
        digest = hashlib.sha256(f"spendwatch-sim:{seed}:organization".encode()).digest()
        #: The organization's UUID (the legacy Claude Code report's ``organization_id``).
        self.organization_id = str(uuid.UUID(bytes=digest[:16], version=4))
        self.fixed_now: datetime | None = now.astimezone(UTC) if now is not None else None
        self.price_table = price_table if price_table is not None else default_price_table()
        self._lock = threading.Lock()
        self._windows: list[_RevisionWindow] = []
        self.workspaces: tuple[Workspace, ...] = tuple(
            Workspace(
                id="wrkspc_01" + stable_suffix(self.seed, f"workspace:{slug}"),
                slug=slug,
                name=name,
                created_at=parse_rfc3339(created),
                archived_at=parse_rfc3339(archived) if archived else None,
                display_color=color,
                is_default=is_default,
            )
            for slug, name, created, archived, color, is_default in _WORKSPACES
        )
        self._workspace_by_slug = {w.slug: w for w in self.workspaces}
        self.workspace_by_id: dict[str, Workspace] = {w.id: w for w in self.workspaces}
        keys = []
        for slug, name, ws_slug, status, created, until in _API_KEYS:
            hint = stable_suffix(self.seed, f"hint:{slug}", 7)
            keys.append(
                ApiKey(
                    id="apikey_01" + stable_suffix(self.seed, f"api_key:{slug}"),
                    slug=slug,
                    name=name,
                    workspace_id=self._workspace_by_slug[ws_slug].id,
                    status=status,
                    created_at=parse_rfc3339(created),
                    usage_until=parse_rfc3339(until) if until else None,
                    partial_key_hint=f"sk-ant-api03-{hint[:3]}...{hint[3:7]}",
                    created_by_user_id="user_01" + stable_suffix(self.seed, f"user:{ws_slug}"),
                )
            )
        self.api_keys: tuple[ApiKey, ...] = tuple(keys)
        self._key_by_slug = {k.slug: k for k in self.api_keys}
        self.api_key_by_id: dict[str, ApiKey] = {k.id: k for k in self.api_keys}
        self._init_people()
        self._hour_cache = lru_cache(maxsize=8192)(self._compute_hour)
        self._parts_cache = lru_cache(maxsize=8192)(self._compute_parts)
        self._rates_cache = lru_cache(maxsize=4096)(self._cent_rates)

    def _init_people(self) -> None:
        self.rbac_groups: tuple[RbacGroup, ...] = tuple(
            RbacGroup("rbacgrp_01" + stable_suffix(self.seed, f"rbac_group:{slug}"), slug, name)
            for slug, name in _RBAC_GROUPS
        )
        group_id = {g.slug: g.id for g in self.rbac_groups}
        people = []
        for i, (name, groups) in enumerate(_PEOPLE):
            first, last = name.lower().split(" ", 1)
            people.append(Actor("user_actor", "user_01" + stable_suffix(self.seed, f"person:{i}"),
                                email=f"{first}.{last.replace(' ', '')}@acme.example", name=name,
                                rbac_group_ids=tuple(group_id[g] for g in groups),
                                user_profile_id="uprof_01" + stable_suffix(self.seed, f"user_profile:{i}")))
        #: The 30 people (user actors), then the deleted user (no e-mail, no group).
        self.people: tuple[Actor, ...] = tuple(people)
        self.deleted_user = Actor("user_actor", "user_01" + stable_suffix(self.seed, "person:deleted"),
                                  name="Deleted User", deleted=True)
        self.service_accounts: tuple[Actor, ...] = tuple(
            Actor("service_account_actor", "svcacct_01" + stable_suffix(self.seed, f"service_account:{slug}"),
                  name=name)
            for slug, name in _SERVICE_ACCOUNTS
        )
        self.federated_identity = Actor("federated_actor", None, provider=_FEDERATED[0], subject=_FEDERATED[1])
        self._service_account_by_slug = {slug: sa for (slug, _), sa in zip(_SERVICE_ACCOUNTS, self.service_accounts)}
        self._group_members = {g.slug: tuple(p for p in people if g.id in p.rbac_group_ids)
                               for g in self.rbac_groups}
        self._api_actors = {k.id: Actor("api_actor", k.id) for k in self.api_keys}
        self._person_weight = {p.key: _WEIGHT_SCALE // 2 + (i * 7919 % 10) * _WEIGHT_SCALE // 6
                               for i, p in enumerate(people)}
        #: The runaway developer of :data:`RUNAWAY_DAY` (see :meth:`_share_actors`).
        self.runaway: Actor = next(p for p in people if p.name == RUNAWAY_PERSON)
        self.actor_by_key: dict[str, Actor] = {
            a.key: a for a in (*people, self.deleted_user, *self.service_accounts, self.federated_identity,
                               *self._api_actors.values())}

    # ---- clock and revisions ---------------------------------------------------------------

    def now(self) -> datetime:
        """The fixed ``now`` or, without one, the real UTC clock."""
        fixed = self.fixed_now
        return fixed if fixed is not None else datetime.now(UTC)

    def set_now(self, now: datetime | None) -> None:
        """Fix the clock at ``now`` (tz-aware) or, with None, follow the real clock."""
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.fixed_now = now.astimezone(UTC) if now is not None else None

    def rename(self, api_keys: Mapping[str, str] | None = None,
               workspaces: Mapping[str, str] | None = None) -> None:
        """Give API keys and workspaces (by id or slug) new names, as a user would in the
        Console: any text, hostile names included (control characters, Markdown, formulas).
        Usage and cost are unchanged; the name endpoints answer with the new names.
        Raises ValueError (nothing renamed) for an unknown id or slug, or a name that is not
        a string."""
        with self._lock:
            keys = _renamed(self.api_keys, api_keys or {}, "api key")
            spaces = _renamed(self.workspaces, workspaces or {}, "workspace")
            self.api_keys, self.workspaces = keys, spaces
            self._key_by_slug = {k.slug: k for k in keys}
            self.api_key_by_id = {k.id: k for k in keys}
            self._workspace_by_slug = {w.slug: w for w in spaces}
            self.workspace_by_id = {w.id: w for w in spaces}

    @property
    def revision(self) -> int:
        """How many times :meth:`revise` ran (starts at 0)."""
        with self._lock:
            return len(self._windows)

    def revise(self, hours: int = 6) -> int:
        """Deliver late data: every completed hour in ``[floor_hour(now) - hours, floor_hour(now))``
        gets usage scaled by a further 7% (and its cost follows). Returns the new revision.
        """
        if hours < 1:
            raise ValueError("hours must be >= 1")
        end = floor_hour(self.now())
        with self._lock:
            self._windows.append(_RevisionWindow(end - timedelta(hours=hours), end))
            return len(self._windows)

    def revisions_of(self, hour: datetime) -> int:
        """How many revision windows cover ``hour``."""
        with self._lock:
            return sum(1 for w in self._windows if w.start <= hour < w.end)

    # ---- lookups ---------------------------------------------------------------------------

    @property
    def default_workspace(self) -> Workspace:
        """The organization's default workspace."""
        return self._workspace_by_slug["default"]

    def workspace_by_slug(self, slug: str) -> Workspace:
        """The workspace with this slug (``default``, ``support``, ``search``, ...)."""
        return self._workspace_by_slug[slug]

    def api_key_by_slug(self, slug: str) -> ApiKey:
        """The API key with this slug (``support-bot-prod``, ``ops-notebook``, ...)."""
        return self._key_by_slug[slug]

    def legacy_workspace_id(self, workspace_id: str | None) -> str | None:
        """Workspace id as the legacy API reports it (None for the default workspace)."""
        if workspace_id is None:
            return None
        ws = self.workspace_by_id.get(workspace_id)
        return ws.legacy_id if ws is not None else workspace_id

    # ---- records ---------------------------------------------------------------------------

    def hour_records(self, hour: datetime) -> tuple[UsageRecord, ...]:
        """Records of one UTC hour (cached), ignoring whether the hour is complete yet."""
        hour = floor_hour(hour)
        if hour < HISTORY_START:
            return ()
        return self._hour_cache(hour, self.revisions_of(hour))

    def records(self, start: datetime, end: datetime, now: datetime | None = None) -> list[UsageRecord]:
        """Records of every existing hour ``h`` with ``floor_hour(start) <= h < end``.

        Existing means ``HISTORY_START <= h < floor_hour(now)`` (``now`` defaults to
        :meth:`now`).
        """
        cutoff = floor_hour(now if now is not None else self.now())
        lo = max(floor_hour(start), HISTORY_START)
        hi = min(end, cutoff)
        out: list[UsageRecord] = []
        for hour in hours_between(lo, hi):
            out.extend(self.hour_records(hour))
        return out

    def hour_parts(self, hour: datetime) -> tuple[UsagePart, ...]:
        """The (product, actor) parts of every record of one UTC hour (cached), in record order."""
        hour = floor_hour(hour)
        if hour < HISTORY_START:
            return ()
        return self._parts_cache(hour, self.revisions_of(hour))

    def parts(self, start: datetime, end: datetime, now: datetime | None = None) -> list[UsagePart]:
        """The parts of :meth:`records` (same hours)."""
        cutoff = floor_hour(now if now is not None else self.now())
        out: list[UsagePart] = []
        for hour in hours_between(max(floor_hour(start), HISTORY_START), min(end, cutoff)):
            out.extend(self.hour_parts(hour))
        return out

    def _compute_parts(self, hour: datetime, revisions: int) -> tuple[UsagePart, ...]:
        hour_key = hour.strftime("%Y-%m-%dT%H")
        day = hour.date()
        out: list[UsagePart] = []
        for rec in self._hour_cache(hour, revisions):
            key = self.api_key_by_id.get(rec.api_key_id) if rec.api_key_id else None
            key_label = key.slug if key is not None else "workbench"
            if rec.kind != "tokens":
                share = _RUNTIME_SHARES[(key_label, rec.kind)]
                out.append(UsagePart(rec, share.product, self._share_actors(share, rec, None)[0][0],
                                     requests=rec.requests, runtime_hours=rec.runtime_hours, costs=rec.costs))
                continue
            assert rec.model is not None and rec.service_tier is not None
            rng = Random(f"spendwatch-sim|{self.seed}|{hour_key}|{key_label}|{rec.model}|{rec.service_tier}|"
                         f"{rec.context_window}|{rec.speed}|{rec.inference_geo}|people")
            owners: list[tuple[str, Actor | None]] = []
            weights: list[int] = []
            for share in _SHARES[key_label]:
                for actor, weight in self._share_actors(share, rec, rng):
                    owners.append((share.product, actor))
                    weights.append(max(1, int(share.weight * weight * rng.uniform(0.5, 1.5))))
            counts = (rec.uncached_input_tokens, rec.cache_creation_5m, rec.cache_creation_1h,
                      rec.cache_read_input_tokens, rec.output_tokens, rec.web_search_requests, rec.requests)
            columns = [split_integer(c, weights) for c in counts]
            rates = self._rates_cache(rec.model, rec.service_tier, day, rec.speed, rec.inference_geo)
            for i, (product, actor) in enumerate(owners):
                split = [column[i] for column in columns]
                if not any(split):
                    continue
                costs = tuple((cost_type, token_type, count * rate)
                              for (cost_type, token_type, rate), count in zip(rates, split) if count)
                out.append(UsagePart(rec, product, actor, split[0], split[1], split[2], split[3], split[4],
                                     split[5], split[6], costs=costs))
        return tuple(out)

    def split_part(self, part: UsagePart, weights: Sequence[int]) -> tuple[UsagePart, ...]:
        """``part`` split in proportion to positive integer ``weights`` (one piece per weight, in
        order, zero pieces included): integer counts with :func:`split_integer`, costs recomputed
        from the same per-token rates as :meth:`parts`, so the pieces add up exactly to the part.
        A runtime part (code execution, session) splits its requests, runtime hours (to 0.001 h)
        and cost in proportion; the last piece takes the remainder."""
        rec = part.record
        counts = (part.uncached_input_tokens, part.cache_creation_5m, part.cache_creation_1h,
                  part.cache_read_input_tokens, part.output_tokens, part.web_search_requests, part.requests)
        columns = [split_integer(c, weights) for c in counts]
        pieces: list[UsagePart] = []
        if rec.kind != "tokens":
            whole = sum(weights)
            left_hours, left_costs = part.runtime_hours, list(part.costs)
            for i, weight in enumerate(weights):
                last = i == len(weights) - 1
                hours = left_hours if last else (part.runtime_hours * weight / whole).quantize(_RUNTIME_QUANTUM)
                costs = tuple(left_costs) if last else tuple(
                    (t, tt, c * weight / whole) for t, tt, c in part.costs)
                if not last:
                    left_hours -= hours
                    left_costs = [(t, tt, lc - c) for (t, tt, lc), (_, _, c) in zip(left_costs, costs)]
                pieces.append(replace(part, requests=columns[6][i], runtime_hours=hours, costs=costs))
            return tuple(pieces)
        assert rec.model is not None and rec.service_tier is not None
        rates = self._rates_cache(rec.model, rec.service_tier, rec.hour.date(), rec.speed, rec.inference_geo)
        for i in range(len(weights)):
            split = [column[i] for column in columns]
            costs = tuple((cost_type, token_type, count * rate)
                          for (cost_type, token_type, rate), count in zip(rates, split) if count)
            pieces.append(UsagePart(rec, part.product, part.actor, split[0], split[1], split[2], split[3], split[4],
                                    split[5], split[6], costs=costs))
        return tuple(pieces)

    def claude_code_day(self, day: date, now: datetime | None = None) -> list[ClaudeCodeDay]:
        """One :class:`ClaudeCodeDay` per actor (a user or an API key) with ``claude_code``
        usage on the UTC ``day`` (its existing hours only), ordered by actor type, then e-mail
        address (the API key's name for an API key; the deleted user, who has none, last),
        then actor key. Tokens and cents per model are the sums of the day's ``claude_code``
        parts; the activity figures (sessions about one per 200k tokens, lines, commits, pull
        requests, tool decisions, terminal) are drawn from the seed, the day and the actor."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        by_actor: dict[str, dict[str, list[Decimal]]] = {}
        actors: dict[str, Actor] = {}
        for part in self.parts(start, start + DAY, now):
            actor = part.actor
            if part.product != "claude_code" or actor is None or actor.type not in ("user_actor", "api_actor"):
                continue
            if part.record.model is None:
                continue
            actors[actor.key] = actor
            acc = by_actor.setdefault(actor.key, {}).setdefault(part.record.model, [Decimal(0)] * 5)
            values: tuple[Decimal, ...] = (
                Decimal(part.uncached_input_tokens), Decimal(part.output_tokens),
                Decimal(part.cache_read_input_tokens), Decimal(part.cache_creation_5m + part.cache_creation_1h),
                part.cost_cents)
            for i, value in enumerate(values):
                acc[i] += value
        out: list[ClaudeCodeDay] = []
        for key, models in by_actor.items():
            actor = actors[key]
            tokens = sum(int(sum(v[:4])) for v in models.values())
            rng = Random(f"spendwatch-sim|{self.seed}|{day.isoformat()}|{key}|claude_code")
            sessions = max(1, round(tokens / 200_000 * rng.uniform(0.8, 1.2)))
            added = int(tokens / 900 * rng.uniform(0.6, 1.4))
            commits = int(sessions * rng.uniform(0.2, 0.9))
            tools: dict[str, tuple[int, int]] = {}
            for tool, per_session in (("edit_tool", 5.0), ("multi_edit_tool", 2.0), ("write_tool", 1.5),
                                      ("notebook_edit_tool", 0.2)):
                accepted = int(sessions * per_session * rng.uniform(0.5, 1.5))
                tools[tool] = (accepted, int(accepted * rng.uniform(0.02, 0.2)))
            terminal = Random(f"spendwatch-sim|{self.seed}|{key}|terminal").choice(_TERMINALS)
            out.append(ClaudeCodeDay(
                day=day, actor=actor, terminal_type=terminal, num_sessions=sessions, lines_added=added,
                lines_removed=int(added * rng.uniform(0.15, 0.6)), commits=commits,
                pull_requests=int(commits * rng.uniform(0.1, 0.5)), tool_actions=tools,
                models={m: ClaudeCodeModel(int(v[0]), int(v[1]), int(v[2]), int(v[3]), v[4])
                        for m, v in sorted(models.items())}))

        def order(record: ClaudeCodeDay) -> tuple[object, ...]:
            label = record.actor.email if record.actor.type == "user_actor" else self.api_key_name(record.actor.id)
            return (record.actor.type != "user_actor", label is None, label or "", record.actor.key)

        return sorted(out, key=order)

    def api_key_name(self, api_key_id: str | None) -> str | None:
        """The current name of an API key (None for an unknown id)."""
        key = self.api_key_by_id.get(api_key_id or "")
        return key.name if key is not None else None

    def _cent_rates(self, model: str, tier: str, day: date, speed: str | None,
                    geo: str | None) -> tuple[tuple[str, str | None, Decimal], ...]:
        """Cents per token of each token type, then per web search (the cost lines of one of
        each): a part's cost is its counts times these, exactly as :meth:`_token_costs`."""
        return self._token_costs(model, tier, day, (1, 1, 1, 1, 1, 1), speed, geo)

    def _share_actors(self, share: Share, rec: UsageRecord, rng: Random | None) -> list[tuple[Actor | None, int]]:
        """The actors of one share with their integer weights (a group share: up to
        ``_PEOPLE_PER_HOUR`` members drawn with ``rng``; without one, its first member)."""
        spec = share.actor
        if spec is None:
            return [(None, _WEIGHT_SCALE)]
        if spec == "key":
            assert rec.api_key_id is not None
            return [(self._api_actors[rec.api_key_id], _WEIGHT_SCALE)]
        if spec == "deleted":
            return [(self.deleted_user, _WEIGHT_SCALE)]
        if spec == "federated":
            return [(self.federated_identity, _WEIGHT_SCALE)]
        kind, _, slug = spec.partition(":")
        if kind == "sa":
            return [(self._service_account_by_slug[slug], _WEIGHT_SCALE)]
        members = self._group_members[slug]
        chosen = list(rng.sample(members, min(_PEOPLE_PER_HOUR, len(members))) if rng else members[:1])
        runaway_day = rec.hour.date() == RUNAWAY_DAY and self.runaway in members
        if runaway_day and rng is not None and self.runaway not in chosen:
            chosen[-1] = self.runaway  # always drawn in his group's shares that day
        return [(p, self._person_weight[p.key] * (RUNAWAY_FACTOR if runaway_day and p == self.runaway else 1))
                for p in chosen]

    def _compute_hour(self, hour: datetime, revisions: int) -> tuple[UsageRecord, ...]:
        factor = _REVISION_FACTOR**revisions
        day = hour.date()
        hour_key = hour.strftime("%Y-%m-%dT%H")
        out: list[UsageRecord] = []
        for profile in _PROFILES:
            key = self._key_by_slug[profile.key_slug] if profile.key_slug else None
            if key is not None:
                if hour < floor_hour(key.created_at) + HOUR:
                    continue
                if key.usage_until is not None and hour >= key.usage_until:
                    continue
            workspace = self._workspace_by_slug[profile.workspace_slug]
            if workspace.archived_at is not None and hour >= workspace.archived_at:
                continue
            act = activity(hour, profile.rhythm)
            key_id = key.id if key else None
            key_label = profile.key_slug or "workbench"
            for use in profile.uses:
                if use.only_revised and revisions == 0:
                    continue
                if use.only_unrevised and revisions > 0:
                    continue
                rng = Random(
                    f"spendwatch-sim|{self.seed}|{hour_key}|{key_label}|{use.model}|{use.tier}|{use.context_window}"
                )
                absent = rng.random() < use.absent_prob
                mean = profile.volume * use.weight * act
                requests = int(mean * rng.uniform(0.55, 1.45) + rng.random())
                if absent or requests <= 0 or act <= 0:
                    continue
                prompt = requests * use.prompt_tokens * rng.uniform(0.8, 1.2)
                read = prompt * use.read_share * rng.uniform(0.85, 1.15)
                w5 = prompt * use.write_5m_share * rng.uniform(0.7, 1.3)
                w1 = prompt * use.write_1h_share * rng.uniform(0.7, 1.3)
                if use.cold_prob and Random(f"spendwatch-sim|{self.seed}|{hour_key}|{key_label}|"
                                            f"{use.model}|cold").random() < use.cold_prob:
                    read = 0.0  # a timestamp in the prefix: every write, no read (cache waste)
                uncached = max(prompt - read - w5 - w1, prompt * 0.02)
                output = requests * use.output_tokens * rng.uniform(0.7, 1.3)
                searches = (
                    requests * use.web_search_rate * rng.uniform(0.8, 1.2) + rng.random()
                    if use.web_search_rate
                    else 0.0
                )
                counts = [int(uncached), int(w5), int(w1), int(read), int(output), int(searches), requests]
                if revisions:
                    counts = [_scale(c, factor) for c in counts]
                for speed, geo, variant in self._mode_variants(hour_key, key_label, use, day, counts):
                    out.append(self._token_record(hour, day, use, workspace.id, key_id, variant, speed, geo))
            if profile.code_exec_spans > 0:
                rng = Random(f"spendwatch-sim|{self.seed}|{hour_key}|{key_label}|code_execution")
                spans = int(profile.code_exec_spans * act * rng.uniform(0.3, 1.7) + rng.random())
                if spans > 0 and act > 0:
                    runtime = Decimal(spans * rng.randint(40, 900)) / Decimal(1000)
                    if revisions:
                        spans = _scale(spans, factor)
                        runtime = (runtime * factor).quantize(_RUNTIME_QUANTUM, rounding=ROUND_HALF_UP)
                    out.append(self._runtime_record(hour, day, "code_execution", workspace.id, key_id, spans, runtime))
            if profile.session_rate > 0:
                rng = Random(f"spendwatch-sim|{self.seed}|{hour_key}|{key_label}|session_usage")
                if act > 0 and rng.random() < 0.6:
                    runtime = Decimal(int(profile.session_rate * act * rng.uniform(0.3, 1.7) * 1000) + 1) / Decimal(1000)
                    if revisions:
                        runtime = (runtime * factor).quantize(_RUNTIME_QUANTUM, rounding=ROUND_HALF_UP)
                    out.append(self._runtime_record(hour, day, "session_usage", workspace.id, key_id, 0, runtime))
        return tuple(out)

    def has_fast_mode(self, model: str, day: date) -> bool:
        """Whether ``model`` has a fast mode price on ``day`` (pricing.md: Opus 5.5, 5, 4.8)."""
        return self.price_table.price(model, "fast_input", day) is not None

    def has_us_inference(self, model: str, day: date) -> bool:
        """Whether ``model`` offers US-only inference on ``day`` (models from 4.6 on)."""
        return self.price_table.price(model, "us_inference_multiplier", day) is not None

    def _mode_variants(
        self, hour_key: str, key_label: str, use: ModelUse, day: date, counts: list[int]
    ) -> list[tuple[str, str | None, list[int]]]:
        """``counts`` split into (speed, inference_geo, counts) variants with at least one
        non-zero count. With ``fast_and_us`` off: the counts whole, standard speed, no geo.
        With it on, a share of each hour's traffic runs in fast mode (models with a fast price,
        never on the Batch API) and a share US-only (models that offer it), drawn from an
        RNG of its own so that the counts themselves are the same either way."""
        if not self.fast_and_us:
            return [("standard", None, counts)]
        rng = Random(f"spendwatch-sim|{self.seed}|{hour_key}|{key_label}|{use.model}|{use.tier}|"
                     f"{use.context_window}|modes")
        fast = rng.uniform(0.15, 0.45) if use.tier != "batch" and self.has_fast_mode(use.model, day) else 0.0
        us_capable = self.has_us_inference(use.model, day)
        us = rng.uniform(0.1, 0.3) if us_capable else 0.0
        geo = "global" if us_capable else None
        variants = [(s, g, w) for s, g, w in (
            ("standard", geo, (1 - fast) * (1 - us)), ("fast", geo, fast * (1 - us)),
            ("standard", "us", (1 - fast) * us), ("fast", "us", fast * us)) if w > 0]
        weights = [max(1, int(w * _WEIGHT_SCALE)) for _, _, w in variants]
        columns = [split_integer(c, weights) for c in counts]
        out = []
        for i, (speed, variant_geo, _) in enumerate(variants):
            split = [column[i] for column in columns]
            if any(split):
                out.append((speed, variant_geo, split))
        return out

    def _token_costs(self, model: str, tier: str, day: date, counts: Sequence[int], speed: str | None,
                     geo: str | None) -> tuple[tuple[str, str | None, Decimal], ...]:
        """Cost lines of token counts ``(uncached, 5m, 1h, read, output, searches, ...)``.

        Billed like the real API, independently of spendwatch's estimate formula: list price
        per million tokens; in fast mode times fast/standard input (output: fast/standard
        output); times the US-only multiplier; halved on the Batch API. Linear in the counts,
        so parts of a record cost exactly the record's cost together.
        """
        costs: list[tuple[str, str | None, Decimal]] = []
        for token_type, tokens in zip(TOKEN_TYPES, counts[:5]):
            if tokens:
                component = TOKEN_COMPONENT[token_type]
                price = self.price_table.price(model, component, day)
                if price is None:
                    raise ValueError(f"no price for {model} {token_type} on {day}")
                dollars = Decimal(tokens) * price / Decimal(1_000_000)
                if speed == "fast":
                    fast_of = "output" if component == "output" else "input"
                    fast_price = self.price_table.price(model, f"fast_{fast_of}", day)
                    plain_price = self.price_table.price(model, fast_of, day)
                    if fast_price is None or not plain_price:
                        raise ValueError(f"no fast mode price for {model} on {day}")
                    dollars = dollars * fast_price / plain_price
                if geo == "us":
                    multiplier = self.price_table.price(model, "us_inference_multiplier", day)
                    if multiplier is None:
                        raise ValueError(f"no US-only inference for {model} on {day}")
                    dollars *= multiplier
                if tier == "batch":
                    dollars /= 2
                costs.append(("tokens", token_type, dollars * _CENTS_PER_DOLLAR))
        searches = counts[5]
        if searches:
            price = self.price_table.price(None, "web_search", day)
            assert price is not None
            costs.append(("web_search", None, Decimal(searches) * price * _CENTS_PER_DOLLAR))
        return tuple(costs)

    def _token_record(
        self, hour: datetime, day: date, use: ModelUse, workspace_id: str, key_id: str | None, counts: list[int],
        speed: str = "standard", geo: str | None = None,
    ) -> UsageRecord:
        uncached, w5, w1, read, output, searches, requests = counts
        costs = self._token_costs(use.model, use.tier, day, counts, speed, geo)
        return UsageRecord(
            hour=hour,
            kind="tokens",
            model=use.model,
            workspace_id=workspace_id,
            api_key_id=key_id,
            service_tier=use.tier,
            context_window=use.context_window,
            speed=speed,
            inference_geo=geo,
            uncached_input_tokens=uncached,
            cache_creation_5m=w5,
            cache_creation_1h=w1,
            cache_read_input_tokens=read,
            output_tokens=output,
            web_search_requests=searches,
            requests=requests,
            costs=costs,
        )

    def _runtime_record(
        self, hour: datetime, day: date, kind: str, workspace_id: str, key_id: str | None, spans: int, runtime: Decimal
    ) -> UsageRecord:
        price = self.price_table.price(None, kind, day)
        assert price is not None
        return UsageRecord(
            hour=hour,
            kind=kind,
            model=None,
            workspace_id=workspace_id,
            api_key_id=key_id,
            service_tier=None,
            context_window=None,
            speed="standard",
            requests=spans,
            runtime_hours=runtime,
            costs=((kind, None, runtime * price * _CENTS_PER_DOLLAR),),
        )

    # ---- ground truth ----------------------------------------------------------------------

    def truth(self, starting_at: datetime, ending_at: datetime, now: datetime | None = None,
              people: bool = False) -> dict[str, object]:
        """Exact totals over the existing hours ``h`` in ``[starting_at, ending_at)``.

        Returns a JSON-ready dict: dollar amounts as Decimal strings (``cost_usd`` is
        everything the Analytics cost endpoint bills: tokens + web search + code execution +
        session runtime), token counts and requests as ints, ``by_model`` / ``by_api_key`` /
        ``by_workspace`` mapping the id (or ``"null"``) to a dollar string, plus
        ``cost_cents`` (the same total in cents) and ``revision``.

        With ``people`` (``GET /_sim/truth?people=1``), people and products too, from the
        records' parts (:meth:`parts`: splitting every record costs about three times the rest,
        so only callers that ask pay for it), dollar strings too:

        - ``by_person``: actor key (user id, service account id, API key id of an
          ``api_actor``, ``federated:<provider>:<subject>``) or ``"null"`` (no attributable
          identity) to dollars; adds up to ``cost_usd`` exactly.
        - ``by_product``: product to dollars; adds up to ``cost_usd`` exactly.
        - ``by_rbac_group``: RBAC group id to dollars with **any-membership** semantics, as the
          Analytics API groups ``rbac_group_id``: a user in several groups counts in full in
          each, so the rows overlap and add up to more than ``cost_usd`` when people of two
          groups spent; ``"null"`` is everything of no group (service accounts, API keys, the
          federated identity, the deleted user, unattributed usage). Without the overlap
          (each part counted once) it adds up to ``cost_usd``.
        - ``by_person_day``: UTC day (``YYYY-MM-DD``) to ``by_person`` of that day's hours.
        - ``by_person_product``: ``"<actor key or null>|<product>"`` to dollars (adds up to
          ``cost_usd``): what features defined by people and products are checked against.
        - ``claude_code``: UTC day to actor key to ``{"sessions", "tokens", "cost_usd"}`` of the
          legacy Claude Code report's record (:meth:`claude_code_day`) for every UTC day whose
          midnight is in the range (the whole day's existing hours, as the report serves it).
        """
        cents: dict[str, Decimal] = {ct: Decimal(0) for ct in COST_TYPES}
        tokens = {"uncached_input_tokens": 0, "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
                  "cache_read_tokens": 0, "output_tokens": 0}
        by_model: dict[str, Decimal] = {}
        by_key: dict[str, Decimal] = {}
        by_ws: dict[str, Decimal] = {}
        searches = 0
        requests = 0
        code_hours = Decimal(0)
        session_hours = Decimal(0)
        for rec in self.records(starting_at, ending_at, now):
            if rec.hour < starting_at.astimezone(UTC):
                continue
            for cost_type, _, amount in rec.costs:
                cents[cost_type] += amount
            total = rec.cost_cents
            for bucket, name in ((by_model, rec.model), (by_key, rec.api_key_id), (by_ws, rec.workspace_id)):
                label = name if name is not None else "null"
                bucket[label] = bucket.get(label, Decimal(0)) + total
            tokens["uncached_input_tokens"] += rec.uncached_input_tokens
            tokens["cache_write_5m_tokens"] += rec.cache_creation_5m
            tokens["cache_write_1h_tokens"] += rec.cache_creation_1h
            tokens["cache_read_tokens"] += rec.cache_read_input_tokens
            tokens["output_tokens"] += rec.output_tokens
            searches += rec.web_search_requests
            requests += rec.requests
            if rec.kind == "code_execution":
                code_hours += rec.runtime_hours
            elif rec.kind == "session_usage":
                session_hours += rec.runtime_hours
        total_cents = sum(cents.values(), Decimal(0))
        by_person: dict[str, Decimal] = {}
        by_product: dict[str, Decimal] = {}
        by_group: dict[str, Decimal] = {}
        by_person_day: dict[str, dict[str, Decimal]] = {}
        by_pair: dict[str, Decimal] = {}
        for part in (self.parts(starting_at, ending_at, now) if people else ()):
            if part.record.hour < starting_at.astimezone(UTC):
                continue
            total = part.cost_cents
            person = part.actor.key if part.actor is not None else "null"
            groups = part.actor.rbac_group_ids if part.actor is not None else ()
            day_bucket = by_person_day.setdefault(part.record.hour.date().isoformat(), {})
            for bucket, label in ((by_person, person), (by_product, part.product), (day_bucket, person),
                                  (by_pair, f"{person}|{part.product}")):
                bucket[label] = bucket.get(label, Decimal(0)) + total
            for label in groups or ("null",):
                by_group[label] = by_group.get(label, Decimal(0)) + total

        def usd(value: Decimal) -> str:
            return decimal_str(cents_to_dollars(value))

        result: dict[str, object] = {
            "starting_at": format_rfc3339(starting_at),
            "ending_at": format_rfc3339(ending_at),
            "revision": self.revision,
            "cost_usd": usd(total_cents),
            "cost_cents": decimal_str(total_cents),
            "token_cost_usd": usd(cents["tokens"]),
            "web_search_cost_usd": usd(cents["web_search"]),
            "code_execution_cost_usd": usd(cents["code_execution"]),
            "session_usage_cost_usd": usd(cents["session_usage"]),
            "tokens": tokens,
            "web_search_requests": searches,
            "requests": requests,
            "code_execution_hours": decimal_str(code_hours),
            "session_hours": decimal_str(session_hours),
            "by_model": {k: usd(v) for k, v in sorted(by_model.items())},
            "by_api_key": {k: usd(v) for k, v in sorted(by_key.items())},
            "by_workspace": {k: usd(v) for k, v in sorted(by_ws.items())},
        }
        if people:
            result["by_person"] = {k: usd(v) for k, v in sorted(by_person.items())}
            result["by_product"] = {k: usd(v) for k, v in sorted(by_product.items())}
            result["by_rbac_group"] = {k: usd(v) for k, v in sorted(by_group.items())}
            result["by_person_product"] = {k: usd(v) for k, v in sorted(by_pair.items())}
            result["by_person_day"] = {d: {k: usd(v) for k, v in sorted(cut.items())}
                                       for d, cut in sorted(by_person_day.items())}
            code: dict[str, dict[str, dict[str, object]]] = {}
            day_start = floor_day(starting_at)
            if day_start < starting_at.astimezone(UTC):
                day_start += DAY
            while day_start < ending_at:
                code[day_start.date().isoformat()] = {
                    r.actor.key: {"sessions": r.num_sessions, "tokens": r.total_tokens, "cost_usd": usd(r.cost_cents)}
                    for r in self.claude_code_day(day_start.date(), now)}
                day_start += DAY
            result["claude_code"] = code
        return result

    def describe(self) -> dict[str, object]:
        """JSON-ready summary of the organization (ids, names, statuses, revision, clock)."""
        return {
            "seed": self.seed,
            "revision": self.revision,
            "now": format_rfc3339(self.now()),
            "fixed_now": self.fixed_now is not None,
            "history_start": format_rfc3339(HISTORY_START),
            "workspaces": [
                {"id": w.id, "slug": w.slug, "name": w.name, "is_default": w.is_default,
                 "legacy_id": w.legacy_id,
                 "archived_at": format_rfc3339(w.archived_at) if w.archived_at else None}
                for w in self.workspaces
            ],
            "api_keys": [
                {"id": k.id, "slug": k.slug, "name": k.name, "workspace_id": k.workspace_id, "status": k.status}
                for k in self.api_keys
            ],
            "models": sorted(MODEL_DISPLAY_NAMES),
            "fast_and_us": self.fast_and_us,
            "people_dimensions": self.people_dimensions,
            "organization_id": self.organization_id,
            "runaway": {"day": RUNAWAY_DAY.isoformat(), "actor_key": self.runaway.key, "email": self.runaway.email},
            "products": list(PRODUCTS),
            "rbac_groups": [{"id": g.id, "slug": g.slug, "name": g.name} for g in self.rbac_groups],
            "actors": [a.to_json() for a in (*self.people, self.deleted_user, *self.service_accounts,
                                              self.federated_identity)],
        }


_Named = TypeVar("_Named", ApiKey, Workspace)


def _renamed(items: tuple[_Named, ...], renames: Mapping[str, str],
             what: str) -> tuple[_Named, ...]:
    """``items`` with the names of ``renames`` (id or slug -> name). Raises ValueError."""
    new = {item.id: item for item in items}
    slugs = {item.slug: item.id for item in items}
    for ref, name in renames.items():
        target = ref if ref in new else slugs.get(ref)
        if target is None:
            raise ValueError(f"{what} {ref!r}: no such id or slug")
        if not isinstance(name, str):
            raise ValueError(f"{what} {ref!r}: the name must be a string")
        new[target] = replace(new[target], name=name)
    return tuple(new[item.id] for item in items)


def _scale(count: int, factor: Decimal) -> int:
    """``count * factor`` rounded half-up to an int."""
    return int((Decimal(count) * factor).to_integral_value(rounding=ROUND_HALF_UP))


def sum_costs(records: Iterable[UsageRecord]) -> Decimal:
    """Total cents of ``records``."""
    return sum((r.cost_cents for r in records), Decimal(0))


__all__: Sequence[str] = (
    "ANALYTICS_EARLIEST",
    "ANALYTICS_MAX_AGE",
    "Actor",
    "ApiKey",
    "ClaudeCodeDay",
    "ClaudeCodeModel",
    "COST_TYPES",
    "HISTORY_START",
    "PRODUCTS",
    "RUNAWAY_DAY",
    "RbacGroup",
    "SimulatedOrg",
    "TOKEN_TYPES",
    "UsagePart",
    "UsageRecord",
    "Workspace",
    "activity",
    "decimal_str",
    "floor_hour",
    "format_rfc3339",
    "legacy_description",
    "parse_rfc3339",
)
