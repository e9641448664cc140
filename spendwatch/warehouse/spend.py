"""THE spend builder: spend and tokens by any dimensions, grain, filters and range.

Every surface that says what was spent (the CLI's ``spend``, the dashboard, every alert rule,
the weekly CSV and its summary, ``reconcile``) calls :func:`spend`; it is the one place that
reads the stored ``facts`` (``spendwatch.facts``: billed cost where the cost API has reported,
allocated for legacy cost split across API keys, estimated from usage elsewhere), of one cut
and the range asked for: a query not by local period, date or cost basis reads the whole UTC
days inside its range from their daily sums (``facts_daily``) and only its edges' hours. All
aggregation happens in DuckDB with bound parameters; money comes back as Decimal dollars.

The legacy day rule
-------------------
Facts come in UTC buckets: hours, and, for legacy-source cost lines that could not be split
across hours, whole UTC days (``bucket_width = '1d'``). A whole UTC day cannot be cut at a
local midnight, so it is placed, whole, at **local midnight of the date of the same name**:
the line of UTC day 2026-11-21 counts at 2026-11-21 00:00 in the configured time zone. So it
belongs to local date 2026-11-21, to any UTC window ``[start, end)`` that contains that local
midnight, to the hour bucket that starts there and to the day and week holding that date.
Hourly facts count at their bucket's start. One placed instant, one rule for local days and for
UTC windows alike: the CLI's days, an alert's "today" and the dashboard's hours always agree.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping, Sequence

from spendwatch.config import Config, feature_basis
from spendwatch.facts import DAILY_KEYS, DAILY_SUMS, REQUESTS_UNKNOWN_SQL, stale_organizations
from spendwatch.features import api_key_label, workspace_label
from spendwatch.pricing import LONG_CONTEXT_MODELS, TokenCounts, canonical_model, price_table
from spendwatch.timeutil import ceil_day, floor_day, local_range
from spendwatch.warehouse.batch import Batch, NameBook

#: The dimensions of ``spendwatch spend --by`` (the CLI's stable list).
SPEND_DIMENSIONS = ("date", "organization", "workspace", "api_key", "feature", "model",
                    "service_tier", "cache_status", "cost_basis", "person", "product",
                    "rbac_group", "user_profile", "inference_geo", "speed")
#: Every dimension the builder groups and filters by: the CLI's, and the cost type (tokens,
#: web_search, code_execution, session_runtime, ...).
DIMENSIONS = (*SPEND_DIMENSIONS, "cost_type")
#: What :func:`spend`'s ``by`` takes: the dimensions and ``period`` (a bucket of ``grain``).
GROUP_KEYS = ("period", *DIMENSIONS)
FILTER_KEYS = tuple(d for d in DIMENSIONS if d != "date")
GRAINS = ("hour", "day", "week")
METRICS = ("cost_usd", "uncached_input_tokens", "cache_write_5m_tokens",
           "cache_write_1h_tokens", "cache_read_tokens", "output_tokens", "web_search_requests")
TOKEN_METRICS = METRICS[1:]
EXTRA_METRICS = ("list_cost_usd", "unpriced_tokens", "requests")
CACHE_STATUSES = ("uncached_input", "cache_write_5m", "cache_write_1h", "cache_read", "output",
                  "other")
#: Cost of each cache status, with ``cost_by_status``.
STATUS_COST_METRICS = tuple(f"{status}_cost_usd" for status in CACHE_STATUSES)
# cost/token type -> cache status; web search, code execution and session runtime are "other".
CACHE_STATUS_SQL = """CASE token_type
    WHEN 'uncached_input_tokens' THEN 'uncached_input'
    WHEN 'cache_creation.ephemeral_5m_input_tokens' THEN 'cache_write_5m'
    WHEN 'cache_creation.ephemeral_1h_input_tokens' THEN 'cache_write_1h'
    WHEN 'cache_read_input_tokens' THEN 'cache_read'
    WHEN 'output_tokens' THEN 'output'
    ELSE 'other' END"""
#: The instant a fact counts at (the legacy day rule, module docstring).
PLACED_AT_SQL = ("CASE WHEN bucket_width = '1d' "
                 "THEN timezone($tz, (timezone('UTC', bucket_start))::DATE::TIMESTAMP) "
                 "ELSE bucket_start END")

#: Cost bases in the order a group's tokens take them (:func:`spend` with ``cost_basis``).
BASIS_ORDER_SQL = ("CASE cost_basis WHEN 'billed' THEN 0 WHEN 'allocated' THEN 1 "
                   "WHEN 'estimated' THEN 2 ELSE 3 END")

#: The metrics that count (tokens, requests), not dollars.
_COUNTS = frozenset((*TOKEN_METRICS, "unpriced_tokens", "requests"))
#: Requests of a group: -1 (made None) when a usage row of it has no count (the legacy API
#: reports none), so a cost per request is never divided by a part of the requests.
_REQUESTS_SQL = ("CASE WHEN sum(facts.requests_unknown) > 0 THEN -1 "
                 "ELSE sum(facts.requests) END")
_REGROUPED_REQUESTS = "CASE WHEN min(requests) < 0 THEN NULL ELSE sum(requests) END"

Filters = Mapping[str, Sequence[str | None]]
Row = dict[str, Any]

_PERIOD_SQL = {
    "hour": "date_trunc('hour', facts.local_at)",
    "day": "facts.date::TIMESTAMP",
    "week": "date_trunc('week', facts.date)::TIMESTAMP",
}
# group key -> (column name in the result, SQL expression)
_GROUP_SQL = {
    "date": ("date", "facts.date"),
    "organization": ("organization", "facts.organization"),
    "workspace": ("workspace_id", "facts.workspace_id"),
    "api_key": ("api_key_id", "facts.api_key_id"),
    "feature": ("feature", "f.feature"),
    "model": ("model", "facts.model"),
    "service_tier": ("service_tier", "facts.service_tier"),
    "cache_status": ("cache_status", "facts.cache_status"),
    "cost_basis": ("cost_basis", "facts.cost_basis"),
    "cost_type": ("cost_type", "facts.cost_type"),
    "person": ("person_id", "facts.actor_key"),
    "product": ("product", "facts.product"),
    "rbac_group": ("rbac_group", "facts.rbac_group_id"),
    "user_profile": ("user_profile", "facts.user_profile_id"),
    "inference_geo": ("inference_geo", "facts.inference_geo"),
    "speed": ("speed", "facts.speed"),
}
#: Dimensions every cut has.
_COMMON = frozenset({"period", "date", "organization", "cost_basis", "cost_type", "model",
                     "service_tier"})
#: What each source of facts can group by: the key cut (spend_facts), then the other cuts
#: (cut_facts, spendwatch.cuts) in the order they are tried. Cost by cache status needs the
#: cost by token type: the people, groups and profiles cuts read cost by cost type only.
SOURCES: tuple[tuple[str | None, frozenset[str]], ...] = (
    (None, _COMMON | {"cache_status", "workspace", "api_key", "feature"}),
    ("price", _COMMON | {"cache_status", "inference_geo", "speed"}),
    ("people", _COMMON | {"person", "product", "speed", "feature:people"}),
    ("groups", _COMMON | {"rbac_group", "product", "speed"}),
    ("members", _COMMON | {"person", "rbac_group", "speed"}),
    ("profiles", _COMMON | {"user_profile", "product", "speed"}),
    ("products", _COMMON | {"cache_status", "product", "workspace", "api_key", "feature",
                            "feature:products"}),
)
#: Dimensions whose groups overlap (a user in two RBAC groups counts in full in each).
OVERLAPPING = ("rbac_group",)


def has_cut(batch: Batch, cut: str, start: datetime, end: datetime,
            organizations: Sequence[str]) -> bool:
    """Whether every organization's usage and cost of ``cut`` are stored over [start, end)."""
    for org in organizations:
        covered = batch.conn.execute(
            "SELECT count(*) FROM sync_state WHERE organization = ? AND stream IN (?, ?) "
            "AND covered_from <= ? AND covered_until >= ?",
            [org, f"usage:{cut}", f"cost:{cut}", start, end]).fetchone()
        if not covered or covered[0] < 2:
            return False
    return bool(organizations)


