"""Turning API pages into rows, strictly.

Every field the documentation promises is checked for presence and type; a page that does not
have the documented shape raises :class:`MalformedResponse` naming the field, and nothing of its
window is written. Money arrives in cents as decimal strings and leaves as Decimal dollars,
exactly ("12378.912" cents is $123.78912).

What the database can hold is checked here too, so a hostile or broken page is one clear
error and never an Arrow or DuckDB traceback halfway through a write: amounts are finite,
non-negative and below 10**26 dollars (DECIMAL(38, 12)); counts are non-negative and fit a
BIGINT; text is valid Unicode (no lone surrogates); a page holds no more rows than asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, fields, replace
from functools import cached_property
from datetime import date, datetime
# collections.abc, not typing.Mapping: isinstance runs for every field of every page, and
# through the typing alias it cost a third of a cost page's parsing.
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any, Iterator

from spendwatch.cuts import CUT_DIMENSIONS
from spendwatch.errors import MalformedResponse
from spendwatch.text import storable
from spendwatch.timeutil import parse_utc

DIMENSIONS = ("model", "workspace_id", "api_key_id", "service_tier", "context_window")
TOKEN_FIELDS = ("uncached_input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                "cache_read_tokens", "output_tokens")
COST_TYPES = ("tokens", "web_search", "code_execution", "session_usage")
TOKEN_TYPES = ("uncached_input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation.ephemeral_5m_input_tokens",
               "cache_creation.ephemeral_1h_input_tokens")
# DECIMAL(38, 12) in DuckDB: dollars with at most 12 decimals (10 decimals of a cent), and
# at most 26 digits before the point.
_MAX_DOLLAR_EXPONENT = -12
MAX_DOLLARS = Decimal(10) ** 26
# BIGINT in DuckDB, int64 in Arrow.
MAX_COUNT = 2 ** 63 - 1
# Enough digits for any amount below MAX_DOLLARS with 12 decimals, and then some: the
# division by 100 and the rounding below are exact in it.
_PRECISION = 60
_UNKNOWN_SEEN: set[str] = set()
_UNKNOWN_SEEN_MAX = 200  # warned once each, up to this many (a hostile API could send millions)
log = logging.getLogger(__name__)
_CENTS_PER_DOLLAR = Decimal(100)


@dataclass(frozen=True)
class UsageRow:
    """Token usage of one hour bucket and one combination of dimensions."""

    organization: str
    source: str
    bucket_start: datetime
    bucket_end: datetime
    model: str | None
    workspace_id: str | None
    api_key_id: str | None
    service_tier: str | None
    context_window: str | None
    uncached_input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    output_tokens: int
    web_search_requests: int
    requests: int | None

    @property
    def row_key(self) -> str:
        """The natural key: organization, bucket, every dimension."""
        return json.dumps([self.organization, self.bucket_start.isoformat(),
                           *(getattr(self, d) for d in DIMENSIONS)])


@dataclass(frozen=True)
class CostRow:
    """Billed cost of one bucket, combination of dimensions, cost type and token type."""

    organization: str
    source: str
    bucket_start: datetime
    bucket_end: datetime
    bucket_width: str
    model: str | None
    workspace_id: str | None
    api_key_id: str | None
    service_tier: str | None
    context_window: str | None
    cost_type: str | None
    token_type: str | None
    description: str | None
    amount_usd: Decimal
    list_amount_usd: Decimal | None
    requests: int | None

    @property
    def row_key(self) -> str:
        """The natural key: organization, bucket, every dimension, cost and token type."""
        return json.dumps([self.organization, self.bucket_start.isoformat(), self.bucket_width,
                           *(getattr(self, d) for d in DIMENSIONS),
                           self.cost_type, self.token_type, self.description])


# --- field access with clear errors ----------------------------------------------------------

def _get(obj: Mapping[str, Any], path: str, where: str) -> Any:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            raise MalformedResponse(f"{where}: field '{path}' is missing")
        current = current[part]
    return current


def _int(obj: Mapping[str, Any], path: str, where: str) -> int:
    value = _get(obj, path, where)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise MalformedResponse(f"{where}: field '{path}' should be a non-negative integer "
                                f"below 2**63, got {type(value).__name__} {_preview(value)}")
    return value


def _optional_int(obj: Mapping[str, Any], path: str, where: str) -> int | None:
    if _get(obj, path, where) is None:
        return None
    return _int(obj, path, where)


def _optional_str(obj: Mapping[str, Any], key: str, where: str,
                  allowed: tuple[str, ...] | None = None) -> str | None:
    """A dimension: absent or null is None; otherwise a string (values outside ``allowed``
    are kept and logged once)."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}: field '{key}' should be a string or null, "
                                f"got {type(value).__name__} {_preview(value)}")
    if not value.isascii():
        _check_unicode(value, key, where)
    value = storable(value)
    if (allowed is not None and value not in allowed and value not in _UNKNOWN_SEEN
            and len(_UNKNOWN_SEEN) < _UNKNOWN_SEEN_MAX):
        # The Analytics API is in beta: a new cost or token type is stored as it comes (it
        # counts as "other" cache status) rather than blocking collection.
        _UNKNOWN_SEEN.add(value)
        log.warning("%s: field '%s' has a value spendwatch does not know yet: %s; stored as is",
                    where, key, _preview(value))
    return value


