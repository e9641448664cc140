"""Sync windows: what to fetch, and writing each window whole, with its cursor.

For every organization and stream (usage, cost) the database keeps one contiguous covered
range ``[covered_from, covered_until)`` in ``sync_state``. A run fetches, one UTC day at a time:

- downwards from ``covered_from`` to an earlier ``--since`` (newest day first), so an
  interrupted backfill resumes where it stopped and the covered range stays contiguous;
- the re-read window: every day from ``min(now - lookback, earliest provisional bucket)`` up to
  ``covered_until``, because recent buckets change after they are first reported;
- upwards from ``covered_until`` to now.

Each window is written in one transaction together with its cursor: the window's old rows are
deleted and the fresh ones inserted on their natural key (the primary key). That is an upsert
that also drops rows the API no longer reports, so re-running any window, or overlapping
windows, leaves exactly the same rows. A failure leaves whole windows only. Fetched windows
are written in batches (:data:`BATCH_WINDOWS`, :data:`BATCH_ROWS`, :data:`BATCH_SECONDS`) on one
writer that checkpoints once (:func:`write_windows`), a batch's adjacent windows of one stream
in one transaction; what was fetched before a failure is written before the run ends, and a
stop ends the writing at the next transaction (the rest is fetched again by the next run).

Rows whose bucket ends after ``now - lookback`` are stored as provisional.

Days before the Analytics API's floor (2026-01-01, or 365 days ago) are read from the legacy
Admin API, whatever the organization's source.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Callable, Mapping, Protocol, Sequence

import duckdb

import pyarrow as pa

from collectors.bounds import DeadlineExceeded, RunBounds, Stopped
from collectors.clients import (ANALYTICS_FLOOR, AnalyticsClient, LegacyClient, NamesClient,
                                SourceClient)
from collectors.retry import CAP_SETTING, RetryPolicy
from collectors.rows import (DIMENSIONS, ClaudeCodeRow, CostRow, CutCostRow, CutUsageRow, Person,
                             UsageRow, merge_unrendered)
from spendwatch import allocation, estimates, facts, storage
from spendwatch.config import Config, OrganizationConfig, resolve_admin_key
from spendwatch.cuts import CUT_BY_NAME, CUT_DIMENSIONS, cut_of_stream, stream_kind
from spendwatch.errors import (AuthError, CollectionError, CutUnreadable, MalformedResponse,
                               SpendwatchError)
from spendwatch.pricing import PriceTable, price_table
from spendwatch.timeutil import DAY, ceil_day, ceil_hour, floor_day, parse_utc, rfc3339, utcnow

log = logging.getLogger(__name__)

__all__ = ["CollectOptions", "DeadlineExceeded", "OrgResult", "OrganizationSync", "Stopped",
           "Window", "collect", "plan_stream", "record_run", "write_window", "write_windows"]

STREAMS = ("usage", "cost")
ProgressFactory = Callable[[str, int], "Progress"]


class Progress(Protocol):
    """Told about each stored window (the CLI's progress bar is one)."""

    def advance(self, window: "Window") -> None:
        """One window stored."""

    def close(self) -> None:
        """No more windows."""


#: How old the stored workspace and API key names may be before a run lists them again (a
#: run also lists them when its rows name an ID without a stored name).
NAMES_MAX_AGE = timedelta(hours=1)
#: The longest range one Analytics request may span.
MAX_WINDOW = timedelta(days=31)


@dataclass(frozen=True)
class Window:
    """A range of one stream read from one source in one transaction: a UTC day (or the part
    of it up to now) of a backfill, or a routine run's whole re-read range (at most
    :data:`MAX_WINDOW`, the Analytics API's longest range)."""

    stream: str
    start: datetime
    end: datetime
    source: str


@dataclass
class OrgResult:
    """What one organization's collection did."""

    organization: str
    windows: int = 0
    usage_rows: int = 0
    cost_rows: int = 0
    error: str | None = None
    auth_failed: bool = False
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """ok | failed | stopped, as stored in collection_runs."""
        return "stopped" if self.stopped else "ok" if self.ok else "failed"


@dataclass
class CollectOptions:
    """A collection request: ``since``/``until`` are UTC instants (None: the defaults)."""

    since: datetime | None = None
    until: datetime | None = None
    refresh: bool = False
    organizations: Sequence[str] = field(default=())
    stop: threading.Event | None = None  # set it to stop at once (stored windows are kept)


# --- planning (pure) -------------------------------------------------------------------------

def day_chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights, oldest first."""
    chunks = []
    cursor = start
    while cursor < end:
        stop = min(floor_day(cursor) + DAY, end)
        chunks.append((cursor, stop))
        cursor = stop
    return chunks


def plan_stream(covered: tuple[datetime, datetime] | None, start: datetime, end: datetime,
                reread_from: datetime, refresh: bool = False) -> list[tuple[datetime, datetime]]:
    """The windows to fetch for one stream, in the order that keeps coverage contiguous.

    ``start`` must be a UTC midnight; ``end`` is at most the current hour's end.
    """
    if start >= end:
        return []
    if covered is None:
        return day_chunks(start, end)
    low, high = covered
    down = list(reversed(day_chunks(start, low))) if start < low else []
    middle_from = max(start, low) if refresh else max(start, low, floor_day(reread_from))
    middle = day_chunks(middle_from, min(end, high))
    up = day_chunks(high, end) if end > high else []
    return down + middle + up


def analytics_floor(now: datetime) -> datetime:
    """The first UTC day the Analytics API can be asked about."""
    return max(ANALYTICS_FLOOR, floor_day(now - timedelta(days=365)) + DAY)


# --- the database side ------------------------------------------------------------------------

_USAGE_COLUMNS = ["row_key", "organization", "source", "bucket_start", "bucket_end",
                  *DIMENSIONS, "uncached_input_tokens", "cache_write_5m_tokens",
                  "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
                  "web_search_requests", "requests", "provisional", "fetched_at"]
_COST_COLUMNS = ["row_key", "organization", "source", "bucket_start", "bucket_end",
                 "bucket_width", *DIMENSIONS, "cost_type", "token_type", "description",
                 "amount_usd", "list_amount_usd", "requests", "provisional", "fetched_at"]
_CUT_USAGE_COLUMNS = ["row_key", "organization", "cut", "source", "bucket_start", "bucket_end",
                      *CUT_DIMENSIONS, "uncached_input_tokens", "cache_write_5m_tokens",
                      "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
                      "web_search_requests", "requests", "provisional", "fetched_at"]
_CUT_COST_COLUMNS = ["row_key", "organization", "cut", "source", "bucket_start", "bucket_end",
                     *CUT_DIMENSIONS, "cost_type", "token_type", "amount_usd",
                     "list_amount_usd", "requests", "provisional", "fetched_at"]
_CLAUDE_CODE_COLUMNS = ["row_key", "organization", "day", "actor_type", "actor", "terminal_type",
                        "sessions", "lines_added", "lines_removed", "commits", "pull_requests",
                        "tool_accepted", "tool_rejected", "input_tokens", "output_tokens",
                        "cache_read_tokens", "cache_creation_tokens", "estimated_cost_usd",
                        "models", "fetched_at"]
#: The stream of the legacy Claude Code report (day windows, no provisional flag).
CLAUDE_CODE = "claude_code"
#: A cut the key could not read is asked again after this long (one request a day).
CUT_RECHECK = timedelta(hours=24)
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_DOLLARS = pa.decimal128(38, 12)
_ARROW_TYPES = {"bucket_start": _TIMESTAMP, "bucket_end": _TIMESTAMP, "fetched_at": _TIMESTAMP,
                "amount_usd": _DOLLARS, "list_amount_usd": _DOLLARS, "provisional": pa.bool_(),
                "requests": pa.int64(), "estimated_cost_usd": _DOLLARS, "day": pa.date32(),
                **{d: pa.string() for d in CUT_DIMENSIONS}, "terminal_type": pa.string()}
AnyRow = UsageRow | CostRow | CutUsageRow | CutCostRow | ClaudeCodeRow


def _arrow(rows: Sequence[AnyRow], keys: Sequence[str], columns: list[str], now: datetime,
           provisional_after: datetime) -> pa.Table:
    """The rows (their ``row_key`` values already computed: ``keys``) as an Arrow table, a
    column at a time (bulk insert: row-by-row inserts are ~1000x slower)."""
    def column(name: str) -> list[object]:
        if name == "row_key":
            return list(keys)
        if name == "provisional":
            return [getattr(row, "bucket_end") > provisional_after for row in rows]
        if name == "fetched_at":
            return [now] * len(rows)
        get = attrgetter(name)
        return [get(row) for row in rows]
    return pa.table({c: pa.array(column(c), type=_ARROW_TYPES.get(c)) for c in columns})


def _table(stream: str) -> tuple[str, list[str]]:
    """The table and columns of a stream: ``usage``/``cost`` (the key cut),
    ``usage:<cut>``/``cost:<cut>``, ``claude_code``."""
    if stream == CLAUDE_CODE:
        return "claude_code_daily", _CLAUDE_CODE_COLUMNS
    if cut_of_stream(stream) is not None:
        return (("usage_cuts", _CUT_USAGE_COLUMNS) if stream_kind(stream) == "usage"
                else ("cost_cuts", _CUT_COST_COLUMNS))
    return ("usage_hourly", _USAGE_COLUMNS) if stream == "usage" else ("cost_buckets",
                                                                        _COST_COLUMNS)


def _scope(stream: str) -> tuple[str, str]:
    """(the window's rows, their bucket column) in the stream's table, with parameters
    organization, start, end[, cut]."""
    if stream == CLAUDE_CODE:
        return "organization = ? AND day >= ?::DATE AND day < ?::DATE", "day"
    if cut_of_stream(stream) is not None:
        return ("organization = ? AND bucket_start >= ? AND bucket_start < ? AND cut = ?",
                "bucket_start")
    return "organization = ? AND bucket_start >= ? AND bucket_start < ?", "bucket_start"


def write_people(conn: duckdb.DuckDBPyConnection, organization: str,
                 people: Mapping[str, Person], now: datetime) -> None:
    """Upsert who the actors are, in one statement: e-mail and name as last reported; a
    deleted account keeps no e-mail address (the API drops it, so does spendwatch)."""
    if not people:
        return
    listed = list(people.values())
    conn.register("incoming_people", pa.table({
        "organization": pa.array([organization] * len(listed), pa.string()),
        "actor_key": pa.array([p.actor_key for p in listed], pa.string()),
        "actor_type": pa.array([p.actor_type for p in listed], pa.string()),
        "email": pa.array([p.email for p in listed], pa.string()),
        "name": pa.array([p.name for p in listed], pa.string()),
        "deleted": pa.array([p.deleted for p in listed], pa.bool_()),
        "last_seen": pa.array([now] * len(listed), _TIMESTAMP)}))
    storage.replace_rows(conn, "people", ("organization", "actor_key"), """
        SELECT i.organization, i.actor_key, i.actor_type,
               CASE WHEN i.deleted THEN NULL ELSE coalesce(i.email, p.email) END AS email,
               i.name, i.deleted, i.last_seen
        FROM incoming_people i LEFT JOIN people p USING (organization, actor_key)""")
    conn.unregister("incoming_people")


def checked_keys(organization: str, window: Window, rows: Sequence[AnyRow]) -> list[str]:
    """The rows' keys, in order, once each row is known to lie in ``window`` and no key
    comes twice. Raises MalformedResponse (a bucket outside the window: it would overwrite a
    row of another window on its key) or CollectionError (a row sent twice)."""
    seen: set[str] = set()
    keys: list[str] = []
    for row in rows:
        start = (row.bucket_start if not isinstance(row, ClaudeCodeRow)
                 else datetime.combine(row.day, datetime.min.time(), window.start.tzinfo))
        if not window.start <= start < window.end:
            raise MalformedResponse(f"organization {organization!r}: the API reported a "
                                    f"{window.stream} bucket starting {rfc3339(start)}"
                                    f" for {rfc3339(window.start)}..{rfc3339(window.end)}; "
                                    "nothing of the window was stored")
        key = row.row_key
        if key in seen:
            raise CollectionError(f"organization {organization!r}: the API reported the same "
                                  f"{window.stream} row twice in {rfc3339(window.start)}.."
                                  f"{rfc3339(window.end)} (data changed while paging?); the "
                                  "window is fetched again next run")
        seen.add(key)
        keys.append(key)
    return keys


def write_window(config: Config, organization: str, window: Window,
                 rows: Sequence[AnyRow], data_refreshed_at: datetime | None,
                 now: datetime, provisional_after: datetime, prices: PriceTable,
                 people: Mapping[str, Person] | Sequence[Mapping[str, Person]] | None = None,
                 conn: duckdb.DuckDBPyConnection | None = None,
                 keys: Sequence[str] | None = None,
                 stop: threading.Event | None = None) -> None:
    """Replace the window's rows and move the cursor, in one transaction (on ``conn``, a
    :func:`spendwatch.storage.batch_writer`'s, when given: :func:`write_windows`).

    The same transaction prices new usage rows (``usage_estimates``, ``cut_estimates``: the
    price cut's rows reprice every cut of the window) and re-splits the day's legacy cost
    across API keys (``cost_allocated``), so readers never see them out of step. ``people``
    is one window's actors, or several windows' in order (:func:`write_windows` writes
    adjacent windows as one); ``keys``, the rows' keys when :func:`checked_keys` has already
    checked them. Once ``stop`` is set, a transaction that conflicted with another writer's
    is not tried again: the conflict (a duckdb.TransactionException) is raised.
    """
    table, columns = _table(window.stream)
    cut = cut_of_stream(window.stream)
    kind = stream_kind(window.stream)
    if keys is None:
        keys = checked_keys(organization, window, rows)
    actors: list[Mapping[str, Person]] = (
        [] if not people else [people] if isinstance(people, Mapping) else list(people))
    incoming = _arrow(rows, keys, columns, now, provisional_after)
    in_window, _ = _scope(window.stream)
    span: list[object] = [organization, window.start, window.end]
    if cut is not None:
        span.append(cut.name)
    if window.stream == CLAUDE_CODE:
        span = [organization, window.start.date(), window.end.date()]
    def write(conn: duckdb.DuckDBPyConnection) -> None:
        if window.stream == "usage":  # an estimate carries its row's organization and hour
            conn.execute(f"DELETE FROM usage_estimates WHERE {in_window}", span)
        elif cut is not None and kind == "usage":
            conn.execute("DELETE FROM cut_estimates WHERE organization = ? AND bucket_start "
                         ">= ? AND bucket_start < ? AND row_key IN "
                         f"(SELECT row_key FROM usage_cuts WHERE {in_window})",
                         [*span[:3], *span])
        conn.execute(f"DELETE FROM {table} WHERE {in_window}", span)
        conn.register("incoming_rows", incoming)
        # A plain INSERT: the window's rows were just deleted and a row's key holds its
        # bucket, so a key can only be taken again by a row the API sent twice (refused
        # above). An upsert costs 3-4x as much against a year of rows.
        conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) "
                     f"SELECT {', '.join(columns)} FROM incoming_rows")
        conn.unregister("incoming_rows")
        hours = "organization = ? AND bucket_start >= ? AND bucket_start < ?"
        hours_span = [organization, window.start, window.end]
        if window.stream == "usage":
            estimates.write_estimates(conn, prices, hours, hours_span)
        elif cut is not None and kind == "usage":
            if cut.name == "price":  # it prices every other cut of these hours
                estimates.reprice_window(conn, prices, hours, hours_span)
            else:
                estimates.write_cut_estimates(conn, prices, hours, hours_span, cut.name)
        for seen_actors in actors:  # in the windows' order: as written one by one
            write_people(conn, organization, seen_actors, now)
        if cut is None and window.stream != CLAUDE_CODE:
            day = floor_day(window.start)
            while day < window.end:
                allocation.reallocate(conn, organization, day, day + DAY)
                day += DAY
            # The key cut's facts of the whole days: its legacy cost is split per day.
            facts.refresh(conn, organization, floor_day(window.start), day, ["key"])
        elif cut is not None:
            # The price cut's rows price every cut's (and the key cut's) estimates of the hours.
            facts.refresh(conn, organization, window.start, window.end,
                          ["key", *CUT_BY_NAME] if cut.name == "price" and kind == "usage"
                          else [cut.name])
        # Daily sums an older spendwatch left behind its facts are summed again (whole), then
        # recorded as agreeing with sync_state as this write leaves it.
        if facts.heal_daily(conn, organization):
            log.warning("organization %r: its daily sums were summed again from its facts "
                        "(an older spendwatch had written them without)", organization)
        storage.replace_rows(conn, "sync_state", ("organization", "stream"), """
            SELECT n.organization, n.stream,
                   least(s.covered_from, n.covered_from) AS covered_from,
                   greatest(s.covered_until, n.covered_until) AS covered_until,
                   coalesce(n.data_refreshed_at, s.data_refreshed_at) AS data_refreshed_at,
                   n.updated_at
            FROM (SELECT ?::VARCHAR AS organization, ?::VARCHAR AS stream,
                         ?::TIMESTAMPTZ AS covered_from, ?::TIMESTAMPTZ AS covered_until,
                         ?::TIMESTAMPTZ AS data_refreshed_at, ?::TIMESTAMPTZ AS updated_at) n
            LEFT JOIN sync_state s USING (organization, stream)""",
                             [organization, window.stream, window.start, window.end,
                              data_refreshed_at, now])
        facts.mark_daily(conn, organization)
    # A DuckLake writer may conflict with another's (the same rows, or a data file both
    # delete from): the whole window is written again (storage.written).
    storage.written(config, write, f"writing {organization!r} {window.stream} "
                    f"{rfc3339(window.start)}..{rfc3339(window.end)}", conn,
                    give_up=stop.is_set if stop is not None else None)


@dataclass(frozen=True)
class Fetched:
    """A window's rows as fetched, waiting for :func:`write_windows`."""

    window: Window
    rows: Sequence[AnyRow]
    data_refreshed_at: datetime | None
    provisional_after: datetime
    people: Mapping[str, Person]


#: A run writes its fetched windows in batches of at most this many windows or rows (about
#: a week of the 400-key bench organization), or what it fetched in this many seconds (a
#: slow API's windows still land within seconds): one writer and one checkpoint per batch,
#: the file locked for a few seconds at most, the rows held in memory bounded.
BATCH_WINDOWS = 16
BATCH_ROWS = 100_000
BATCH_SECONDS = 5.0


def write_windows(config: Config, organization: str, fetched: Sequence[Fetched],
                  now: datetime, prices: PriceTable,
                  written: Callable[[Fetched], None] | None = None,
                  stop: threading.Event | None = None) -> int:
    """Write fetched windows in order on one writer checkpointed once at the end
    (:func:`spendwatch.storage.batch_writer`); ``written`` is called for each window once
    its transaction committed. Returns the windows written.

    Adjacent windows of one stream (each one's end the next one's start: a backfill's days)
    are written as one window, in one transaction (:func:`write_window` over their union):
    a window's delete, insert, estimates, facts refresh and cursor cost about as much for
    one day as for sixteen. Each window's rows are checked against its own range first; a
    window that fails the check is not written, the windows before it are, and its error
    is raised. A failure while writing loses the transaction's windows only (the cursor
    moved with them: the next run fetches them again).

    Once ``stop`` is set the windows not yet written are left (the next run fetches them
    again): a stop ends the run after one transaction, not a batch, which on a loaded
    DuckLake is longer than the worker's grace after SIGTERM; a transaction that conflicts
    with another writer's is then not replayed either.
    """
    count = 0
    if not fetched or (stop is not None and stop.is_set()):
        return count
    with storage.batch_writer(config) as conn:
        for group in _adjacent(fetched):
            if stop is not None and stop.is_set():
                break
            keys: list[str] = []
            checked: list[Fetched] = []
            failure: SpendwatchError | None = None
            for item in group:
                try:
                    keys += checked_keys(organization, item.window, item.rows)
                except SpendwatchError as exc:
                    failure = exc
                    break
                checked.append(item)
            if checked:
                start, end = _hull(checked)
                refreshed = [f.data_refreshed_at for f in checked
                             if f.data_refreshed_at is not None]
                try:
                    write_window(config, organization,
                                 replace(checked[0].window, start=start, end=end),
                                 [row for f in checked for row in f.rows],
                                 refreshed[-1] if refreshed else None, now,
                                 checked[0].provisional_after, prices,
                                 [f.people for f in checked if f.people], conn=conn,
                                 keys=keys, stop=stop)
                except duckdb.TransactionException:
                    if stop is None or not stop.is_set():
                        raise
                    break  # stopping: not replayed against another writer, fetched again
                for item in checked:
                    count += 1
                    if written is not None:
                        written(item)
            if failure is not None:
                raise failure
    return count


def _adjacent(fetched: Sequence[Fetched]) -> list[list[Fetched]]:
    """``fetched`` in runs of one stream's windows that together cover one range without a
    gap (each window starts where the run so far ends, or ends where it starts: a backfill
    downwards is newest day first), with the same provisional bound."""
    groups: list[list[Fetched]] = []
    for item in fetched:
        group = groups[-1] if groups else None
        if group is not None:
            start, end = _hull(group)
            if (group[0].window.stream == item.window.stream
                    and group[0].provisional_after == item.provisional_after
                    and (item.window.start == end or item.window.end == start)):
                group.append(item)
                continue
        groups.append([item])
    return groups


def _hull(group: Sequence[Fetched]) -> tuple[datetime, datetime]:
    """The range a run of adjacent windows covers."""
    return (min(f.window.start for f in group), max(f.window.end for f in group))


def write_cut_access(config: Config, organization: str, cut: str, readable: bool,
                     reason: str | None, now: datetime) -> bool:
    """Record whether the key can read ``cut``; True when that changed (or is new)."""
    def write(conn: duckdb.DuckDBPyConnection) -> bool:
        before = conn.execute("SELECT readable FROM cut_access WHERE organization = ? AND "
                              "cut = ?", [organization, cut]).fetchone()
        conn.execute("DELETE FROM cut_access WHERE organization = ? AND cut = ?",
                     [organization, cut])
        conn.execute("INSERT INTO cut_access VALUES (?, ?, ?, ?, ?)",
                     [organization, cut, readable, reason, now])
        return before is None or bool(before[0]) != readable
    return storage.written(config, write, f"recording what {organization!r} can read")


def read_cut_access(config: Config, organization: str) -> dict[str, tuple[bool, datetime]]:
    """cut -> (readable, checked_at) as last recorded."""
    with storage.writer(config) as conn:
        return {cut: (bool(readable), checked) for cut, readable, checked in conn.execute(
            "SELECT cut, readable, checked_at FROM cut_access WHERE organization = ?",
            [organization]).fetchall()}


def read_sync_state(config: Config, organization: str, stream: str
                    ) -> tuple[tuple[datetime, datetime] | None, datetime | None]:
    """(covered range or None, earliest provisional bucket start or None)."""
    table, _ = _table(stream)
    cut = cut_of_stream(stream)
    with storage.writer(config) as conn:
        state = conn.execute("SELECT covered_from, covered_until FROM sync_state "
                             "WHERE organization = ? AND stream = ?",
                             [organization, stream]).fetchone()
        provisional = None if stream == CLAUDE_CODE else conn.execute(
            f"SELECT min(bucket_start) FROM {table} WHERE organization = ? AND provisional"
            + (" AND cut = ?" if cut is not None else ""),
            [organization] + ([cut.name] if cut is not None else [])).fetchone()
    covered = (state[0], state[1]) if state else None
    return covered, (provisional[0] if provisional else None)


def write_names(config: Config, organization: str, workspaces: list[dict],
                api_keys: list[dict], now: datetime) -> None:
    """Upsert workspace and API key names (names change; IDs do not)."""
    listed = {
        "workspaces": (("organization", "workspace_id"), pa.table({
            "organization": pa.array([organization] * len(workspaces), pa.string()),
            "workspace_id": pa.array([w["workspace_id"] for w in workspaces], pa.string()),
            "name": pa.array([w["name"] for w in workspaces], pa.string()),
            "archived_at": pa.array([_instant(w["archived_at"]) for w in workspaces],
                                    _TIMESTAMP),
            "is_default": pa.array([bool(w["is_default"]) for w in workspaces], pa.bool_()),
            "fetched_at": pa.array([now] * len(workspaces), _TIMESTAMP)})),
        "api_keys": (("organization", "api_key_id"), pa.table({
            "organization": pa.array([organization] * len(api_keys), pa.string()),
            "api_key_id": pa.array([k["api_key_id"] for k in api_keys], pa.string()),
            "name": pa.array([k["name"] for k in api_keys], pa.string()),
            "status": pa.array([k["status"] for k in api_keys], pa.string()),
            "workspace_id": pa.array([k["workspace_id"] for k in api_keys], pa.string()),
            "created_at": pa.array([_instant(k["created_at"]) for k in api_keys],
                                   _TIMESTAMP),
            "fetched_at": pa.array([now] * len(api_keys), _TIMESTAMP)}))}
    def write(conn: duckdb.DuckDBPyConnection) -> None:
        for table, (keys, rows) in listed.items():
            if rows.num_rows:
                storage.register(conn, "listed_names", rows)
                storage.replace_rows(conn, table, keys, "SELECT * FROM listed_names")
                storage.unregister(conn, "listed_names")
    storage.written(config, write, f"writing {organization!r}'s names")


def _instant(value: object) -> datetime | None:
    """A listed name's timestamp (the SDK's datetime, or RFC 3339 text) as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return parse_utc(str(value))


def record_run(config: Config, result: OrgResult, started: datetime,
               finished: datetime) -> None:
    """Store the outcome of one organization's run (data_stale alerts read it)."""
    def insert(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("""INSERT INTO collection_runs (id, organization, started_at, finished_at,
                        status, windows, usage_rows, cost_rows, error)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                     [storage.next_id(conn, "collection_runs"), result.organization, started,
                      finished, result.status, result.windows, result.usage_rows,
                      result.cost_rows, result.error])
    storage.written(config, insert, f"recording the run of {result.organization!r}")


def reprice_if_needed(config: Config) -> bool:
    """Reprice every stored usage row if the price table (file + config) changed."""
    return storage.written(config, lambda conn: estimates.ensure_current(
        conn, price_table(config.prices)), "repricing the estimates")


def refresh_model_lines(config: Config, now: datetime,
                        stop: threading.Event | None = None) -> None:
    """Model lines from the Models API when configured, within the collection deadline; a
    failure only costs freshness (a stop is noticed by the organizations' runs next)."""
    from collectors.models import refresh_models

    bounds = RunBounds("the Models API", config.collection.job_deadline_seconds, stop)
    try:
        refresh_models(config, now, bounds=bounds)
    except SpendwatchError as exc:
        log.warning("model lines not refreshed (routing falls back on model IDs): %s", exc)
    except Stopped:
        pass


# --- running ---------------------------------------------------------------------------------

class OrganizationSync:
    """Collects one organization: names, then every planned window of both streams."""

    def __init__(self, config: Config, org: OrganizationConfig, now: datetime,
                 policy: RetryPolicy, bounds: RunBounds | None = None):
        self.config = config
        self.org = org
        self.now = now
        self.bounds = bounds or RunBounds(f"organization {org.name!r}",
                                          config.collection.job_deadline_seconds)
        key = resolve_admin_key(config, org)
        settings = config.collection
        self._legacy = LegacyClient(org, key, settings, policy, self.bounds)
        self._analytics: SourceClient = (AnalyticsClient(org, key, settings, policy, self.bounds)
                                         if org.source == "analytics" else self._legacy)
        self._names = NamesClient(org, key, settings, policy, self.bounds)
        self._prices = price_table(config.prices)
        self._default_workspace: str | None = None
        self._readable: set[str] = set()

    def lookback(self, stream: str) -> timedelta:
        hours = (self.config.collection.usage_lookback_hours if stream_kind(stream) == "usage"
                 else self.config.collection.cost_lookback_hours)
        return timedelta(hours=hours)

    def streams(self) -> list[str]:
        """The key cut's streams, then each cut's, then the Claude Code report."""
        out = list(STREAMS)
        access = read_cut_access(self.config, self.org.name)
        for name in self.org.cut_names():
            readable, checked = access.get(name, (True, self.now))
            if not readable and self.now - checked < CUT_RECHECK:
                continue  # said once when it was found; asked again a day later
            out.append(f"usage:{name}")
            if self.org.source == "analytics":
                out.append(f"cost:{name}")
        readable, checked = access.get(CLAUDE_CODE, (True, self.now))
        if self.org.reads_claude_code() and (readable or self.now - checked >= CUT_RECHECK):
            out.append(CLAUDE_CODE)
        return out

    def plan(self, options: CollectOptions) -> list[Window]:
        """Every window to fetch, both streams, in execution order."""
        end_cap = ceil_hour(self.now)
        # Whole UTC days: the legacy cost report is daily, and its split across API keys
        # needs the whole day's usage beside it.
        end = min(ceil_day(options.until), end_cap) if options.until else end_cap
        floor = analytics_floor(self.now)
        windows: list[Window] = []
        for stream in self.streams():
            cut = cut_of_stream(stream)
            covered, earliest_provisional = read_sync_state(self.config, self.org.name,
                                                            stream)
            reread_from = self.now - self.lookback(stream)
            if earliest_provisional is not None:
                reread_from = min(reread_from, earliest_provisional)
            if options.since is not None:
                start = options.since
            elif covered is not None:
                start = min(covered[1], reread_from)
            else:
                start = self.now - timedelta(days=self.config.collection.initial_backfill_days)
            for w_start, w_end in plan_stream(covered, floor_day(start), end, reread_from,
                                              options.refresh):
                source = (self.org.source if w_start >= floor else "legacy")
                if cut is not None and (source not in cut.sources or
                                        (source == "legacy" and stream_kind(stream) == "cost")):
                    continue  # the legacy API has no such cut for days before the floor
                if stream == CLAUDE_CODE:
                    w_start, w_end = floor_day(w_start), floor_day(w_start) + DAY
                    if w_end > self.now:
                        continue  # a day is reported once it is over
                if stream == "cost" and source == "legacy":
                    # The legacy cost report has daily buckets: a window that starts inside a
                    # day (coverage that ended mid-day) is the whole day so far, once.
                    w_start = floor_day(w_start)
                    last = windows[-1] if windows else None
                    if last is not None and last.stream == stream and last.start == w_start:
                        windows[-1] = replace(last, end=max(last.end, w_end))
                        continue
                last = windows[-1] if windows else None
                if (last is not None and last.stream == stream and source == "analytics"
                        and last.source == source and stream != CLAUDE_CODE
                        and last.end == w_start and w_start >= floor_day(reread_from)
                        and w_end - last.start <= MAX_WINDOW):
                    # The re-read range in as few requests as paging allows: one window
                    # (one transaction) for days the API serves in one range.
                    windows[-1] = replace(last, end=w_end)
                    continue
                windows.append(Window(stream, w_start, w_end, source))
        return windows

    def fetch(self, window: Window, people: dict[str, Person]
              ) -> tuple[Sequence[AnyRow], datetime | None]:
        cut = cut_of_stream(window.stream)
        if window.stream == CLAUDE_CODE:
            return self._legacy.claude_code(window.start), None
        if cut is not None:
            cut = self.org.cut(cut.name)  # as this organization collects it
            client = self._analytics if window.source == "analytics" else self._legacy
            # Only a cut grouped by actor has rows the API repeats on purpose (identities it
            # cannot render); any other repeated row is refused by the window's writer.
            merge = merge_unrendered if "actor" in cut.group_by else list
            if stream_kind(window.stream) == "usage":
                cut_rows, refreshed = client.cut_usage(cut, window.start, window.end, people)
                return merge(list(cut_rows)), refreshed
            assert isinstance(client, AnalyticsClient)
            cost_rows, refreshed = client.cut_cost(cut, window.start, window.end, people)
            return merge(list(cost_rows)), refreshed
        if window.source == "analytics":
            if window.stream == "usage":
                return self._analytics.usage(window.start, window.end)
            return self._analytics.cost(window.start, window.end)
        rows: Sequence[AnyRow]
        if window.stream == "usage":
            rows, refreshed = self._legacy.usage(window.start, window.end)
        else:  # the legacy cost report has daily buckets only: ask for the whole UTC day
            rows, refreshed = self._legacy.cost(floor_day(window.start),
                                                floor_day(window.start) + DAY)
        # The legacy API calls the default workspace null; store its real ID, as the
        # Analytics API does, so features and workspace totals see one workspace.
        if self._default_workspace is not None:
            rows = [replace(r, workspace_id=self._default_workspace)  # type: ignore[type-var]
                    if getattr(r, "workspace_id") is None else r for r in rows]
        return rows, refreshed

    def refresh_names(self) -> None:
        workspaces = self._names.workspaces()
        api_keys = self._names.api_keys()
        write_names(self.config, self.org.name, workspaces, api_keys, self.now)

    def load_default_workspace(self) -> None:
        """The default workspace's ID, from the stored names (None if never listed)."""
        with storage.writer(self.config) as conn:
            row = conn.execute("SELECT workspace_id FROM workspaces WHERE organization = ? "
                               "AND is_default", [self.org.name]).fetchone()
        self._default_workspace = row[0] if row else None

    def run(self, options: CollectOptions, progress_factory: ProgressFactory | None,
            result: OrgResult) -> None:
        """Collect; fills ``result`` as windows land. Raises on the first failure.

        A refused key (401/403) is always an error: when only the names refresh got it, the
        windows are still collected and the AuthError is raised at the end.
        """
        refused: AuthError | None = None
        # A routine run lists names at most hourly; a collect of named days always does (it
        # also proves the key still works when every window is stored already).
        if options.since is not None or not self.names_fresh():
            refused = self._refresh_names_softly()
        self.load_default_workspace()
        seen: set[tuple[str, str]] = set()  # ("workspace" | "api_key", ID) of the key cut
        windows = self.plan(options)
        progress = progress_factory(self.org.name, len(windows)) if progress_factory else None
        unreadable: set[str] = set()
        pending: list[Fetched] = []  # fetched, not yet written: written in batches
        batch_started = time.monotonic()
        try:
            for window in windows:
                cut = cut_of_stream(window.stream)
                if (cut.name if cut is not None else window.stream) in unreadable:
                    continue
                if options.stop is not None and options.stop.is_set():
                    raise Stopped(f"organization {self.org.name!r}: stopped after "
                                  f"{result.windows + len(pending)} of {len(windows)} windows; "
                                  "the next run resumes")
                self.bounds.check(f"organization {self.org.name!r}: {window.stream} "
                                  f"{rfc3339(window.start)}..{rfc3339(window.end)}, after "
                                  f"{result.windows + len(pending)} of {len(windows)} windows")
                if not pending:
                    batch_started = time.monotonic()  # its first window's fetch
                people: dict[str, Person] = {}
                side = cut.name if cut is not None else (
                    CLAUDE_CODE if window.stream == CLAUDE_CODE else None)
                try:
                    rows, refreshed = self.fetch(window, people)
                except CutUnreadable as exc:
                    if side is None:
                        raise
                    unreadable.add(side)
                    if write_cut_access(self.config, self.org.name, side, False, str(exc),
                                        self.now):
                        log.warning("organization %r: the %s cut is skipped: the key may not "
                                    "read it (%s); every other figure is collected",
                                    self.org.name, side, exc)
                    continue
                except (AuthError, CollectionError) as exc:
                    # A cut or the Claude Code report failing (answers used up, a malformed
                    # page, a refusal once the key cut was read) costs that cut this run,
                    # not the run: its stored windows stay, the next run resumes it.
                    if side is None or (isinstance(exc, AuthError)
                                        and not (result.windows or pending)):
                        raise
                    unreadable.add(side)
                    log.warning("organization %r: the %s cut stops for this run: %s",
                                self.org.name, side, exc)
                    continue
                if cut is None and window.stream != CLAUDE_CODE:
                    for row in rows:
                        workspace = getattr(row, "workspace_id", None)
                        api_key = getattr(row, "api_key_id", None)
                        if workspace:
                            seen.add(("workspace", workspace))
                        if api_key:
                            seen.add(("api_key", api_key))
                if cut is not None and cut.name not in self._readable:
                    # Read, so readable (recorded now, in order with a refusal of the same
                    # cut's other stream later in the run).
                    self._readable.add(cut.name)
                    if write_cut_access(self.config, self.org.name, cut.name, True, None,
                                        self.now):
                        log.info("organization %r: the %s cut is readable", self.org.name,
                                 cut.name)
                pending.append(Fetched(window, rows, refreshed,
                                       self.now - self.lookback(window.stream), people))
                if (len(pending) >= BATCH_WINDOWS
                        or sum(len(f.rows) for f in pending) >= BATCH_ROWS
                        or time.monotonic() - batch_started >= BATCH_SECONDS):
                    landing, pending = pending, []
                    self.land(landing, result, progress)
            landing, pending = pending, []
            self.land(landing, result, progress)
        except BaseException:
            # What was fetched before a failure is kept (after a stop, nothing more is
            # written: see write_windows); the failure raised is the first one (a Stopped
            # stays a stop), the writing's own is logged.
            if pending:
                try:
                    self.land(pending, result, progress)
                except Exception as exc:
                    log.warning("organization %r: %d fetched windows were not written (%s); "
                                "the next run fetches them again", self.org.name,
                                len(pending), exc)
            raise
        finally:
            if progress:
                progress.close()
        if refused is None and self.unknown_ids(seen):
            refused = self._refresh_names_softly()  # a new key or workspace: its name now
            if refused is None:
                self.unknown_ids(seen, remember=True)  # a listing without them: asked hourly
        if refused is not None:
            raise refused

    def land(self, fetched: Sequence[Fetched], result: OrgResult,
             progress: Progress | None) -> None:
        """Write fetched windows (:func:`write_windows`), counting each as it is written."""
        def written(item: Fetched) -> None:
            result.windows += 1
            if stream_kind(item.window.stream) == "usage":
                result.usage_rows += len(item.rows)
            else:
                result.cost_rows += len(item.rows)
            if progress:
                progress.advance(item.window)

        count = write_windows(self.config, self.org.name, fetched, self.now, self._prices,
                              written, stop=self.bounds.stop)
        if count < len(fetched):
            log.info("organization %r: %d fetched windows not written (stopped); the next "
                     "run fetches them again", self.org.name, len(fetched) - count)

    def _refresh_names_softly(self) -> AuthError | None:
        """Refresh the names; a refused key is returned (the caller raises it after the
        windows), any other failure only costs the names' freshness."""
        try:
            self.refresh_names()
        except DeadlineExceeded:
            raise
        except AuthError as exc:
            log.info("organization %r: names not refreshed: %s", self.org.name, exc)
            return exc
        except SpendwatchError as exc:
            log.warning("organization %r: names not refreshed: %s", self.org.name, exc)
        return None

    def names_fresh(self) -> bool:
        """Whether the names were listed less than :data:`NAMES_MAX_AGE` ago."""
        with storage.writer(self.config) as conn:
            (listed,) = conn.execute(
                "SELECT max(fetched_at) FROM (SELECT fetched_at FROM workspaces WHERE "
                "organization = $org UNION ALL SELECT fetched_at FROM api_keys WHERE "
                "organization = $org)", {"org": self.org.name}).fetchone() or (None,)
        return listed is not None and timedelta(0) <= self.now - listed < NAMES_MAX_AGE

    def unknown_ids(self, seen: set[tuple[str, str]], remember: bool = False) -> bool:
        """Whether a workspace or API key of this run's rows has no stored name, leaving out
        IDs a listing already did not name (a deleted key's old usage: the hourly listing
        asks again). With ``remember``, the IDs still unnamed are stored as such."""
        if not seen:
            return False
        marker = f"names_unlisted:{self.org.name}"
        with storage.writer(self.config) as conn:
            known = {("workspace", i) for (i,) in conn.execute(
                "SELECT workspace_id FROM workspaces WHERE organization = ?",
                [self.org.name]).fetchall()}
            known |= {("api_key", i) for (i,) in conn.execute(
                "SELECT api_key_id FROM api_keys WHERE organization = ?",
                [self.org.name]).fetchall()}
            unknown = seen - known
            if remember:
                storage.set_meta(conn, marker, json.dumps(sorted(map(list, unknown))))
                return bool(unknown)
            row = conn.execute("SELECT value FROM meta WHERE key = ?", [marker]).fetchone()
        unlisted = {tuple(pair) for pair in json.loads(row[0])} if row else set()
        return bool(unknown - unlisted)


def collect(config: Config, options: CollectOptions | None = None, now: datetime | None = None,
            progress_factory: ProgressFactory | None = None,
            sleep: Callable[[float], None] | None = None) -> list[OrgResult]:
    """Collect every configured organization (or those named in ``options``).

    One organization failing does not stop the others: its error is in its result and in
    ``collection_runs``. A routine run (no ``since``: the worker's, or ``collect`` without
    ``--since``) has ``collection.job_deadline_seconds`` per organization in all: past it, the
    run stops at once (mid-page too) and is recorded as failed with the reason. An explicit
    backfill (``since`` given, e.g. a year of history) has no whole-run deadline: it may
    rightly take longer, and is bounded per request (the HTTP timeout, a repeated cursor, an
    oversized page) and by the stop flag (Ctrl-C). ``sleep`` waits between retries (default:
    a wait that a stop cuts short).
    Raises ConfigError before any network call when a key is missing.
    """
    options = options or CollectOptions()
    now = now or utcnow()
    orgs = [config.organization(n) for n in options.organizations] or list(config.organizations)
    for org in orgs:
        resolve_admin_key(config, org)  # every key problem surfaces before anything runs
    reprice_if_needed(config)
    refresh_model_lines(config, now, options.stop)
    results = []
    for org in orgs:
        started, clock_start = now, time.monotonic()  # run times on the injected clock
        result = OrgResult(org.name)
        deadline = (config.collection.job_deadline_seconds if options.since is None
                     else float("inf"))
        bounds = RunBounds(f"organization {org.name!r}", deadline, options.stop)
        policy = RetryPolicy(max_attempts=config.collection.max_attempts,
                             max_retry_after=config.collection.max_retry_after_seconds,
                             cap_setting=CAP_SETTING, deadline=bounds.deadline,
                             sleep=sleep or bounds.sleep, clock=bounds.clock)
        try:
            OrganizationSync(config, org, now, policy, bounds).run(options, progress_factory,
                                                                   result)
        except SpendwatchError as exc:
            result.error = str(exc)
            result.auth_failed = isinstance(exc, AuthError)
            # Told once by the caller: the CLI's "error:" line, the worker's log line.
            log.info("%s", exc)
        except Stopped as exc:
            result.error, result.stopped = str(exc), True
            log.warning("%s", exc)
        except Exception as exc:  # a bug must not stop the other organizations
            if storage.is_interrupt(exc):
                raise KeyboardInterrupt from exc  # Ctrl-C inside a DuckDB query
            result.error = f"organization {org.name!r}: unexpected {type(exc).__name__}"
            log.exception("organization %r: collection failed", org.name)
        try:
            record_run(config, result,
                       started, now + timedelta(seconds=time.monotonic() - clock_start))
        except SpendwatchError as exc:
            log.error("could not record the run of %r: %s", org.name, exc)
        results.append(result)
        if result.stopped:
            break
    return results