class CannotCombine(ValueError):
    """Dimensions no one cut of the API's data has together (the message says which)."""


def sources(config: Config) -> tuple[tuple[str | None, frozenset[str]], ...]:
    """:data:`SOURCES` as this config's collection fills them: with features judged on the
    people cut, its cost is read by token type, so it has the cache status too."""
    if feature_basis(config.features) != "people":
        return SOURCES
    return tuple((cut, has | {"cache_status"} if cut == "people" else has)
                 for cut, has in SOURCES)


def facts_cut(dimensions: Sequence[str], collected: Sequence[str] | None = None,
              options: tuple[tuple[str | None, frozenset[str]], ...] = SOURCES) -> str | None:
    """The cut whose facts can answer a query by and filtered on ``dimensions`` (None: the
    key cut): the first in :data:`SOURCES` order that has them all and, given ``collected``
    (the cuts stored), that is stored, else the first that has them. Raises ValueError
    naming two dimensions no one cut has together."""
    wanted = set(dimensions)
    fitting = [cut for cut, has in options if wanted <= has]
    if fitting:
        if collected is not None:
            stored = [c for c in fitting if c is None or c in collected]
            if stored:
                return stored[0]
        return fitting[0]
    apart = sorted(wanted - _COMMON)
    first, second = next((a, b) for a in apart for b in apart
                         if a < b and not any({a, b} <= has for _, has in options))
    if first.startswith("feature:") or second.startswith("feature:"):
        feature, other = (first, second) if first.startswith("feature:") else (second, first)
        raise CannotCombine(f"feature and {other} come from different cuts of the API's data "
                         f"(features are judged on the {feature.split(':')[1]} cut, "
                         "[[features]] in the config) and cannot be combined; group by one or "
                         "the other")
    raise CannotCombine(f"{first} and {second} come from different cuts of the API's data and "
                     "cannot be combined; group by one or the other")