def _check_unicode(value: str, key: str, where: str) -> None:
    """JSON can carry a lone surrogate (``"\\ud800"``), which no UTF-8 column can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedResponse(f"{where}: field '{key}' is not valid Unicode text "
                                f"(a lone surrogate): {_preview(value)}") from None


def _time(obj: Mapping[str, Any], key: str, where: str) -> datetime:
    value = _get(obj, key, where)
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_utc(value)
    except ValueError:
        raise MalformedResponse(f"{where}: field '{key}' should be an RFC 3339 timestamp, "
                                f"got {_preview(value)}") from None


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def cents_to_dollars(value: Any, where: str, field: str) -> Decimal:
    """Decimal dollars from a cents decimal string, exactly.

    Raises MalformedResponse naming the field when the value is not a decimal string, not
    finite (NaN, Infinity), negative, or too large for DECIMAL(38, 12) (10**26 dollars).
    More than 12 decimals of a dollar are rounded (half even), with a warning.
    """
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}: field '{field}' should be a decimal string of cents, "
                                f"got {type(value).__name__} {_preview(value)}")
    try:
        cents = Decimal(value)
    except InvalidOperation:
        raise MalformedResponse(f"{where}: field '{field}' is not a decimal number: "
                                f"{_preview(value)}") from None
    if not cents.is_finite():
        raise MalformedResponse(f"{where}: field '{field}' is not a finite amount: "
                                f"{_preview(value)}")
    if cents < 0:
        raise MalformedResponse(f"{where}: field '{field}' is negative ({_preview(value)} "
                                "cents); spendwatch stores costs of zero or more only")
    # adjusted() is the power of ten of the first digit: >= 28 means cents >= 10**28.
    if cents and cents.adjusted() >= 28:
        raise MalformedResponse(f"{where}: field '{field}' is too large ({_preview(value)} "
                                "cents); amounts must be below 10**26 dollars")
    cents = cents.copy_abs()  # "-0" is zero
    with localcontext() as exact:
        exact.prec = _PRECISION
        dollars = cents / _CENTS_PER_DOLLAR
        exponent = dollars.as_tuple().exponent
        if isinstance(exponent, int) and exponent < _MAX_DOLLAR_EXPONENT:
            # Beyond 10 decimals of a cent (what DECIMAL(38, 12) keeps): round, and say so,
            # rather than refuse the window forever.
            log.warning("%s: field '%s' = %s has more than 12 decimals of a dollar; rounded",
                        where, field, _preview(value))
            dollars = dollars.quantize(Decimal(1).scaleb(_MAX_DOLLAR_EXPONENT), ROUND_HALF_EVEN)
        elif isinstance(exponent, int) and exponent > 0:  # "5E+3", "0E+500": plain digits
            dollars = dollars.quantize(Decimal(1))
    if dollars >= MAX_DOLLARS:  # 99999...99.9999999999995 cents rounds up to 10**26
        raise MalformedResponse(f"{where}: field '{field}' is too large ({_preview(value)} "
                                "cents); amounts must be below 10**26 dollars")
    return dollars


def _usage_metrics(usage: Mapping[str, Any], where: str) -> dict[str, int]:
    return {
        "uncached_input_tokens": _int(usage, "uncached_input_tokens", where),
        "cache_write_5m_tokens": _int(usage, "cache_creation.ephemeral_5m_input_tokens", where),
        "cache_write_1h_tokens": _int(usage, "cache_creation.ephemeral_1h_input_tokens", where),
        "cache_read_tokens": _int(usage, "cache_read_input_tokens", where),
        "output_tokens": _int(usage, "output_tokens", where),
        "web_search_requests": _int(usage, "server_tool_use.web_search_requests", where),
    }


def _usage_row(organization: str, source: str, start: datetime, end: datetime,
               group: Mapping[str, Any], usage: Mapping[str, Any], where: str,
               requests: int | None) -> UsageRow:
    m = _usage_metrics(usage, where)
    return UsageRow(
        organization=organization, source=source, bucket_start=start, bucket_end=end,
        model=_optional_str(group, "model", where),
        workspace_id=_optional_str(group, "workspace_id", where),
        api_key_id=_optional_str(group, "api_key_id", where),
        service_tier=_optional_str(group, "service_tier", where),
        context_window=_optional_str(group, "context_window", where),
        uncached_input_tokens=m["uncached_input_tokens"],
        cache_write_5m_tokens=m["cache_write_5m_tokens"],
        cache_write_1h_tokens=m["cache_write_1h_tokens"],
        cache_read_tokens=m["cache_read_tokens"], output_tokens=m["output_tokens"],
        web_search_requests=m["web_search_requests"], requests=requests)


def _cost_row(organization: str, source: str, start: datetime, end: datetime, width: str,
              group: Mapping[str, Any], cost: Mapping[str, Any], where: str,
              list_amount: bool) -> CostRow:
    _check_currency(cost, where)
    return CostRow(
        organization=organization, source=source, bucket_start=start, bucket_end=end,
        bucket_width=width,
        model=_optional_str(group, "model", where),
        workspace_id=_optional_str(group, "workspace_id", where),
        api_key_id=_optional_str(group, "api_key_id", where),
        service_tier=_optional_str(group, "service_tier", where),
        context_window=_optional_str(group, "context_window", where),
        cost_type=_optional_str(group, "cost_type", where, COST_TYPES),
        token_type=_optional_str(group, "token_type", where, TOKEN_TYPES),
        description=_optional_str(group, "description", where),
        amount_usd=cents_to_dollars(_get(cost, "amount", where), where, "amount"),
        list_amount_usd=(cents_to_dollars(_get(cost, "list_amount", where), where,
                                          "list_amount") if list_amount else None),
        requests=_optional_int(cost, "requests", where) if list_amount else None)


def _page_rows(page: Any, where: str) -> list[Any]:
    if not isinstance(page, Mapping):
        raise MalformedResponse(f"{where}: the response is not a JSON object")
    data = _get(page, "data", where)
    if not isinstance(data, list):
        raise MalformedResponse(f"{where}: field 'data' should be a list")
    return data


#: Grouped by cost_type and token_type, one cost row fans out into at most 8 rows today
#: (5 token types + 3 other cost types); fan-out rows do not count toward ``limit``, so a cost
#: page may hold up to this many rows per row asked for (room left for new types).
COST_FANOUT_MAX = 16
FANOUT_DIMENSIONS = ("cost_type", "token_type")


def check_page_size(page: Any, limit: int, noun: str, where: str,
                    fanout: bool = False) -> None:
    """Refuse a page holding more ``noun`` (rows, buckets) than the ``limit`` asked for,
    before any row of it is built (MalformedResponse).

    ``fanout`` (Analytics cost grouped by cost and token type): the limit counts (bucket,
    group) combinations without those two dimensions, and the page holds at most
    :data:`COST_FANOUT_MAX` rows per combination asked for.
    """
    data = _page_rows(page, where)
    if len(data) <= limit:
        return  # the common page: nothing to count
    if not fanout:
        count = len(data)
    elif len(data) > limit * COST_FANOUT_MAX:
        count = len(data)
    else:
        count = len({_combination(item) for item in data})
    if count > limit:
        raise MalformedResponse(f"{where}: the page holds {len(data)} {noun}, more than the "
                                f"{limit} asked for; refused, nothing of this window was "
                                "stored, the next run asks again")


def _combination(item: Any) -> Any:
    """A cost row's bucket and group without the fan-out dimensions (a page-size key): a
    tuple, its text where a value is not hashable (a list or an object: malformed)."""
    group = item.get("group") if isinstance(item, Mapping) else None
    if not isinstance(group, Mapping):
        return ("malformed", id(item))  # counted on its own, refused by the parser
    key = (item.get("starting_at"), tuple(sorted(
        ((k, v) for k, v in group.items() if k not in FANOUT_DIMENSIONS), key=_text_of_key)))
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def _text_of_key(pair: tuple[Any, Any]) -> str:
    return str(pair[0])


def page_cursor(page: Mapping[str, Any], where: str) -> str | None:
    """The next page's cursor, or None on the last page (``has_more`` false)."""
    has_more = _get(page, "has_more", where)
    if not isinstance(has_more, bool):
        raise MalformedResponse(f"{where}: field 'has_more' should be true or false")
    if not has_more:
        return None
    cursor = page.get("next_page")
    if not isinstance(cursor, str) or not cursor:
        raise MalformedResponse(f"{where}: has_more is true but next_page is {cursor!r}")
    return cursor


