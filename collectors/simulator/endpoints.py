"""The simulated API's endpoints as pure functions: (org, query, now) -> JSON-ready dict.

HTTP, authentication and faults live in :mod:`collectors.simulator.server`; this module
validates parameters, aggregates the generator's hour records and shapes responses exactly
as ``shared/reference/anthropic-admin-api.md`` describes. Validation failures raise
:class:`ApiError` (status 400 ``invalid_request_error`` with a message naming the parameter;
404 ``not_found_error`` for unknown object ids).

``query`` arguments are the parsed query string with every name's trailing ``[]`` removed
(``group_by[]=a&group_by[]=b`` and ``group_by=a&group_by=b`` both give
``{"group_by": ["a", "b"]}``); see :func:`normalize_query`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

from .generator import (
    ANALYTICS_EARLIEST,
    ANALYTICS_MAX_AGE,
    COST_TYPES,
    DAY,
    HOUR,
    TOKEN_TYPES,
    UTC,
    Actor,
    ApiKey,
    ClaudeCodeDay,
    SimulatedOrg,
    UsagePart,
    UsageRecord,
    Workspace,
    decimal_str,
    format_rfc3339,
    legacy_description,
    parse_rfc3339,
)

Query = Mapping[str, Sequence[str]]
MINUTE = timedelta(minutes=1)

#: Every group key of the SDK's BetaAnalyticsUsageGroup (also the usage group_by dimensions).
USAGE_GROUP_KEYS: tuple[str, ...] = (
    "actor",
    "actor_type",
    "agent_id",
    "api_key_id",
    "claude_tag_category",
    "claude_tag_user_id",
    "context_window",
    "deployment_id",
    "environment_id",
    "inference_geo",
    "model",
    "organization_id",
    "product",
    "rbac_group_id",
    "service_tier",
    "session_id",
    "slack_channel_id",
    "speed",
    "user_profile_id",
    "workspace_id",
)
#: Cost-only dimensions; they do not count toward the 5-dimension limit.
FANOUT_DIMENSIONS: tuple[str, ...] = ("cost_type", "token_type")
COST_GROUP_KEYS: tuple[str, ...] = tuple(sorted(USAGE_GROUP_KEYS + FANOUT_DIMENSIONS))
MAX_GROUP_BY = 5
MAX_RANGE = timedelta(days=31)
MAX_MINUTE_RANGE = timedelta(hours=24)
BUCKET_WIDTHS: Mapping[str, timedelta] = {"1d": DAY, "1h": HOUR, "1m": MINUTE}
USAGE_ORDER_BY: tuple[str, ...] = ("total_tokens", "uncached_input_tokens", "output_tokens", "requests", "time")
COST_ORDER_BY: tuple[str, ...] = ("amount", "list_amount", "time")

SERVICE_TIERS = ("standard", "batch", "priority", "priority_on_demand", "flex", "flex_discount")
CONTEXT_WINDOWS = ("0-200k", "200k-1M")
SPEEDS = ("standard", "fast")
INFERENCE_GEO_FILTERS = ("global", "us", "not_available")
ACTOR_TYPES = ("api_actor", "federated_actor", "service_account_actor", "user_actor")
#: Dimensions served from the records' (product, actor) parts; also the ones an organization
#: without people dimensions may not group or filter by.
PEOPLE_DIMENSIONS: tuple[str, ...] = ("product", "actor", "actor_type", "rbac_group_id", "user_profile_id")
#: Filters on people dimensions and the dimension each one names.
PEOPLE_FILTERS: Mapping[str, str] = {"products": "product", "actor_ids": "actor", "actor_types": "actor_type",
                                     "rbac_group_ids": "rbac_group_id"}
#: The beta that legacy usage grouping or filtering by ``speed`` requires.
FAST_MODE_BETA = "fast-mode-2026-02-01"
#: Internal group values of the two rows that unattributed usage is served as when grouping
#: by ``actor`` (both read null).
NULL_ACTOR_ROWS: tuple[str, str] = ("\x00null-actor:0", "\x00null-actor:1")

LEGACY_USAGE_DIMS: tuple[str, ...] = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)
#: Keys present on every legacy usage row (account_id/service_account_id only when grouped).
LEGACY_USAGE_ROW_DIMS: tuple[str, ...] = LEGACY_USAGE_DIMS[:7]
LEGACY_USAGE_LIMITS: Mapping[str, tuple[int, int]] = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}
LEGACY_COST_DIMS: tuple[str, ...] = ("workspace_id", "description")
LEGACY_COST_LIMITS: tuple[int, int] = (7, 31)

#: Canonical order of (cost_type, token_type) components.
COST_COMPONENTS: tuple[tuple[str, str | None], ...] = tuple(("tokens", t) for t in TOKEN_TYPES) + tuple(
    (c, None) for c in COST_TYPES[1:]
)


class ApiError(Exception):
    """An API error response: HTTP ``status``, error ``error_type``, human ``message``."""

    def __init__(self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, "invalid_request_error", message)


def normalize_query(raw: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Merge ``name[]`` into ``name`` (values kept in order)."""
    out: dict[str, list[str]] = {}
    for name, values in raw.items():
        key = name[:-2] if name.endswith("[]") else name
        out.setdefault(key, []).extend(values)
    return out


# --------------------------------------------------------------------------------------------
# Parameter helpers