def check_dimensions(config: Config, dimensions: Sequence[str]) -> None:
    """Raise ValueError (one line) when no one cut can group by ``dimensions`` together, with
    features judged where this config judges them."""
    basis = feature_basis(config.features)
    facts_cut([f"feature:{basis}" if d == "feature" and basis else d for d in dimensions],
              None, sources(config))


def feature_cut(batch: Batch, organizations: Sequence[str] = ()) -> str | None:
    """The cut features are judged on for these organizations: the config's
    :func:`~spendwatch.config.feature_basis` where that cut is stored for all of them, else
    the key cut (None), where rules naming products, people or RBAC groups match nothing."""
    basis = feature_basis(batch.config.features)
    if basis is not None and basis in collected_cuts(batch, organizations):
        return basis
    return None


def collected_cuts(batch: Batch, organizations: Sequence[str] = ()) -> list[str]:
    """The cuts whose usage is stored for every organization asked (all configured ones when
    none are named)."""
    orgs = list(organizations) or [o.name for o in batch.config.organizations]
    def stored() -> tuple[str, ...]:
        rows = batch.conn.execute(
            "SELECT split_part(stream, ':', 2), count(DISTINCT organization) FROM sync_state "
            "WHERE stream LIKE 'usage:%' AND list_contains($orgs::VARCHAR[], organization) "
            "GROUP BY 1", {"orgs": orgs}).fetchall()
        return tuple(cut for cut, count in rows if count == len(orgs))
    return list(batch.shared(("collected_cuts", tuple(orgs)), stored))


# A fact placed at most this far from its bucket's start: scans read the range and this much
# on each side (a local midnight is within 14 hours of the UTC midnight of its date).
_SCAN_MARGIN = timedelta(days=1)


def _window(batch: Batch, since: date | None, until: date | None, start: datetime | None,
            end: datetime | None) -> tuple[datetime, datetime]:
    if (since is None) != (until is None) or (start is None) != (end is None) or \
            (since is None) == (start is None):
        raise ValueError("give local days (since and until) or a UTC window (start and end)")
    if since is not None and until is not None:
        if until < since:  # no day: an empty window (``spend --since`` after ``--until``)
            first, _ = local_range(since, since, batch.config.tz)
            return first, first
        return local_range(since, until, batch.config.tz)
    assert start is not None and end is not None
    return start, max(start, end)