# --- Analytics API -----------------------------------------------------------------------------

def _flat_items(page: Any, metrics: str, where: str
                ) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any], str]]:
    """(row, its group, its ``metrics`` object, where) for each flat Analytics row."""
    for index, item in enumerate(_page_rows(page, where)):
        at = f"{where}, row {index}"
        if not isinstance(item, Mapping):
            raise MalformedResponse(f"{at}: not a JSON object")
        group = _get(item, "group", at)
        values = _get(item, metrics, at)
        if not isinstance(group, Mapping) or not isinstance(values, Mapping):
            raise MalformedResponse(f"{at}: 'group' and '{metrics}' should be objects")
        yield item, group, values, at


def analytics_usage_rows(page: Any, organization: str, where: str) -> list[UsageRow]:
    """Rows of one Analytics usage page (flat rows, one per bucket and group)."""
    return [_usage_row(organization, "analytics", _time(item, "starting_at", at),
                       _time(item, "ending_at", at), group, usage, at,
                       _optional_int(usage, "requests", at))
            for item, group, usage, at in _flat_items(page, "usage", where)]


def analytics_cost_rows(page: Any, organization: str, where: str) -> list[CostRow]:
    """Rows of one Analytics cost page, amounts converted from cents to dollars."""
    return [_cost_row(organization, "analytics", _time(item, "starting_at", at),
                      _time(item, "ending_at", at), "1h", group, cost, at, list_amount=True)
            for item, group, cost, at in _flat_items(page, "cost", where)]