def _scalar(query: Query, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    return values[-1]


def _datetime_param(query: Query, name: str, required: bool) -> datetime | None:
    text = _scalar(query, name)
    if text is None or text == "":
        if required:
            raise invalid(f"{name}: field required (an RFC 3339 date-time such as 2026-11-01T00:00:00Z).")
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise invalid(f"{name}: must be an RFC 3339 date-time with a time zone, such as 2026-11-01T00:00:00Z.") from None


def _int_param(query: Query, name: str, default: int, lo: int, hi: int) -> int:
    text = _scalar(query, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(f"{name}: must be an integer between {lo} and {hi}.") from None
    if not lo <= value <= hi:
        raise invalid(f"{name}: must be an integer between {lo} and {hi}; got {value}.")
    return value


def _bool_param(query: Query, name: str, default: bool) -> bool:
    text = _scalar(query, name)
    if text is None:
        return default
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid(f"{name}: must be true or false.")


def _choice_param(query: Query, name: str, choices: Sequence[str], default: str | None) -> str | None:
    text = _scalar(query, name)
    if text is None or text == "":
        return default
    if text not in choices:
        raise invalid(f"{name}: must be one of {', '.join(choices)}; got {text!r}.")
    return text


def enum_list(query: Query, name: str, choices: Sequence[str]) -> list[str] | None:
    values = query.get(name)
    if values is None:
        return None
    for v in values:
        if v not in choices:
            raise invalid(f"{name}[]: {v!r} is not one of {', '.join(choices)}.")
    return list(values)


def _ceil(moment: datetime, width: timedelta) -> datetime:
    floored = _floor(moment, width)
    return floored if floored == moment else floored + width


def _floor(moment: datetime, width: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if width == DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if width == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


# --------------------------------------------------------------------------------------------
# Cursors


def _fingerprint(endpoint: str, query: Query) -> str:
    items = sorted((k, sorted(v)) for k, v in query.items() if k not in ("page", "beta"))
    return hashlib.sha256(json.dumps([endpoint, items]).encode()).hexdigest()[:16]


def encode_cursor(endpoint: str, query: Query, offset: int) -> str:
    """An opaque cursor: base64url of the next offset and a fingerprint of the other params."""
    payload = json.dumps({"o": offset, "f": _fingerprint(endpoint, query)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(endpoint: str, query: Query) -> int:
    """The offset in ``query``'s ``page`` cursor (0 without one).

    Raises a 400 naming ``page`` for a malformed cursor or one issued for other parameters.
    """
    text = _scalar(query, "page")
    if text is None or text == "":
        return 0
    try:
        payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        offset = int(payload["o"])
        fingerprint = str(payload["f"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid("page: not a valid cursor; pass the next_page value of the previous response.") from None
    if fingerprint != _fingerprint(endpoint, query) or offset < 0:
        raise invalid(
            "page: this cursor was issued for a request with different parameters; "
            "send every other parameter unchanged."
        )
    return offset


# --------------------------------------------------------------------------------------------
# Analytics API


@dataclass(frozen=True)
class AnalyticsParams:
    """Validated Analytics request parameters."""

    endpoint: str
    starting_at: datetime
    ending_at: datetime
    width: str | None
    range_lo: datetime
    range_hi: datetime
    group_by: tuple[str, ...]
    limit: int
    order_by: str
    order: str
    offset: int
    filters: Mapping[str, frozenset[str | None]]


def parse_analytics_params(endpoint: str, query: Query, now: datetime) -> AnalyticsParams:
    """Validate an Analytics usage (``endpoint="usage"``) or cost (``"cost"``) query.

    Rules (each failure is a 400 naming the parameter): ``starting_at`` required; ``ending_at``
    required with ``time_bucket_width`` and otherwise the earlier of now and starting_at + 31
    days; ending_at > starting_at; range <= 31 days (<= 24 hours with ``1m``); starting_at not
    before 2026-01-01T00:00:00Z nor older than 365 days; at most 5 ``group_by[]`` dimensions
    (``cost_type``/``token_type`` not counted, cost only); ``limit`` 1..1000 (default 20);
    ``order_by``/``order`` from the documented sets; ``page`` a cursor for the same params.
    """
    width = _choice_param(query, "time_bucket_width", tuple(BUCKET_WIDTHS), None)
    starting_at = _datetime_param(query, "starting_at", required=True)
    assert starting_at is not None
    ending_at = _datetime_param(query, "ending_at", required=False)
    if ending_at is None:
        if width is not None:
            raise invalid("ending_at: field required when time_bucket_width is set.")
        ending_at = min(now, starting_at + MAX_RANGE)
        if ending_at <= starting_at:
            ending_at = starting_at + HOUR
    elif ending_at <= starting_at:
        raise invalid("ending_at: must be after starting_at.")
    if ending_at - starting_at > MAX_RANGE:
        raise invalid("ending_at: the range from starting_at to ending_at may span at most 31 days.")
    if width == "1m" and ending_at - starting_at > MAX_MINUTE_RANGE:
        raise invalid("ending_at: with time_bucket_width=1m the range may span at most 24 hours.")
    if starting_at < ANALYTICS_EARLIEST:
        raise invalid("starting_at: must be no earlier than 2026-01-01T00:00:00Z.")
    if starting_at < now - ANALYTICS_MAX_AGE:
        raise invalid("starting_at: must be within the last 365 days.")

    allowed = USAGE_GROUP_KEYS + (FANOUT_DIMENSIONS if endpoint == "cost" else ())
    group_by: list[str] = []
    for dim in query.get("group_by", []):
        if dim not in allowed:
            raise invalid(f"group_by[]: unknown dimension {dim!r}; allowed: {', '.join(allowed)}.")
        if dim not in group_by:
            group_by.append(dim)
    counted = [d for d in group_by if d not in FANOUT_DIMENSIONS]
    if len(counted) > MAX_GROUP_BY:
        raise invalid(
            f"group_by[]: at most {MAX_GROUP_BY} dimensions (cost_type and token_type not counted); "
            f"got {len(counted)}."
        )
    limit = _int_param(query, "limit", 20, 1, 1000)
    order_choices = USAGE_ORDER_BY if endpoint == "usage" else COST_ORDER_BY
    order_by = _choice_param(query, "order_by", order_choices, order_choices[0])
    order = _choice_param(query, "order", ("asc", "desc"), "desc")
    assert order_by is not None and order is not None

    filters: dict[str, frozenset[str | None]] = {}
    for name in ("models", "workspace_ids", "products", "actor_ids", "rbac_group_ids"):
        if name in query:
            filters[name] = frozenset(query[name])
    if "api_key_ids" in query:
        filters["api_key_ids"] = frozenset(v if v != "" else None for v in query["api_key_ids"])
    for name, choices in (
        ("service_tiers", SERVICE_TIERS),
        ("context_windows", CONTEXT_WINDOWS),
        ("speeds", SPEEDS),
        ("inference_geos", INFERENCE_GEO_FILTERS),
        ("actor_types", ACTOR_TYPES),
    ):
        values = enum_list(query, name, choices)
        if values is not None:
            filters[name] = frozenset(values)

    if width is None:
        lo = _floor(starting_at, HOUR)
        hi = _floor(ending_at, HOUR)
    else:
        step = BUCKET_WIDTHS[width]
        lo = _floor(starting_at, step)
        hi = _ceil(ending_at, step)
    offset = decode_cursor(f"analytics/{endpoint}", query)
    return AnalyticsParams(
        endpoint=endpoint,
        starting_at=starting_at,
        ending_at=ending_at,
        width=width,
        range_lo=lo,
        range_hi=hi,
        group_by=tuple(group_by),
        limit=limit,
        order_by=order_by,
        order=order,
        offset=offset,
        filters=filters,
    )


def record_dimension(record: UsageRecord, dim: str) -> str | None:
    """A record's value for an Analytics dimension (None for unsupported dimensions)."""
    if dim == "model":
        return record.model
    if dim == "workspace_id":
        return record.workspace_id
    if dim == "api_key_id":
        return record.api_key_id
    if dim == "service_tier":
        return record.service_tier
    if dim == "context_window":
        return record.context_window
    if dim == "speed":
        return record.speed
    if dim == "inference_geo":
        return record.inference_geo
    return None


def part_dimension(part: UsagePart, dim: str) -> str | None:
    """A part's value for an Analytics dimension: its record's, or for the people dimensions
    the part's ``product``, ``actor`` key, ``actor_type`` and ``user_profile_id`` (None when
    the part has no actor). ``rbac_group_id`` is multi-valued: see :func:`_part_groups`."""
    actor = part.actor
    if dim == "product":
        return part.product
    if dim == "actor":
        return actor.key if actor is not None else None
    if dim == "actor_type":
        return actor.type if actor is not None else None
    if dim == "user_profile_id":
        return actor.user_profile_id if actor is not None else None
    return record_dimension(part.record, dim)


def _part_groups(part: UsagePart, wanted: frozenset[str | None] | None) -> tuple[str | None, ...]:
    """The ``rbac_group_id`` values of a part (any-membership: each of its user's groups, or
    None for no group), restricted to ``wanted`` (an ``rbac_group_ids[]`` filter) if set."""
    groups: tuple[str | None, ...] = part.actor.rbac_group_ids if part.actor is not None else ()
    if not groups:
        groups = (None,)
    return tuple(g for g in groups if wanted is None or g in wanted)


def _part_matches(part: UsagePart, filters: Mapping[str, frozenset[str | None]]) -> bool:
    """The people filters: ``products[]``, ``actor_ids[]`` (user, service account or API key
    id; the federated identity by its actor key), ``actor_types[]``, ``rbac_group_ids[]`` (a
    user in any of the groups). The record filters are :func:`_matches`'."""
    actor = part.actor
    for name, allowed in filters.items():
        if name == "products":
            ok = part.product in allowed
        elif name == "actor_ids":
            ok = actor is not None and (actor.id in allowed or actor.key in allowed)
        elif name == "actor_types":
            ok = actor is not None and actor.type in allowed
        elif name == "rbac_group_ids":
            ok = actor is not None and any(g in allowed for g in actor.rbac_group_ids)
        else:
            continue
        if not ok:
            return False
    return True


def _check_people_access(org: SimulatedOrg, params: AnalyticsParams) -> bool:
    """Whether the request needs the parts (a people dimension grouped or filtered); raises a
    403 naming the first such dimension when the organization has no people dimensions."""
    offending = [("group_by[]", d) for d in params.group_by if d in PEOPLE_DIMENSIONS]
    offending += [(f"{name}[]", dim) for name, dim in PEOPLE_FILTERS.items() if name in params.filters]
    if offending and not org.people_dimensions:
        where, dim = offending[0]
        raise ApiError(403, "permission_error", f"{where}: {dim} is not available for this organization (people and "
                       "product dimensions require Claude Enterprise).")
    return bool(offending)


def _matches(record: UsageRecord, filters: Mapping[str, frozenset[str | None]]) -> bool:
    for name, allowed in filters.items():
        if name == "models":
            value = record.model
        elif name == "workspace_ids":
            value = record.workspace_id
        elif name == "api_key_ids":
            value = record.api_key_id
        elif name == "service_tiers":
            value = record.service_tier
        elif name in ("context_windows", "context_window"):
            value = record.context_window
        elif name == "speeds":
            value = record.speed
        elif name == "inference_geos":
            value = record.inference_geo or "not_available"
        else:
            continue
        if value not in allowed:
            return False
    return True


def _group_sort_key(values: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, v or "") for v in values)


def _usage_dict(c: Sequence[int]) -> dict[str, object]:
    uncached, w5, w1, read, out, searches, requests = c
    return {
        "uncached_input_tokens": uncached,
        "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
        "cache_read_input_tokens": read,
        "output_tokens": out,
        "server_tool_use": {"web_search_requests": searches},
        "total_tokens": uncached + w5 + w1 + read + out,
        "requests": requests,
    }


def _record_counts(r: UsageRecord) -> tuple[int, int, int, int, int, int, int]:
    return (
        r.uncached_input_tokens,
        r.cache_creation_5m,
        r.cache_creation_1h,
        r.cache_read_input_tokens,
        r.output_tokens,
        r.web_search_requests,
        r.requests,
    )


Costs = Sequence[tuple[str, str | None, Decimal]]


def _contributions(
    org: SimulatedOrg, params: AnalyticsParams, grouped: Sequence[str], use_parts: bool, now: datetime
) -> Iterator[tuple[datetime, tuple[str | None, ...], tuple[int, ...], Costs]]:
    """What each record (or, with ``use_parts``, each (product, actor) part) of the range
    adds to which group: ``(hour, group values, counts, cost lines)``, filters applied and
    session runtime left out of usage. With parts: a part in several RBAC groups adds in full
    to each of its groups' rows when grouping by ``rbac_group_id``; when grouping by ``actor``
    a part with no actor is split in two (:meth:`SimulatedOrg.split_part`) under the two
    :data:`NULL_ACTOR_ROWS` values, so unattributed usage reads as two null-actor rows."""
    is_cost = params.endpoint == "cost"
    if not use_parts:
        for rec in org.records(params.range_lo, params.range_hi, now):
            if rec.hour < params.range_lo or (not is_cost and rec.kind == "session_usage"):
                continue
            if params.filters and not _matches(rec, params.filters):
                continue
            yield rec.hour, tuple(record_dimension(rec, d) for d in grouped), _record_counts(rec), rec.costs
        return
    wanted_groups = params.filters.get("rbac_group_ids")
    by_group = "rbac_group_id" in grouped
    for part in org.parts(params.range_lo, params.range_hi, now):
        rec = part.record
        if rec.hour < params.range_lo or (not is_cost and rec.kind == "session_usage"):
            continue
        if params.filters and not (_matches(rec, params.filters) and _part_matches(part, params.filters)):
            continue
        pieces: Sequence[tuple[UsagePart, str | None]] = [(part, part_dimension(part, "actor"))]
        if part.actor is None and "actor" in grouped:
            pieces = list(zip(org.split_part(part, (1, 1)), NULL_ACTOR_ROWS))
        groups = _part_groups(part, wanted_groups) if by_group else (None,)
        for piece, actor_value in pieces:
            base = [actor_value if d == "actor" else part_dimension(piece, d) for d in grouped]
            counts = _part_counts(piece)
            for group_id in groups:
                values = tuple(group_id if d == "rbac_group_id" else v for d, v in zip(grouped, base))
                yield rec.hour, values, counts, piece.costs


def _part_counts(p: UsagePart) -> tuple[int, int, int, int, int, int, int]:
    return (p.uncached_input_tokens, p.cache_creation_5m, p.cache_creation_1h, p.cache_read_input_tokens,
            p.output_tokens, p.web_search_requests, p.requests)


def _render(org: SimulatedOrg, dim: str, value: str | None) -> object:
    """A group value as the response carries it: the ``actor`` key becomes the actor's JSON
    (:meth:`Actor.api_json`), the null-actor row values null; others as they are."""
    if dim != "actor" or value is None:
        return value
    actor: Actor | None = org.actor_by_key.get(value)
    return actor.api_json() if actor is not None else None


def analytics_report(org: SimulatedOrg, endpoint: str, query: Query, now: datetime) -> dict[str, object]:
    """``GET /v1/organizations/analytics/{usage,cost}``: one page of flat rows.

    Rows: one per (time bucket, group) with usage in the range; buckets are UTC-aligned
    (``1d`` at midnight; ``1m`` buckets carry each hour's data in its first minute); without
    ``time_bucket_width`` one row per group spans ``[floor_hour(starting_at),
    floor_hour(ending_at))``. Usage includes code execution as rows whose model,
    service_tier and context_window are null (speed "standard") with zero tokens and requests > 0.
    Cost rows fan out per cost_type/token_type when grouped by them (non-zero components
    only, ``requests`` null, not counted toward ``limit``, kept on one page). Order: the
    ``order_by`` metric in ``order`` direction (``time``: bucket in ``order`` direction then
    total_tokens/amount desc), ties broken by bucket start ascending then group values.

    People and products: grouping or filtering by product, actor, actor_type, rbac_group_id
    or user_profile_id (filters ``products[]``, ``actor_ids[]``, ``actor_types[]``,
    ``rbac_group_ids[]``) serves the rows from the records' parts (see :func:`_contributions`;
    otherwise from the records, at no extra cost), so every row set without ``rbac_group_id``
    adds up, per bucket, to exactly the cents and tokens of the plain key grouping. ``actor``
    is the SDK's actor union or null; unattributed usage comes as **two** null-actor rows per
    group and bucket (a reader must sum them). ``rbac_group_id`` rows overlap
    (any-membership); null is everything of no group. Without ``org.people_dimensions``
    those requests are a 403 permission_error naming the first such dimension.
    """
    params = parse_analytics_params(endpoint, query, now)
    width_step = BUCKET_WIDTHS[params.width] if params.width else None
    grouped = [d for d in params.group_by if d not in FANOUT_DIMENSIONS]
    is_cost = endpoint == "cost"

    use_parts = _check_people_access(org, params)

    usage_acc: dict[tuple[datetime, tuple[str | None, ...]], list[int]] = {}
    cost_acc: dict[tuple[datetime, tuple[str | None, ...]], dict[tuple[str, str | None], Decimal]] = {}
    req_acc: dict[tuple[datetime, tuple[str | None, ...]], int] = {}
    for hour, values, counts, costs in _contributions(org, params, grouped, use_parts, now):
        bucket = params.range_lo if width_step is None else _floor(hour, width_step)
        key = (bucket, values)
        if is_cost:
            parts = cost_acc.setdefault(key, {})
            for cost_type, token_type, cents in costs:
                parts[(cost_type, token_type)] = parts.get((cost_type, token_type), Decimal(0)) + cents
            req_acc[key] = req_acc.get(key, 0) + counts[6]
        else:
            acc = usage_acc.setdefault(key, [0] * 7)
            for i, v in enumerate(counts):
                acc[i] += v

    descending = params.order == "desc"
    sign = -1 if descending else 1
    by_time = params.order_by == "time" and params.width is not None
    keys: list[tuple[datetime, tuple[str | None, ...]]]
    if is_cost:
        totals = {k: sum(v.values(), Decimal(0)) for k, v in cost_acc.items()}

        def cost_sort(k: tuple[datetime, tuple[str | None, ...]]) -> tuple[object, ...]:
            ts = k[0].timestamp()
            if by_time:
                return (sign * ts, -totals[k], _group_sort_key(k[1]))
            return (sign * totals[k], ts, _group_sort_key(k[1]))

        keys = sorted(cost_acc, key=cost_sort)
    else:
        metric_index: Callable[[list[int]], int]
        if params.order_by == "uncached_input_tokens":
            metric_index = lambda c: c[0]  # noqa: E731
        elif params.order_by == "output_tokens":
            metric_index = lambda c: c[4]  # noqa: E731
        elif params.order_by == "requests":
            metric_index = lambda c: c[6]  # noqa: E731
        else:
            metric_index = lambda c: sum(c[:5])  # noqa: E731

        def usage_sort(k: tuple[datetime, tuple[str | None, ...]]) -> tuple[object, ...]:
            ts = k[0].timestamp()
            c = usage_acc[k]
            if by_time:
                return (sign * ts, -sum(c[:5]), _group_sort_key(k[1]))
            return (sign * metric_index(c), ts, _group_sort_key(k[1]))

        keys = sorted(usage_acc, key=usage_sort)

    page = keys[params.offset : params.offset + params.limit]
    has_more = params.offset + params.limit < len(keys)
    group_keys = COST_GROUP_KEYS if is_cost else USAGE_GROUP_KEYS
    rows: list[dict[str, object]] = []
    for bucket, values in page:
        start = bucket
        end = params.range_hi if width_step is None else bucket + width_step
        group: dict[str, object] = {k: None for k in group_keys}
        for dim, value in zip(grouped, values):
            group[dim] = _render(org, dim, value)
        base = {"starting_at": format_rfc3339(start), "ending_at": format_rfc3339(end)}
        if not is_cost:
            rows.append({**base, "group": group, "usage": _usage_dict(usage_acc[(bucket, values)])})
            continue
        parts = cost_acc[(bucket, values)]
        if not any(d in params.group_by for d in FANOUT_DIMENSIONS):
            amount = decimal_str(sum(parts.values(), Decimal(0)))
            cost = {"amount": amount, "list_amount": amount, "currency": "USD", "requests": req_acc[(bucket, values)]}
            rows.append({**base, "group": group, "cost": cost})
            continue
        fanned: dict[tuple[str | None, str | None], Decimal] = {}
        for component_type, component_token in COST_COMPONENTS:
            part = parts.get((component_type, component_token))
            if part is None:
                continue
            fk = (
                component_type if "cost_type" in params.group_by else None,
                component_token if "token_type" in params.group_by and component_type == "tokens" else None,
            )
            fanned[fk] = fanned.get(fk, Decimal(0)) + part
        for (fan_cost_type, fan_token_type), fan_cents in fanned.items():
            if fan_cents == 0:
                continue
            amount = decimal_str(fan_cents)
            rows.append(
                {
                    **base,
                    "group": {**group, "cost_type": fan_cost_type, "token_type": fan_token_type},
                    "cost": {"amount": amount, "list_amount": amount, "currency": "USD", "requests": None},
                }
            )
    return {
        "data": rows,
        "has_more": has_more,
        "next_page": encode_cursor(f"analytics/{endpoint}", query, params.offset + params.limit) if has_more else None,
        "data_refreshed_at": format_rfc3339(now),
    }


# --------------------------------------------------------------------------------------------
# Legacy Admin API


def _legacy_buckets(
    query: Query, now: datetime, width: timedelta, limit: int, endpoint: str
) -> tuple[list[datetime], bool, str | None]:
    """The page of bucket starts, has_more and next_page for a legacy report."""
    starting_at = _datetime_param(query, "starting_at", required=True)
    assert starting_at is not None
    ending_at = _datetime_param(query, "ending_at", required=False)
    if ending_at is None:
        ending_at = now
        if ending_at <= starting_at:
            return [], False, None
    elif ending_at <= starting_at:
        raise invalid("ending_at: must be after starting_at.")
    offset = decode_cursor(endpoint, query)
    stop = min(ending_at, now)
    first = _floor(starting_at, width)
    total = 0
    if stop > first:
        whole, rest = divmod(stop - first, width)
        total = whole + (1 if rest else 0)
    page = [first + width * i for i in range(offset, min(offset + limit, total))]
    has_more = offset + limit < total
    return page, has_more, encode_cursor(endpoint, query, offset + limit) if has_more else None


def _legacy_filters(query: Query) -> dict[str, frozenset[str | None]]:
    filters: dict[str, frozenset[str | None]] = {}
    for name in ("models", "workspace_ids"):
        if name in query:
            filters[name] = frozenset(query[name])
    if "api_key_ids" in query:
        filters["api_key_ids"] = frozenset(v if v != "" else None for v in query["api_key_ids"])
    st = enum_list(query, "service_tiers", SERVICE_TIERS)
    if st is not None:
        filters["service_tiers"] = frozenset(st)
    for name in ("context_window", "context_windows"):
        cw = enum_list(query, name, CONTEXT_WINDOWS)
        if cw is not None:
            filters["context_windows"] = frozenset(cw)
    geos = enum_list(query, "inference_geos", INFERENCE_GEO_FILTERS)
    if geos is not None:
        filters["inference_geos"] = frozenset(geos)
    speeds = enum_list(query, "speeds", SPEEDS)
    if speeds is not None:
        filters["speeds"] = frozenset(speeds)
    return filters


def _bucket_records(org: SimulatedOrg, start: datetime, width: timedelta, now: datetime) -> Iterable[UsageRecord]:
    if width == MINUTE:
        if start.minute != 0:
            return ()
        return org.records(start, start + HOUR, now)
    return org.records(start, start + width, now)


def legacy_usage_report(org: SimulatedOrg, query: Query, now: datetime,
                        betas: Collection[str] = ()) -> dict[str, object]:
    """``GET /v1/organizations/usage_report/messages``: buckets of grouped token usage.

    ``limit`` counts time buckets (1d: default 7 max 31; 1h: 24/168; 1m: 60/1440). Every
    bucket from floor(starting_at) up to min(ending_at, now) is present, with empty
    ``results`` when there is no usage. Rows carry the token fields and the dimension keys
    (null unless grouped; ``workspace_id`` null for the default workspace; ``inference_geo``
    the record's geo or ``"not_available"``). Code execution and session runtime never appear.
    Grouping by ``speed`` or filtering ``speeds[]`` needs :data:`FAST_MODE_BETA` among
    ``betas`` (the request's ``anthropic-beta`` values), else a 400 naming the parameter.
    """
    width_name = _choice_param(query, "bucket_width", tuple(LEGACY_USAGE_LIMITS), "1d")
    assert width_name is not None
    default_limit, max_limit = LEGACY_USAGE_LIMITS[width_name]
    limit = _int_param(query, "limit", default_limit, 1, max_limit)
    group_by: list[str] = []
    for dim in query.get("group_by", []):
        if dim not in LEGACY_USAGE_DIMS:
            raise invalid(f"group_by[]: unknown dimension {dim!r}; allowed: {', '.join(LEGACY_USAGE_DIMS)}.")
        if dim not in group_by:
            group_by.append(dim)
    filters = _legacy_filters(query)
    if FAST_MODE_BETA not in betas:
        if "speed" in group_by:
            raise invalid(f"group_by[]: grouping by speed requires the {FAST_MODE_BETA} beta header.")
        if "speeds" in filters:
            raise invalid(f"speeds[]: filtering by speed requires the {FAST_MODE_BETA} beta header.")
    width = BUCKET_WIDTHS[width_name]
    buckets, has_more, next_page = _legacy_buckets(query, now, width, limit, "usage_report/messages")
    row_dims = list(LEGACY_USAGE_ROW_DIMS) + [d for d in ("account_id", "service_account_id") if d in group_by]
    data: list[dict[str, object]] = []
    for start in buckets:
        acc: dict[tuple[str | None, ...], list[int]] = {}
        for rec in _bucket_records(org, start, width, now):
            if rec.kind != "tokens" or (filters and not _matches(rec, filters)):
                continue
            values = tuple(_legacy_dimension(org, rec, d) for d in group_by)
            counts = acc.setdefault(values, [0] * 7)
            for i, v in enumerate(_record_counts(rec)):
                counts[i] += v
        results: list[dict[str, object]] = []
        for values in sorted(acc, key=lambda v: (-sum(acc[v][:5]), _group_sort_key(v))):
            c = acc[values]
            row: dict[str, object] = {
                "uncached_input_tokens": c[0],
                "cache_creation": {"ephemeral_5m_input_tokens": c[1], "ephemeral_1h_input_tokens": c[2]},
                "cache_read_input_tokens": c[3],
                "output_tokens": c[4],
                "server_tool_use": {"web_search_requests": c[5]},
            }
            for dim in row_dims:
                row[dim] = None
            for dim, value in zip(group_by, values):
                row[dim] = value
            results.append(row)
        data.append({"starting_at": format_rfc3339(start), "ending_at": format_rfc3339(start + width), "results": results})
    return {"data": data, "has_more": has_more, "next_page": next_page}


def _legacy_dimension(org: SimulatedOrg, rec: UsageRecord, dim: str) -> str | None:
    if dim == "workspace_id":
        return org.legacy_workspace_id(rec.workspace_id)
    if dim == "inference_geo":
        return rec.inference_geo or "not_available"
    return record_dimension(rec, dim)


CLAUDE_CODE_LIMITS: tuple[int, int] = (20, 1000)
_DAY_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


def claude_code_report(org: SimulatedOrg, query: Query, now: datetime) -> dict[str, object]:
    """``GET /v1/organizations/usage_report/claude_code``: one UTC day of Claude Code records.

    ``starting_at`` is required as ``YYYY-MM-DD`` (400 naming it otherwise); ``limit``
    default 20, max 1000; ``page`` a cursor for the same parameters. One record per actor with
    ``claude_code`` usage that day (:meth:`SimulatedOrg.claude_code_day`, complete hours only)::

        {"date": "2026-11-23T00:00:00Z",
         "actor": {"type": "user_actor", "email_address": str | null}
                | {"type": "api_actor", "api_key_name": str},
         "organization_id": "<uuid>", "customer_type": "api", "subscription_type": null,
         "terminal_type": "vscode" | ...,
         "core_metrics": {"num_sessions", "lines_of_code": {"added", "removed"},
                          "commits_by_claude_code", "pull_requests_by_claude_code"},
         "tool_actions": {"edit_tool" | "multi_edit_tool" | "write_tool" | "notebook_edit_tool":
                          {"accepted", "rejected"}},
         "model_breakdown": [{"model", "tokens": {"input", "output", "cache_read",
                              "cache_creation"}, "estimated_cost": {"currency": "USD",
                              "amount": <JSON number: cents rounded to 2 decimals>}}]}

    The deleted user's ``email_address`` is null. Response ``{"data", "has_more", "next_page"}``.
    """
    text = _scalar(query, "starting_at") or ""
    try:
        if not _DAY_PATTERN.fullmatch(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise invalid("starting_at: field required as a UTC date in YYYY-MM-DD format, such as 2026-11-23.") from None
    limit = _int_param(query, "limit", CLAUDE_CODE_LIMITS[0], 1, CLAUDE_CODE_LIMITS[1])
    offset = decode_cursor("usage_report/claude_code", query)
    records = org.claude_code_day(day, now)
    page = records[offset: offset + limit]
    has_more = offset + limit < len(records)
    return {
        "data": [claude_code_json(org, r) for r in page],
        "has_more": has_more,
        "next_page": encode_cursor("usage_report/claude_code", query, offset + limit) if has_more else None,
    }


def claude_code_json(org: SimulatedOrg, record: ClaudeCodeDay) -> dict[str, object]:
    """One Claude Code report record (see :func:`claude_code_report`)."""
    actor: dict[str, object]
    if record.actor.type == "user_actor":
        actor = {"type": "user_actor", "email_address": record.actor.email}
    else:
        actor = {"type": "api_actor", "api_key_name": org.api_key_name(record.actor.id)}
    return {
        "date": format_rfc3339(datetime(record.day.year, record.day.month, record.day.day, tzinfo=UTC)),
        "actor": actor,
        "organization_id": org.organization_id,
        "customer_type": "api",
        "subscription_type": None,
        "terminal_type": record.terminal_type,
        "core_metrics": {
            "num_sessions": record.num_sessions,
            "lines_of_code": {"added": record.lines_added, "removed": record.lines_removed},
            "commits_by_claude_code": record.commits,
            "pull_requests_by_claude_code": record.pull_requests,
        },
        "tool_actions": {tool: {"accepted": a, "rejected": r} for tool, (a, r) in record.tool_actions.items()},
        "model_breakdown": [
            {
                "model": model,
                "tokens": {"input": m.input, "output": m.output, "cache_read": m.cache_read,
                           "cache_creation": m.cache_creation},
                "estimated_cost": {"currency": "USD", "amount": float(round(m.cents, 2))},
            }
            for model, m in record.models.items()
        ],
    }


def legacy_cost_report(org: SimulatedOrg, query: Query, now: datetime) -> dict[str, object]:
    """``GET /v1/organizations/cost_report``: daily buckets of cost in cents.

    ``bucket_width`` only ``1d``; ``limit`` (buckets) default 7 max 31; ``group_by[]`` any of
    workspace_id, description. Every row has ``amount`` (cents, decimal string),
    ``currency``, ``workspace_id``, ``description``, ``model``, ``cost_type``, ``token_type``,
    ``service_tier``, ``context_window``: null unless grouped (description and its detail
    fields with ``description``; workspace_id with ``workspace_id``, null for the default
    workspace). Built from the same hour records as the Analytics API, so a UTC day's total
    equals the Analytics cost of its 24 hour buckets exactly.
    """
    width_name = _scalar(query, "bucket_width")
    if width_name not in (None, "", "1d"):
        raise invalid("bucket_width: the cost report supports only 1d.")
    limit = _int_param(query, "limit", LEGACY_COST_LIMITS[0], 1, LEGACY_COST_LIMITS[1])
    group_by: list[str] = []
    for dim in query.get("group_by", []):
        if dim not in LEGACY_COST_DIMS:
            raise invalid(f"group_by[]: unknown dimension {dim!r}; allowed: {', '.join(LEGACY_COST_DIMS)}.")
        if dim not in group_by:
            group_by.append(dim)
    by_ws = "workspace_id" in group_by
    by_desc = "description" in group_by
    buckets, has_more, next_page = _legacy_buckets(query, now, DAY, limit, "cost_report")
    data: list[dict[str, object]] = []
    for start in buckets:
        acc: dict[tuple[str | None, tuple[str | None, ...] | None], Decimal] = {}
        for rec in org.records(start, start + DAY, now):
            ws = org.legacy_workspace_id(rec.workspace_id) if by_ws else None
            for cost_type, token_type, cents in rec.costs:
                detail: tuple[str | None, ...] | None = None
                if by_desc:
                    tokens = cost_type == "tokens"
                    detail = (
                        legacy_description(cost_type, token_type, rec.model, rec.service_tier, rec.context_window),
                        rec.model if tokens else None,
                        cost_type,
                        token_type,
                        rec.service_tier if tokens else None,
                        rec.context_window if tokens else None,
                    )
                k = (ws, detail)
                acc[k] = acc.get(k, Decimal(0)) + cents
        results: list[dict[str, object]] = []
        for (ws, detail) in sorted(
            acc, key=lambda k: (-acc[k], _group_sort_key((k[0],) + (k[1] or ())))
        ):
            desc, model, line_cost_type, line_token_type, tier, cw = detail if detail else (None,) * 6
            results.append(
                {
                    "currency": "USD",
                    "amount": decimal_str(acc[(ws, detail)]),
                    "workspace_id": ws,
                    "description": desc,
                    "cost_type": line_cost_type,
                    "context_window": cw,
                    "model": model,
                    "service_tier": tier,
                    "token_type": line_token_type,
                }
            )
        data.append({"starting_at": format_rfc3339(start), "ending_at": format_rfc3339(start + DAY), "results": results})
    return {"data": data, "has_more": has_more, "next_page": next_page}


# --------------------------------------------------------------------------------------------
# Names: workspaces and API keys


def workspace_json(org: SimulatedOrg, ws: Workspace) -> dict[str, object]:
    """A workspace as the API returns it (parses as the SDK's ``Workspace``)."""
    return {
        "id": ws.id,
        "type": "workspace",
        "name": ws.name,
        "created_at": format_rfc3339(ws.created_at),
        "archived_at": format_rfc3339(ws.archived_at) if ws.archived_at else None,
        "compartment_id": "cmpt_01" + ws.id[len("wrkspc_01") :],
        "data_residency": {
            "allowed_inference_geos": "unrestricted",
            "default_inference_geo": "global",
            "workspace_geo": "us",
        },
        "display_color": ws.display_color,
        "external_key_id": None,
        "tags": {},
        "user_profile_id": None,
    }


def api_key_json(org: SimulatedOrg, key: ApiKey) -> dict[str, object]:
    """An API key as the API returns it (parses as the SDK's ``APIKey``)."""
    return {
        "id": key.id,
        "type": "api_key",
        "name": key.name,
        "status": key.status,
        "created_at": format_rfc3339(key.created_at),
        "created_by": {"id": key.created_by_user_id, "type": "user"},
        "expires_at": None,
        "partial_key_hint": key.partial_key_hint,
        "principal": None,
        "scope": {"type": "workspace", "workspace_id": key.workspace_id},
    }


def id_page(items: list[dict[str, object]], query: Query) -> dict[str, object]:
    """Page ``items`` (already ordered) with limit / after_id / before_id."""
    limit = _int_param(query, "limit", 20, 1, 1000)
    after_id = _scalar(query, "after_id")
    before_id = _scalar(query, "before_id")
    if after_id and before_id:
        raise invalid("after_id and before_id cannot both be set.")
    ids = [str(item["id"]) for item in items]
    if after_id:
        if after_id not in ids:
            raise invalid(f"after_id: no object with id {after_id!r} in this listing.")
        rest = items[ids.index(after_id) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif before_id:
        if before_id not in ids:
            raise invalid(f"before_id: no object with id {before_id!r} in this listing.")
        rest = items[: ids.index(before_id)]
        page, has_more = rest[-limit:], len(rest) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def list_workspaces(org: SimulatedOrg, query: Query) -> dict[str, object]:
    """``GET /v1/organizations/workspaces``, newest first.

    The default workspace only with ``include_default=true``; archived ones only with
    ``include_archived=true``; ``ids[]`` restricts to those ids.
    """
    include_default = _bool_param(query, "include_default", False)
    include_archived = _bool_param(query, "include_archived", False)
    wanted = set(query["ids"]) if "ids" in query else None
    items = [
        workspace_json(org, ws)
        for ws in sorted(org.workspaces, key=lambda w: (w.created_at, w.id), reverse=True)
        if (include_default or not ws.is_default)
        and (include_archived or ws.archived_at is None)
        and (wanted is None or ws.id in wanted)
    ]
    return id_page(items, query)


def get_workspace(org: SimulatedOrg, workspace_id: str) -> dict[str, object]:
    """``GET /v1/organizations/workspaces/{id}`` (404 for an unknown id)."""
    ws = org.workspace_by_id.get(workspace_id)
    if ws is None:
        raise ApiError(404, "not_found_error", "Workspace not found.")
    return workspace_json(org, ws)


def list_api_keys(org: SimulatedOrg, query: Query) -> dict[str, object]:
    """``GET /v1/organizations/api_keys``, newest first; filters ``status``, ``workspace_id``,
    ``created_by_user_id``."""
    status = _choice_param(query, "status", ("active", "archived", "expired", "inactive"), None)
    workspace_id = _scalar(query, "workspace_id")
    created_by = _scalar(query, "created_by_user_id")
    items = [
        api_key_json(org, key)
        for key in sorted(org.api_keys, key=lambda k: (k.created_at, k.id), reverse=True)
        if (status is None or key.status == status)
        and (not workspace_id or key.workspace_id == workspace_id)
        and (not created_by or key.created_by_user_id == created_by)
    ]
    return id_page(items, query)


def get_api_key(org: SimulatedOrg, api_key_id: str) -> dict[str, object]:
    """``GET /v1/organizations/api_keys/{id}`` (404 for an unknown id)."""
    key = org.api_key_by_id.get(api_key_id)
    if key is None:
        raise ApiError(404, "not_found_error", "API key not found.")
    return api_key_json(org, key)