def spend(batch: Batch, since: date | None = None, until: date | None = None,
          by: Sequence[str] = (), filters: Filters | None = None, grain: str = "day", *,
          start: datetime | None = None, end: datetime | None = None,
          organizations: Sequence[str] = (), cost_basis: Sequence[str] = (),
          cost_by_status: bool = False, metrics: Sequence[str] | None = None) -> list[Row]:
    """Spend and tokens over a period, grouped ``by`` and filtered: THE spend query.

    The period is local days ``since``..``until`` (both included, in ``batch.config.tz``) or a
    UTC window ``start``..``end`` (``end`` excluded); exactly one of the two. A fact counts
    where the module's legacy day rule places it (a whole-UTC-day legacy line at local
    midnight of the date of the same name), for the days and the window alike.

    ``by`` holds any of :data:`GROUP_KEYS`, or nothing (one total row); ``period`` is the start
    of the local ``grain`` bucket (hour, day or ISO week, Monday) as a naive local datetime (in
    the autumn the repeated local hour holds both UTC hours). ``filters`` maps a dimension of
    :data:`FILTER_KEYS` to the values to keep (IDs for ``workspace`` and ``api_key``, names for
    ``feature``, None keeps "none"); an empty list keeps everything. ``organizations`` and
    ``cost_basis`` (billed, allocated, estimated) keep only those, when given.

    Each row holds the keys asked for (``workspace`` and ``api_key`` as display names with
    ``workspace_id`` / ``api_key_id`` beside them), every metric of :data:`METRICS` and
    :data:`EXTRA_METRICS` (money as Decimal dollars, ``list_cost_usd`` None where no list price
    is known; ``unpriced_tokens`` counts estimated usage with no price: its cost is left out,
    never taken as $0; ``requests`` the usage's requests, None where a usage row of the group
    has no count: the legacy API reports none) and, with ``cost_by_status``,
    :data:`STATUS_COST_METRICS`. Groups with neither cost, list cost nor tokens are left out.
    ``metrics`` (token metrics of :data:`TOKEN_METRICS`) sums only those instead, and leaves
    out the groups where all of them are zero: a series of token counts (the hit ratio's)
    without converting every row's money. Rows are ordered by period, date, cost (highest
    first), then the dimensions' labels (and IDs, where two share a name). A period that ends
    before it starts holds nothing (no rows). Raises ValueError for an unknown key, filter or
    grain, or for giving both or neither of the days and the window.
    """
    kept = {k: list(v) for k, v in (filters or {}).items() if v}
    unknown = [k for k in by if k not in GROUP_KEYS] + [k for k in kept if k not in FILTER_KEYS]
    if unknown:
        raise ValueError(f"unknown dimension {unknown[0]!r}; use any of "
                         + ", ".join(GROUP_KEYS))
    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r}; use any of {', '.join(GRAINS)}")
    window_start, window_end = _window(batch, since, until, start, end)
    needs_features = "feature" in by or "feature" in kept
    basis = feature_cut(batch, organizations) if needs_features else None
    wanted = [f"feature:{basis}" if d == "feature" and basis else d for d in (*by, *kept)]
    cut = facts_cut(wanted, collected_cuts(batch, organizations)
                    if set(wanted) - SOURCES[0][1] else None, sources(batch.config))
    if "person" in kept:
        kept["person"] = _person_keys(batch, kept["person"])
    exprs = [(_GROUP_SQL[k] if k != "period" else ("period", _PERIOD_SQL[grain])) for k in by]
    if "person" in by:
        exprs.append(("actor_type", "facts.actor_type"))
    params: dict[str, Any] = {"tz": str(batch.config.tz.key),
                              "start": window_start, "end": window_end}
    scan = ["cut = $cut"]
    params["cut"] = cut or "key"
    if organizations:
        scan.append("organization IN (SELECT unnest($orgs::VARCHAR[]))")
        params["orgs"] = list(organizations)
    if cost_basis:
        scan.append("cost_basis IN (SELECT unnest($bases::VARCHAR[]))")
        params["bases"] = list(cost_basis)
    where = ["facts.placed_at >= $start", "facts.placed_at < $end"]
    for n, (dim, values) in enumerate(sorted(kept.items())):
        expr = _GROUP_SQL[dim][1]
        params[f"keep{n}"] = [v for v in values if v is not None]
        params[f"keep{n}_null"] = None in values
        where.append(f"(list_contains($keep{n}::VARCHAR[], {expr}) "
                     f"OR ({expr} IS NULL AND $keep{n}_null))")
    having = ""
    if metrics is not None:
        odd = [m for m in metrics if m not in TOKEN_METRICS]
        if odd or not metrics or cost_by_status:
            raise ValueError("metrics takes token metrics only, at least one, without "
                             f"cost_by_status: any of {', '.join(TOKEN_METRICS)}")
        summed = tuple(metrics)
        having = "HAVING " + " OR ".join(f"sum(facts.{m}) <> 0" for m in summed)
    else:
        summed = (*METRICS, *EXTRA_METRICS)
    metric_names = (*summed, *(STATUS_COST_METRICS if cost_by_status else ()))
    # The fetch, not the query, was most of a long series' time (13,000 hourly rows: 0.33 s
    # of 0.45 s): DuckDB converts a HUGEINT (its sum of BIGINTs) and a DECIMAL slowly. So
    # counts come as BIGINT (no organization reaches 9.2e18 tokens; the cast would fail
    # loudly, not wrap) and dollars as their exact text, made Decimal by finish_money (twice
    # as fast as DuckDB's own conversion).
    casts = {m: "BIGINT" if m in _COUNTS else "VARCHAR" for m in metric_names}
    sums = [f"{_REQUESTS_SQL if m == 'requests' else f'sum(facts.{m})'} AS {m}"
            for m in summed]
    if cost_by_status:
        sums += [f"sum(facts.cost_usd) FILTER (WHERE facts.cache_status = '{s}') "
                 f"AS {s}_cost_usd" for s in CACHE_STATUSES]
    select = ", ".join([*(f"{e} AS {c}" for c, e in exprs), *sums])
    # Counts come whole (a sum of nothing is 0, requests aside: None means "not reported"),
    # so Python converts only the dollars.
    outer = ", ".join([*(c for c, _ in exprs), *(
        "nullif(requests, -1)::BIGINT AS requests" if m == "requests" else
        f"coalesce({m}, 0)::BIGINT AS {m}" if casts[m] == "BIGINT" else f"{m}::VARCHAR AS {m}"
        for m in metric_names)])
    regroup = ""
    if "cost_basis" in by and metrics is None:
        # Token facts carry no basis (cost facts do): a group's tokens go on the row of its
        # main basis (billed, else allocated, else estimated), so a row's tokens and dollars
        # are the same usage's; a group with tokens and no cost at all keeps them on a row of
        # no basis. The weekly CSV's rows are these.
        others = [c for c, _ in exprs if c != "cost_basis"]
        outer = ", ".join([*(c if c != "cost_basis" else "placed_basis AS cost_basis"
                             for c, _ in exprs),
                           *(f"{_REGROUPED_REQUESTS}::BIGINT AS {m}" if m == "requests" else
                             f"coalesce(sum({m}), 0)::BIGINT AS {m}" if casts[m] == "BIGINT"
                             else f"sum({m})::VARCHAR AS {m}" for m in metric_names)])
        partition = f"PARTITION BY {', '.join(others)} " if others else ""
        regroup = (f"FROM (SELECT *, coalesce(cost_basis, first_value(cost_basis) OVER "
                   f"({partition}ORDER BY {BASIS_ORDER_SQL})) AS placed_basis FROM grouped) "
                   f"GROUP BY {', '.join([*others, 'placed_basis'])}")
    feature_cte, join = "", ""
    join_keys: tuple[str, ...] = ()
    if needs_features:
        fmap = batch.feature_map_for(basis)
        feature_cte = f"feature_map AS ({fmap.sql}),"
        params.update(fmap.params)
        join = f"LEFT JOIN feature_map f ON {fmap.join('facts')}"
        join_keys = fmap.keys
    # The daily sums have no cost basis: a query by or of it, or by local period or date,
    # reads every fact.
    daily = not cost_basis and not {"period", "date", "cost_basis"} & {*by, *kept} \
        and not _stale(batch, organizations)
    summed_columns = [m for m in metric_names if m in _SCANNED]
    if cost_by_status:
        summed_columns.append("cost_usd")
    if "cost_basis" in by:
        summed_columns.append("cost_basis")
    scanned = _scanned(" AND ".join(scan), window_start, window_end, params, daily,
                       _columns(by, list(kept), summed_columns, join_keys))
    period, day = "period" in by, "date" in by
    costed = metrics is None
    final = f"SELECT {outer} {regroup or 'FROM grouped'}"
    if costed:
        # Ordered by period, date and cost (highest first) in DuckDB; Python orders only the
        # runs of equal cost, by the dimensions' labels (sorting 3,000 rows by a key of labels
        # cost more than the query's aggregate).
        cost = "sum(cost_usd)" if regroup else "grouped.cost_usd"
        order = [*(["period"] if period else []), *(["date"] if day else []),
                 "sort_cost DESC"]
        final = (f"SELECT * EXCLUDE (sort_cost) FROM (SELECT {outer}, coalesce({cost}, 0) "
                 f"AS sort_cost {regroup or 'FROM grouped'}) ORDER BY {', '.join(order)}")
    sql = f"""
        WITH {feature_cte}
        scanned AS (SELECT *, {PLACED_AT_SQL} AS placed_at, {CACHE_STATUS_SQL} AS cache_status
                    FROM ({scanned})),
        placed AS (SELECT *, timezone($tz, placed_at) AS local_at,
                          timezone($tz, placed_at)::DATE AS date FROM scanned),
        grouped AS (
            SELECT {select}
            FROM placed facts {join}
            WHERE {" AND ".join(where)}
            {"GROUP BY " + ", ".join(e for _, e in exprs) if exprs else ""} {having})
        {final}"""
    dims = [k for k in by if k != "period"]
    label = _Labels(dims, batch.names) if (
        "workspace" in dims or "api_key" in dims or "person" in dims) else None
    columns = [c for c, _ in exprs] + list(metric_names)
    rows = []
    statuses = [m for m in STATUS_COST_METRICS if m in metric_names]
    for record in batch.conn.execute(sql, params).fetchall():
        row = dict(zip(columns, record))
        if label is not None:
            label(row)
        if metrics is None:
            finish_money(row, statuses)
            if is_empty_row(row):
                continue
        rows.append(row)
    # period and date are the same type on every row (or absent from all): compared as they
    # are, in the order their text would give, without formatting 10,000 datetimes.
    # Labels first, then the IDs under them (two keys may have one name).
    ids = [c for d, c in (("workspace", "workspace_id"), ("api_key", "api_key_id"),
                          ("person", "person_id")) if d in dims]

    def labels(r: Row) -> tuple[str, ...]:
        return tuple(map(str, map(r.get, (*dims, *ids))))
    if not costed:
        rows.sort(key=lambda r: (r["period"] if period else 0, r["date"] if day else 0,
                                 labels(r)))
        return rows
    run = 0  # rows[run:n] have the same period, date and cost
    for n in range(1, len(rows) + 1):
        if n == len(rows) or rows[n]["cost_usd"] != rows[run]["cost_usd"] or (
                period and rows[n]["period"] != rows[run]["period"]) or (
                day and rows[n]["date"] != rows[run]["date"]):
            if n - run > 1:
                rows[run:n] = sorted(rows[run:n], key=labels)
            run = n
    return rows