def _check_currency(cost: Mapping[str, Any], where: str) -> None:
    currency = _get(cost, "currency", where)
    if currency != "USD":
        raise MalformedResponse(f"{where}: currency is {_preview(currency)}; spendwatch stores "
                                "US dollars only")


# --- Legacy Admin API --------------------------------------------------------------------------

def _buckets(page: Any, where: str) -> list[tuple[datetime, datetime, list[Any], str]]:
    out = []
    for index, bucket in enumerate(_page_rows(page, where)):
        at = f"{where}, bucket {index}"
        if not isinstance(bucket, Mapping):
            raise MalformedResponse(f"{at}: not a JSON object")
        results = _get(bucket, "results", at)
        if not isinstance(results, list):
            raise MalformedResponse(f"{at}: field 'results' should be a list")
        out.append((_time(bucket, "starting_at", at), _time(bucket, "ending_at", at), results, at))
    return out


def legacy_usage_rows(page: Any, organization: str, where: str) -> list[UsageRow]:
    """Rows of one legacy usage_report/messages page (rows nested per bucket).

    The legacy API reports the default workspace as a null ``workspace_id``; it is stored as
    null and shown as the default workspace.
    """
    rows = []
    for start, end, results, at_bucket in _buckets(page, where):
        for index, item in enumerate(results):
            at = f"{at_bucket}, row {index}"
            if not isinstance(item, Mapping):
                raise MalformedResponse(f"{at}: not a JSON object")
            rows.append(_usage_row(organization, "legacy", start, end, item, item, at, None))
    return rows


def legacy_cost_rows(page: Any, organization: str, where: str) -> list[CostRow]:
    """Rows of one legacy cost_report page: daily, per workspace and description, no list price."""
    rows = []
    for start, end, results, at_bucket in _buckets(page, where):
        for index, item in enumerate(results):
            at = f"{at_bucket}, row {index}"
            if not isinstance(item, Mapping):
                raise MalformedResponse(f"{at}: not a JSON object")
            rows.append(_cost_row(organization, "legacy", start, end, "1d", item, item, at,
                                  list_amount=False))
    return rows