def _stale(batch: Batch, organizations: Sequence[str]) -> bool:
    """Whether any of ``organizations`` (none: any) has daily sums an older spendwatch's
    writes may have left behind its facts (spendwatch.facts.stale_organizations), once per
    batch (or warehouse state: a write that could leave them behind moves the sync state)."""
    stale = batch.shared("stale_daily", lambda: stale_organizations(batch.conn))
    return bool(stale and (not organizations or stale & set(organizations)))


#: The columns of a fact a spend query may read, from ``facts`` and ``facts_daily`` alike.
_SCANNED = tuple(c for c in DAILY_KEYS if c != "cut") + DAILY_SUMS
#: What every spend query reads: where a fact is placed (its bucket) and its cache status.
_ALWAYS = frozenset({"bucket_start", "token_type"})


def _columns(by: Sequence[str], kept: Sequence[str], summed: Sequence[str],
             join_keys: Sequence[str]) -> tuple[str, ...]:
    """The stored columns a query by and filtered on these dimensions, summing ``summed`` and
    joining the feature map on ``join_keys``, reads (a query binds and plans faster, and a
    fresh connection loads less, with fewer)."""
    wanted = set(_ALWAYS) | set(summed) | set(join_keys)
    for dim in (*by, *kept):
        column = _GROUP_SQL[dim][1] if dim in _GROUP_SQL else ""
        if column.startswith("facts."):
            wanted.add(column.removeprefix("facts."))
    if "person" in by:
        wanted.add("actor_type")
    return tuple(c for c in (*_SCANNED, "cost_basis") if c in wanted)


def _scanned(scan: str, start: datetime, end: datetime, params: dict[str, Any],
             daily: bool, columns: Sequence[str]) -> str:
    """The facts a spend query over [start, end) reads, ``scan`` (the cut, organizations) kept,
    with ``columns`` (of :func:`_columns`), their bucket's width and, where requests are read,
    ``requests_unknown``: with ``daily`` (a query not by local period, date or cost basis),
    the hourly facts of the whole UTC days inside the range summed per day (``facts_daily``,
    no cost basis), the hours at its edges and every legacy whole-day line (placed at a local
    midnight, up to a day away) from ``facts``; otherwise every fact of the range and a day
    around it."""
    unknown = "requests" in columns
    from_facts = ", ".join((*columns, "bucket_width", *(
        [f"{REQUESTS_UNKNOWN_SQL} AS requests_unknown"] if unknown else [])))
    params["scan_from"], params["scan_to"] = start - _SCAN_MARGIN, end + _SCAN_MARGIN
    first = ceil_day(start)  # the whole UTC days inside: [first, last)
    last = floor_day(end) if end > start else start
    if not daily or last <= first:
        return (f"SELECT {from_facts} FROM facts WHERE {scan} AND bucket_start >= $scan_from "
                "AND bucket_start < $scan_to")
    from_daily = ", ".join((*("NULL::VARCHAR AS cost_basis" if c == "cost_basis" else c
                              for c in columns), "'1h' AS bucket_width",
                            *(["requests_unknown"] if unknown else [])))
    params["days_from"], params["days_to"] = first, last
    return "\nUNION ALL\n".join((
        f"SELECT {from_facts} FROM facts WHERE {scan} AND bucket_width = '1d' "
        "AND bucket_start >= $scan_from AND bucket_start < $scan_to",
        f"SELECT {from_facts} FROM facts WHERE {scan} AND bucket_width = '1h' "
        "AND bucket_start >= $start AND bucket_start < $days_from",
        f"SELECT {from_daily} FROM facts_daily WHERE {scan} AND bucket_start >= $days_from "
        "AND bucket_start < $days_to",
        f"SELECT {from_facts} FROM facts WHERE {scan} AND bucket_width = '1h' "
        "AND bucket_start >= $days_to AND bucket_start < $end"))