# --- cuts (spendwatch.cuts): the same hours grouped by price, people, groups, profiles --------

@dataclass(frozen=True)
class CutRow:
    """One hour bucket of one cut and one combination of its dimensions (columns the cut does
    not group by are None): what its usage and cost rows share."""

    organization: str
    cut: str
    source: str
    bucket_start: datetime
    bucket_end: datetime
    model: str | None
    service_tier: str | None
    context_window: str | None
    inference_geo: str | None
    speed: str | None
    product: str | None
    actor_key: str | None
    actor_type: str | None
    rbac_group_id: str | None
    user_profile_id: str | None
    workspace_id: str | None
    api_key_id: str | None

    @cached_property
    def row_key(self) -> str:
        """The natural key: organization, bucket, cut, every cut dimension (computed once: a
        window's writer asks for it three times, over tens of thousands of rows)."""
        return json.dumps([self.organization, self.bucket_start.isoformat(), self.cut,
                           *(getattr(self, d) for d in CUT_DIMENSIONS)])


@dataclass(frozen=True)
class CutUsageRow(CutRow):
    """Token usage of one hour bucket of one cut and one combination of its dimensions."""

    uncached_input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    output_tokens: int
    web_search_requests: int
    requests: int | None


@dataclass(frozen=True)
class CutCostRow(CutRow):
    """Billed cost of one hour bucket of one cut, combination, cost type and token type."""

    cost_type: str | None
    token_type: str | None
    amount_usd: Decimal
    list_amount_usd: Decimal | None
    requests: int | None

    @cached_property
    def row_key(self) -> str:
        return json.dumps([self.organization, self.bucket_start.isoformat(), self.cut,
                           *(getattr(self, d) for d in CUT_DIMENSIONS),
                           self.cost_type, self.token_type])


@dataclass(frozen=True)
class Person:
    """Who an ``actor`` is, as the rows named them (for labels; never summed)."""

    actor_key: str
    actor_type: str
    email: str | None
    name: str | None
    deleted: bool


ACTOR_TYPES = ("user_actor", "service_account_actor", "api_actor", "federated_actor")
_ACTOR_ID_FIELD = {"user_actor": "user_id", "service_account_actor": "service_account_id",
                   "api_actor": "api_key_id"}