def total(batch: Batch, since: date | None = None, until: date | None = None,
          filters: Filters | None = None, *, start: datetime | None = None,
          end: datetime | None = None, organizations: Sequence[str] = ()) -> Decimal:
    """The cost of :func:`spend` over the period, filters and organizations: one Decimal."""
    return sum((r["cost_usd"] for r in spend(batch, since, until, (), filters, start=start,
                                             end=end, organizations=organizations)),
               Decimal(0))


def is_empty_row(row: Row) -> bool:
    """A group with neither cost, list cost nor tokens (a cost basis row of token counts only)."""
    return not row["cost_usd"] and not row.get("list_cost_usd") and \
        not any(row[m] for m in TOKEN_METRICS) and not row["unpriced_tokens"]


class _Labels:
    """Display names for the workspace, API key and person of rows grouped ``by`` (in place),
    each worked out once per query (a week by key has thousands of rows, hundreds of keys)."""

    def __init__(self, by: Sequence[str], names: NameBook):
        self.names = names
        self.workspace, self.api_key, self.person = (d in by for d in (
            "workspace", "api_key", "person"))
        self.seen: dict[tuple[Any, ...], Any] = {}

    def __call__(self, row: Row) -> None:
        org, seen, names = row.get("organization"), self.seen, self.names
        if self.workspace:
            ws = row["workspace_id"]
            label = seen.get(("workspace", org, ws))
            if label is None:
                label = seen[("workspace", org, ws)] = workspace_label(
                    ws, names.workspace(org, ws) if org else names.any_workspace(ws))
            row["workspace"] = label
        if self.api_key:
            key = row["api_key_id"]
            label = seen.get(("api_key", org, key))
            if label is None:
                label = seen[("api_key", org, key)] = api_key_label(
                    key, names.api_key(org, key) if org else names.any_api_key(key))
            row["api_key"] = label
        if self.person:
            actor, kind = row["person_id"], row.get("actor_type")
            both = seen.get(("person", org, actor, kind))
            if both is None:
                both = seen[("person", org, actor, kind)] = (
                    names.person(org, actor, kind), names.person_id(org, actor, kind))
            row["person"], row["person_id"] = both


def finish_money(row: Row, statuses: Sequence[str] = ()) -> Row:
    """A row's dollars (exact text from the query) as Decimal, Decimal(0) for no cost, the
    list cost None where none is known; ``statuses`` (cost by cache status) likewise 0."""
    cost = row["cost_usd"]
    row["cost_usd"] = Decimal(cost) if cost is not None else _ZERO
    if row["list_cost_usd"] is not None:
        row["list_cost_usd"] = Decimal(row["list_cost_usd"])
    for metric in statuses:
        row[metric] = Decimal(row[metric]) if row[metric] is not None else _ZERO
    return row


_ZERO = Decimal(0)


def _person_keys(batch: Batch, values: Sequence[str | None]) -> list[str | None]:
    """Person filter values (actor keys, labels or pseudonyms) as actor keys."""
    names = batch.names
    out: list[str | None] = []
    for value in values:
        matches = [key for (org, key), (kind, *_rest) in names.people.items()
                   if value in (key, names.person(org, key, kind), names.person_id(org, key, kind))]
        out.extend(matches or [value])
    return out


def unpriced_usage(batch: Batch, since: date, until: date) -> list[dict[str, Any]]:
    """Usage rows with no price over local days ``since``..``until``, per model and reason.

    Each result: ``model``, ``reason``, ``rows`` (usage rows), ``tokens``. Their cost is left
    out of every estimate, never counted as $0.
    """
    utc_start, utc_end = local_range(since, until, batch.config.tz)
    return [{"model": model, "reason": reason, "rows": int(rows), "tokens": int(tokens)}
            for model, reason, rows, tokens in batch.conn.execute("""
        SELECT u.model, e.unpriced_reason, count(*),
               sum(u.uncached_input_tokens + u.cache_write_5m_tokens + u.cache_write_1h_tokens
                   + u.cache_read_tokens + u.output_tokens)
        FROM usage_hourly u JOIN usage_estimates e USING (row_key)
        WHERE e.unpriced_reason IS NOT NULL AND u.bucket_start >= $start
          AND u.bucket_start < $end AND e.bucket_start >= $start AND e.bucket_start < $end
        GROUP BY ALL ORDER BY 4 DESC""", {"start": utc_start, "end": utc_end}).fetchall()]


def long_context_gap(batch: Batch, since: date, until: date,
                     organizations: Sequence[str] = ()) -> list[dict[str, Any]]:
    """What the estimates of local days ``since``..``until`` cannot know: Haiku 5.5 prices
    prompts over 100k tokens higher, but the APIs label context windows only 0-200k and
    200k-1M, so an estimated 0-200k row is priced at the 100k-and-under rate, its lower bound.
    Per model: ``tokens`` of such estimated (not yet billed) rows and ``up_to_usd``, how much
    more they would cost were every prompt over 100k. Billed cost replaces the estimate.
    """
    utc_start, utc_end = local_range(since, until, batch.config.tz)
    table = price_table(batch.config.prices)
    out: dict[str, dict[str, Any]] = {}
    for model, day, tier, *counts in batch.conn.execute("""
            WITH billed_buckets AS (SELECT DISTINCT organization, bucket_start, bucket_end
                                    FROM cost_buckets)
            SELECT u.model, (timezone('UTC', u.bucket_start))::DATE, u.service_tier,
                   sum(u.uncached_input_tokens), sum(u.cache_write_5m_tokens),
                   sum(u.cache_write_1h_tokens), sum(u.cache_read_tokens), sum(u.output_tokens)
            FROM usage_hourly u
            WHERE u.bucket_start >= ? AND u.bucket_start < ?
              AND u.context_window = '0-200k' AND u.model IS NOT NULL
              AND (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], u.organization))
              AND NOT EXISTS (SELECT 1 FROM billed_buckets b WHERE
                  b.organization = u.organization AND b.bucket_start <= u.bucket_start
                  AND u.bucket_start < b.bucket_end)
            GROUP BY ALL""", [utc_start, utc_end, list(organizations),
                              list(organizations)]).fetchall():
        if canonical_model(model) not in LONG_CONTEXT_MODELS:
            continue
        tokens = TokenCounts(*(int(c) for c in counts))
        low = table.estimate(model, day, tokens, service_tier=tier, long_context=False).total
        high = table.estimate(model, day, tokens, service_tier=tier, long_context=True).total
        if low is None or high is None:
            continue
        item = out.setdefault(model, {"model": model, "tokens": 0, "up_to_usd": Decimal(0)})
        item["tokens"] += sum(int(c) for c in counts)
        item["up_to_usd"] += high - low
    return [v for v in out.values() if v["tokens"]]