def _digest(actor: Mapping[str, Any]) -> str:
    """A stable short name for an actor object that carries no ID (all of it, hashed)."""
    text = json.dumps(actor, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def parse_actor(group: Mapping[str, Any], where: str) -> tuple[str | None, str | None,
                                                                Person | None]:
    """(actor_key, actor_type, Person) of a group's ``actor`` (all None when null).

    The key is the user, service account or API key ID, or for a federated identity
    ``federated:<issuer or account>:<subject>``; an actor type spendwatch does not know yet is
    kept under ``<type>:<its fields>`` and logged once.
    """
    actor = group.get("actor")
    if actor is None:
        return None, None, None
    if not isinstance(actor, Mapping):
        raise MalformedResponse(f"{where}: field 'actor' should be an object or null, "
                                f"got {type(actor).__name__} {_preview(actor)}")
    kind = _optional_str(actor, "type", where)
    if kind is None:
        raise MalformedResponse(f"{where}: field 'actor.type' is missing")
    if kind in _ACTOR_ID_FIELD:
        key = _optional_str(actor, _ACTOR_ID_FIELD[kind], where)
        if key is None:
            raise MalformedResponse(f"{where}: field 'actor.{_ACTOR_ID_FIELD[kind]}' is missing")
    elif kind == "federated_actor":
        provider = actor.get("provider")
        if isinstance(provider, Mapping):
            origin = (_optional_str(provider, "issuer", where)
                      or _optional_str(provider, "account_id", where)
                      or _optional_str(provider, "type", where) or "unknown")
        else:
            origin = _optional_str(actor, "provider", where) or "unknown"
        subject = _optional_str(actor, "subject", where)
        key = (f"federated:{origin}:{subject}" if subject else
               f"federated:{origin}:#{_digest(actor)}")
    else:
        _optional_str(actor, "type", where, ACTOR_TYPES)  # logged once, kept
        key = f"{kind}:#{_digest(actor)}"
    email = _optional_str(actor, "email_address", where) if kind == "user_actor" else None
    name = _optional_str(actor, "name", where) if kind == "user_actor" else None
    deleted = actor.get("deleted") is True
    return key, kind, Person(key, kind, email, name, deleted)


def _cut_dimensions(group: Mapping[str, Any], cut: str, where: str
                    ) -> tuple[dict[str, Any], Person | None]:
    actor_key, actor_type, person = parse_actor(group, where)
    dims: dict[str, Any] = {d: _optional_str(group, d, where)
                                   for d in CUT_DIMENSIONS if d not in ("actor_key", "actor_type")}
    dims["actor_key"] = actor_key
    dims["actor_type"] = actor_type or _optional_str(group, "actor_type", where)
    return dims, person


def _any(values: Mapping[str, Any]) -> dict[str, Any]:
    return dict(values)


def analytics_cut_usage_rows(page: Any, organization: str, cut: str, where: str,
                             people: dict[str, Person]) -> list[CutUsageRow]:
    """Rows of one Analytics usage page of a cut; actors seen are added to ``people``."""
    rows = []
    for item, group, usage, at in _flat_items(page, "usage", where):
        dims, person = _cut_dimensions(group, cut, at)
        if person is not None:
            people[person.actor_key] = person
        rows.append(CutUsageRow(organization=organization, cut=cut, source="analytics",
                                bucket_start=_time(item, "starting_at", at),
                                bucket_end=_time(item, "ending_at", at), **dims,
                                **_any(_usage_metrics(usage, at)),
                                requests=_optional_int(usage, "requests", at)))
    return rows


def analytics_cut_cost_rows(page: Any, organization: str, cut: str, where: str,
                            people: dict[str, Person]) -> list[CutCostRow]:
    """Rows of one Analytics cost page of a cut, amounts from cents to dollars."""
    rows = []
    for item, group, cost, at in _flat_items(page, "cost", where):
        dims, person = _cut_dimensions(group, cut, at)
        if person is not None:
            people[person.actor_key] = person
        _check_currency(cost, at)
        rows.append(CutCostRow(
            organization=organization, cut=cut, source="analytics",
            bucket_start=_time(item, "starting_at", at), bucket_end=_time(item, "ending_at", at),
            **dims, cost_type=_optional_str(group, "cost_type", at, COST_TYPES),
            token_type=_optional_str(group, "token_type", at, TOKEN_TYPES),
            amount_usd=cents_to_dollars(_get(cost, "amount", at), at, "amount"),
            list_amount_usd=cents_to_dollars(_get(cost, "list_amount", at), at, "list_amount"),
            requests=_optional_int(cost, "requests", at)))
    return rows


def legacy_cut_usage_rows(page: Any, organization: str, cut: str, where: str
                          ) -> list[CutUsageRow]:
    """Rows of one legacy usage_report/messages page read for a cut (the price cut: model,
    tier, context window, inference geo, speed)."""
    rows = []
    for start, end, results, at_bucket in _buckets(page, where):
        for index, item in enumerate(results):
            at = f"{at_bucket}, row {index}"
            if not isinstance(item, Mapping):
                raise MalformedResponse(f"{at}: not a JSON object")
            dims, _ = _cut_dimensions(item, cut, at)
            rows.append(CutUsageRow(organization=organization, cut=cut, source="legacy",
                                    bucket_start=start, bucket_end=end, **dims,
                                    **_any(_usage_metrics(item, at)), requests=None))
    return rows


def merge_unrendered(rows: list[Any]) -> list[Any]:
    """Rows of a cut with the same key and no actor summed into one.

    The Analytics API reads distinct identities it cannot render as a null ``actor``, "each as
    its own row": several rows of one bucket with the same group. Other repeated keys are left
    as they are (the window's writer refuses them: a page sent twice).
    """
    out: list[Any] = []
    at: dict[str, int] = {}
    for row in rows:
        if row.actor_key is not None or getattr(row, "actor_type", None) is not None:
            out.append(row)
            continue
        key = row.row_key
        if key not in at:
            at[key] = len(out)
            out.append(row)
            continue
        first = out[at[key]]
        out[at[key]] = _summed(first, row)
    return out


def _summed(a: Any, b: Any) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name in ("requests", "list_amount_usd"):
            changes[f.name] = None if va is None or vb is None else va + vb
        elif isinstance(va, (int, Decimal)) and not isinstance(va, bool) and f.name not in (
                "bucket_start", "bucket_end"):
            changes[f.name] = va + vb
    return replace(a, **changes)


# --- the legacy Claude Code report -------------------------------------------------------------

@dataclass(frozen=True)
class ClaudeCodeRow:
    """One actor's Claude Code activity on one UTC day (usage_report/claude_code)."""

    organization: str
    day: date
    actor_type: str
    actor: str
    terminal_type: str | None
    sessions: int
    lines_added: int
    lines_removed: int
    commits: int
    pull_requests: int
    tool_accepted: int
    tool_rejected: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    estimated_cost_usd: Decimal
    models: str

    @property
    def row_key(self) -> str:
        return json.dumps([self.organization, self.day.isoformat(), self.actor_type,
                           self.actor, self.terminal_type])


def _cents_number(value: Any, where: str, field: str) -> Decimal:
    """Cents sent as a JSON number (parsed with ``parse_float=Decimal``) or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise MalformedResponse(f"{where}: field '{field}' should be a number of cents, "
                                f"got {type(value).__name__} {_preview(value)}")
    return cents_to_dollars(str(value), where, field)


def claude_code_rows(page: Any, organization: str, where: str) -> list[ClaudeCodeRow]:
    """Rows of one usage_report/claude_code page (parse it with ``parse_float=Decimal``: the
    estimated cost is a JSON number of cents)."""
    rows = []
    for index, item in enumerate(_page_rows(page, where)):
        at = f"{where}, record {index}"
        if not isinstance(item, Mapping):
            raise MalformedResponse(f"{at}: not a JSON object")
        actor = _get(item, "actor", at)
        if not isinstance(actor, Mapping):
            raise MalformedResponse(f"{at}: field 'actor' should be an object")
        actor_type = _optional_str(actor, "type", at) or "unknown"
        who = (_optional_str(actor, "email_address", at) or _optional_str(actor, "api_key_name", at)
               or _optional_str(actor, "user_id", at) or "(unknown)")
        tools = item.get("tool_actions") or {}
        if not isinstance(tools, Mapping):
            raise MalformedResponse(f"{at}: field 'tool_actions' should be an object")
        accepted = rejected = 0
        for tool, counts in tools.items():
            if not isinstance(counts, Mapping):
                raise MalformedResponse(f"{at}: field 'tool_actions.{tool}' should be an object")
            accepted += _int(counts, "accepted", at)
            rejected += _int(counts, "rejected", at)
        breakdown = _get(item, "model_breakdown", at)
        if not isinstance(breakdown, list):
            raise MalformedResponse(f"{at}: field 'model_breakdown' should be a list")
        tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
        cost = Decimal(0)
        models = []
        for m_index, model in enumerate(breakdown):
            m_at = f"{at}, model {m_index}"
            if not isinstance(model, Mapping):
                raise MalformedResponse(f"{m_at}: not a JSON object")
            models.append(_optional_str(model, "model", m_at) or "?")
            for name in tokens:
                tokens[name] += _int(model, f"tokens.{name}", m_at)
            cost += _cents_number(_get(model, "estimated_cost.amount", m_at), m_at,
                                  "estimated_cost.amount")
        day_text = _get(item, "date", at)
        try:
            day = parse_utc(day_text).date() if isinstance(day_text, str) and "T" in day_text \
                else date.fromisoformat(str(day_text))
        except ValueError:
            raise MalformedResponse(f"{at}: field 'date' should be a date, got "
                                    f"{_preview(day_text)}") from None
        rows.append(ClaudeCodeRow(
            organization=organization, day=day, actor_type=actor_type, actor=who,
            terminal_type=_optional_str(item, "terminal_type", at),
            sessions=_int(item, "core_metrics.num_sessions", at),
            lines_added=_int(item, "core_metrics.lines_of_code.added", at),
            lines_removed=_int(item, "core_metrics.lines_of_code.removed", at),
            commits=_int(item, "core_metrics.commits_by_claude_code", at),
            pull_requests=_int(item, "core_metrics.pull_requests_by_claude_code", at),
            tool_accepted=accepted, tool_rejected=rejected,
            input_tokens=tokens["input"], output_tokens=tokens["output"],
            cache_read_tokens=tokens["cache_read"], cache_creation_tokens=tokens["cache_creation"],
            estimated_cost_usd=cost, models=",".join(sorted(set(models)))))
    return rows
