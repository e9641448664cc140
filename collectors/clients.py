"""API clients: the Analytics API through the official SDK, the legacy Admin API through requests.

Both expose the same two calls, ``usage(start, end)`` and ``cost(start, end)``, returning the
rows of one sync window (every page of it) and the API's ``data_refreshed_at`` if it gives one.
Each page is fetched under the shared :class:`RetryPolicy`; the SDK's own retries are off
because it honours ``retry-after`` without a cap.

Paging is bounded (:class:`~collectors.bounds.RunBounds`): the run's deadline and stop flag are
checked before every page and cut every HTTP timeout; a ``next_page`` cursor seen before in the
same window (the API would page forever) and a page with more rows than the ``limit`` asked
for are refused at once (:class:`MalformedResponse`), so nothing of that window is stored.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

import anthropic
import requests

from collectors.bounds import RunBounds, unbounded
from collectors.retry import TransportFailure, call_with_retry, error_from_body
from collectors.rows import (ClaudeCodeRow, CostRow, CutCostRow, CutUsageRow, Person, UsageRow,
                             analytics_cost_rows, analytics_cut_cost_rows,
                             analytics_cut_usage_rows, analytics_usage_rows, check_page_size,
                             claude_code_rows, legacy_cost_rows, legacy_cut_usage_rows,
                             legacy_usage_rows, page_cursor)
from spendwatch.cuts import PEOPLE_DIMENSIONS, Cut
from spendwatch import __version__
from spendwatch.config import CollectionConfig, OrganizationConfig
from spendwatch.errors import MalformedResponse
from spendwatch.retry import RetryPolicy, parse_retry_after
from spendwatch.secrets import Secret
from spendwatch.text import storable
from spendwatch.timeutil import DAY, HOUR, parse_utc, rfc3339

log = logging.getLogger(__name__)

GROUP_BY = ["model", "workspace_id", "api_key_id", "service_tier", "context_window"]
ANALYTICS_FLOOR = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
#: The legacy usage report groups by speed only with this beta header.
FAST_MODE_BETA = "fast-mode-2026-02-01"
USER_AGENT = f"spendwatch/{__version__}"
R = TypeVar("R")


class SourceClient(Protocol):
    """What the sync needs of an API generation."""

    def usage(self, start: datetime, end: datetime) -> tuple[list[UsageRow], datetime | None]: ...

    def cost(self, start: datetime, end: datetime) -> tuple[list[CostRow], datetime | None]: ...

    def cut_usage(self, cut: Cut, start: datetime, end: datetime, people: dict[str, Person]
                  ) -> tuple[list[CutUsageRow], datetime | None]: ...


def _people_dims(cut: Cut) -> tuple[str, ...]:
    """The dimensions of a cut that only some organizations may read: a 400/403 naming one of
    them means the cut is not readable, not a broken request (spendwatch.cuts)."""
    return tuple(d for d in cut.group_by if d in PEOPLE_DIMENSIONS)


def sdk_client(org: OrganizationConfig, key: Secret,
               settings: CollectionConfig) -> anthropic.Anthropic:
    """The official SDK's client for an organization, with its own retries off.

    The key is passed explicitly, so the SDK ignores ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN.
    """
    return anthropic.Anthropic(api_key=key.reveal(), base_url=org.base_url, max_retries=0,
                               timeout=settings.timeout_seconds,
                               default_headers={"User-Agent": USER_AGENT})


def _refreshed_at(page: Mapping[str, Any]) -> datetime | None:
    value = page.get("data_refreshed_at")
    try:
        return parse_utc(value) if isinstance(value, str) else None
    except ValueError:
        return None


class AnalyticsClient:
    """The Usage and Cost Analytics API (``client.beta.organization.analytics``), hourly."""

    def __init__(self, org: OrganizationConfig, key: Secret, settings: CollectionConfig,
                 policy: RetryPolicy, bounds: RunBounds | None = None):
        self._org = org
        self._key = key
        self._policy = policy
        self._limit = settings.page_limit
        self._timeout = settings.timeout_seconds
        self._bounds = bounds or unbounded()
        self._sdk = sdk_client(org, key, settings)

    def usage(self, start: datetime, end: datetime) -> tuple[list[UsageRow], datetime | None]:
        return self._read(self._sdk.beta.organization.analytics.usage, "usage", start, end,
                          {}, analytics_usage_rows)

    def cost(self, start: datetime, end: datetime) -> tuple[list[CostRow], datetime | None]:
        return self._read(self._sdk.beta.organization.analytics.cost, "cost", start, end,
                          {"group_by": GROUP_BY + ["cost_type", "token_type"]},
                          analytics_cost_rows)

    def cut_usage(self, cut: Cut, start: datetime, end: datetime, people: dict[str, Person]
                  ) -> tuple[list[CutUsageRow], datetime | None]:
        """One window of a cut's usage; the actors its rows name are added to ``people``."""
        return self._read(self._sdk.beta.organization.analytics.usage, f"usage:{cut.name}",
                          start, end, {"group_by": list(cut.group_by)},
                          lambda page, org, where: analytics_cut_usage_rows(
                              page, org, cut.name, where, people),
                          dimensions=_people_dims(cut), fanout=False)

    def cut_cost(self, cut: Cut, start: datetime, end: datetime, people: dict[str, Person]
                 ) -> tuple[list[CutCostRow], datetime | None]:
        """One window of a cut's billed cost, by cost and token type."""
        return self._read(self._sdk.beta.organization.analytics.cost, f"cost:{cut.name}",
                          start, end, {"group_by": [*cut.group_by, *cut.cost_fanout]},
                          lambda page, org, where: analytics_cut_cost_rows(
                              page, org, cut.name, where, people),
                          dimensions=_people_dims(cut), fanout=True)

    def _read(self, resource: Any, stream: str, start: datetime, end: datetime,
              extra: dict[str, Any],
              parse: Callable[[Any, str, str], list[R]], dimensions: tuple[str, ...] = (),
              fanout: bool | None = None) -> tuple[list[R], datetime | None]:
        params: dict[str, Any] = {
            "starting_at": rfc3339(start), "ending_at": rfc3339(end), "time_bucket_width": "1h",
            "group_by": GROUP_BY, "limit": self._limit, "order_by": "time", "order": "asc",
            **extra,
        }
        if fanout is None:
            fanout = "group_by" in extra
        rows: list[R] = []
        refreshed: datetime | None = None
        cursor: str | None = None
        seen: set[str] = set()
        page_number = 0
        while True:
            page_number += 1
            where = (f"organization {self._org.name!r}: analytics {stream} "
                     f"{rfc3339(start)}..{rfc3339(end)} page {page_number}")
            page = call_with_retry(
                lambda: self._bounds.call(lambda: self._get(resource, params, cursor), where),
                self._policy, where, self._key, dimensions)
            check_page_size(page, self._limit, "rows", where, fanout=fanout)
            rows.extend(parse(page, self._org.name, where))
            refreshed = _refreshed_at(page) or refreshed
            cursor = next_cursor(page, seen, where)
            if cursor is None:
                return rows, refreshed

    def _get(self, resource: Any, params: dict[str, Any], cursor: str | None) -> Any:
        kwargs = dict(params, page=cursor) if cursor else dict(params)
        kwargs["timeout"] = self._bounds.timeout(self._timeout)
        text = sdk_call(lambda: resource.with_raw_response.list(**kwargs).http_response.text,
                         self._org.base_url)
        return _json(text, self._org.name)


#: The most pages one window (or one listing) may take: far beyond any real answer
#: (1000 rows a page), a bound on an API that hands out a new cursor with every page.
MAX_PAGES = 10_000


def next_cursor(page: Any, seen: set[str], where: str) -> str | None:
    """The next page's cursor (None: last page), added to ``seen``, the cursors of the window
    so far (:func:`check_cursor`)."""
    cursor = page_cursor(page, where)
    return None if cursor is None else check_cursor(cursor, seen, where)


def check_cursor(cursor: str, seen: set[str], where: str, noun: str = "next_page cursor") -> str:
    """``cursor`` added to ``seen``. Raises MalformedResponse when the API hands out a cursor
    it gave before (it would page forever: empty pages or the same rows again), or a new one
    past :data:`MAX_PAGES` pages (it would page without end: a backfill has no deadline)."""
    if cursor in seen:
        shown = cursor if len(cursor) <= 40 else cursor[:37] + "..."
        raise MalformedResponse(f"{where}: the API sent a {noun} it sent before "
                                f"({shown!r}), so paging would never end; nothing of this "
                                "window was stored, the next run asks again")
    if len(seen) >= MAX_PAGES:
        raise MalformedResponse(f"{where}: the API is still paging after {MAX_PAGES} pages; "
                                "refused, nothing of this window was stored")
    seen.add(cursor)
    return cursor


def _json(text: str, organization: str, decimal_numbers: bool = False) -> Any:
    """The page as JSON; with ``decimal_numbers`` every number with a point is a Decimal (the
    Claude Code report sends cents as JSON numbers: a float would not be exact)."""
    try:
        return json.loads(text, parse_float=Decimal) if decimal_numbers else json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested thousands of levels deep
        raise MalformedResponse(f"organization {organization!r}: the API answered with something "
                                "that is not JSON") from None


class LegacyClient:
    """The legacy Usage & Cost Admin API over plain HTTP (``x-api-key``, version 2023-06-01).

    Usage hourly by api key, workspace, model, tier and context window; cost daily by workspace
    and description (never per API key). ``limit`` counts time buckets here.
    """

    def __init__(self, org: OrganizationConfig, key: Secret, settings: CollectionConfig,
                 policy: RetryPolicy, bounds: RunBounds | None = None):
        self._org = org
        self._key = key
        self._policy = policy
        self._timeout = settings.timeout_seconds
        self._bounds = bounds or unbounded()
        self._session = requests.Session()
        self._session.headers.update({"x-api-key": key.reveal(),
                                      "anthropic-version": "2023-06-01",
                                      "User-Agent": USER_AGENT})

    def usage(self, start: datetime, end: datetime) -> tuple[list[UsageRow], datetime | None]:
        hours = max(1, min(168, int((end - start) / HOUR)))
        params = [("starting_at", rfc3339(start)), ("ending_at", rfc3339(end)),
                  ("bucket_width", "1h"), ("limit", str(hours))]
        params += [("group_by[]", dim) for dim in GROUP_BY]
        return self._read("/v1/organizations/usage_report/messages", "usage", params,
                          legacy_usage_rows, start, end, hours), None

    def cut_usage(self, cut: Cut, start: datetime, end: datetime, people: dict[str, Person]
                  ) -> tuple[list[CutUsageRow], datetime | None]:
        """One window of the price cut from the usage report (no 5-dimension limit there);
        grouping by speed needs the fast-mode beta header."""
        hours = max(1, min(168, int((end - start) / HOUR)))
        params = [("starting_at", rfc3339(start)), ("ending_at", rfc3339(end)),
                  ("bucket_width", "1h"), ("limit", str(hours))]
        params += [("group_by[]", dim) for dim in cut.group_by]
        return self._read("/v1/organizations/usage_report/messages", f"usage:{cut.name}", params,
                          lambda page, org, where: legacy_cut_usage_rows(page, org, cut.name,
                                                                         where),
                          start, end, hours, headers={"anthropic-beta": FAST_MODE_BETA}), None

    def claude_code(self, day: datetime) -> list[ClaudeCodeRow]:
        """Every record of usage_report/claude_code for one UTC day (starting at ``day``)."""
        params = [("starting_at", day.date().isoformat()), ("limit", "1000")]
        return self._read("/v1/organizations/usage_report/claude_code", "claude_code", params,
                          claude_code_rows, day, day + DAY, 1000, decimal_numbers=True,
                          dimensions=("claude_code",))

    def cost(self, start: datetime, end: datetime) -> tuple[list[CostRow], datetime | None]:
        days = max(1, min(31, (end - start).days))
        params = [("starting_at", rfc3339(start)), ("ending_at", rfc3339(end)),
                  ("bucket_width", "1d"), ("limit", str(days)),
                  ("group_by[]", "workspace_id"), ("group_by[]", "description")]
        return self._read("/v1/organizations/cost_report", "cost", params, legacy_cost_rows,
                          start, end, days), None

    def _read(self, path: str, stream: str, params: Sequence[tuple[str, str]],
              parse: Callable[[Any, str, str], list[R]], start: datetime,
              end: datetime, limit: int, headers: Mapping[str, str] | None = None,
              decimal_numbers: bool = False, dimensions: tuple[str, ...] = ()) -> list[R]:
        rows: list[R] = []
        cursor: str | None = None
        seen: set[str] = set()
        page_number = 0
        while True:
            page_number += 1
            where = (f"organization {self._org.name!r}: legacy {stream} "
                     f"{rfc3339(start)}..{rfc3339(end)} page {page_number}")
            query = list(params) + ([("page", cursor)] if cursor else [])
            page = call_with_retry(lambda: self._bounds.call(
                lambda: self._get(path, query, headers, decimal_numbers), where),
                self._policy, where, self._key, dimensions)
            check_page_size(page, limit, "records" if decimal_numbers else "buckets", where)
            rows.extend(parse(page, self._org.name, where))
            cursor = next_cursor(page, seen, where)
            if cursor is None:
                return rows

    def _get(self, path: str, query: list[tuple[str, str]],
             headers: Mapping[str, str] | None = None, decimal_numbers: bool = False) -> Any:
        try:
            response = self._session.get(self._org.base_url + path, params=query,
                                         headers=dict(headers or {}),
                                         timeout=self._bounds.timeout(self._timeout))
        except requests.Timeout:
            raise TransportFailure(None, "timeout", f"no answer from {self._org.base_url} in time")
        except requests.RequestException:
            raise TransportFailure(None, "connection_error",
                                   f"could not connect to {self._org.base_url}")
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            error_type, message = error_from_body(response.status_code, body)
            raise TransportFailure(response.status_code, error_type, message,
                                   parse_retry_after(response.headers.get("retry-after")))
        return _json(response.text, self._org.name, decimal_numbers)


class NamesClient:
    """Workspace and API key names from the Admin API, through the SDK, page by page."""

    PAGE_LIMIT = 100

    def __init__(self, org: OrganizationConfig, key: Secret, settings: CollectionConfig,
                 policy: RetryPolicy, bounds: RunBounds | None = None):
        self._org = org
        self._key = key
        self._policy = policy
        self._timeout = settings.timeout_seconds
        self._bounds = bounds or unbounded()
        self._sdk = sdk_client(org, key, settings)

    def workspaces(self) -> list[dict[str, Any]]:
        """[{workspace_id, name, archived_at, is_default}], default and archived ones included.

        The API marks no workspace as the default: it is the one listed only with
        ``include_default``. The legacy usage and cost reports call it null.
        """
        listing = self._sdk.organization.workspaces.list
        everything = self._items(listing, "workspaces", include_default=True,
                                 include_archived=True)
        others = {_text(w, "id") for w in self._items(listing, "workspaces",
                                                       include_default=False,
                                                       include_archived=True)}
        return [{"workspace_id": _text(w, "id"), "name": _text(w, "name"),
                 "archived_at": getattr(w, "archived_at", None),
                 "is_default": _text(w, "id") not in others} for w in everything]

    def api_keys(self) -> list[dict[str, Any]]:
        """[{api_key_id, name, status, workspace_id, created_at}] for every key."""
        out = []
        for k in self._items(self._sdk.organization.api_keys.list, "API keys"):
            scope = getattr(k, "scope", None)
            out.append({"api_key_id": _text(k, "id"), "name": _text(k, "name"),
                        "status": getattr(k, "status", None),
                        "workspace_id": getattr(scope, "workspace_id", None),
                        "created_at": getattr(k, "created_at", None)})
        return out

    def _items(self, list_page: Callable[..., Any], what: str, **params: Any) -> list[Any]:
        """Every item of an SDK listing, one page at a time (``after_id`` = the page's
        ``last_id``), each page under the retry policy and the run's bounds. A page larger
        than asked for or a ``last_id`` given before is refused (MalformedResponse)."""
        items: list[Any] = []
        seen: set[str] = set()
        after: str | None = None
        page_number = 0
        while True:
            page_number += 1
            where = f"organization {self._org.name!r}: {what} page {page_number}"
            kwargs = dict(params, limit=self.PAGE_LIMIT)
            if after is not None:
                kwargs["after_id"] = after

            def get(kwargs: dict[str, Any] = kwargs) -> Any:
                timeout = self._bounds.timeout(self._timeout)
                return sdk_call(lambda: list_page(**kwargs, timeout=timeout), self._org.base_url)

            page = call_with_retry(lambda: self._bounds.call(get, where), self._policy, where,
                                   self._key)
            data = getattr(page, "data", None) or []
            if len(data) > self.PAGE_LIMIT:
                raise MalformedResponse(f"{where}: the page holds {len(data)} items, more than "
                                        f"the {self.PAGE_LIMIT} asked for; refused")
            items.extend(data)
            after = getattr(page, "last_id", None) if page.has_next_page() else None
            if not after:
                return items
            check_cursor(after, seen, where, "last_id")


def _text(item: Any, attr: str) -> str:
    value = getattr(item, attr, None)
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"a listed {type(item).__name__} has no valid '{attr}'")
    return storable(value)


def sdk_call(call: Callable[[], R], base_url: str) -> R:
    try:
        return call()
    except anthropic.APIStatusError as exc:
        error_type, message = error_from_body(exc.status_code, exc.body)
        raise TransportFailure(exc.status_code, error_type, message,
                               parse_retry_after(exc.response.headers.get("retry-after")))
    except anthropic.APITimeoutError:
        raise TransportFailure(None, "timeout", f"no answer from {base_url} in time")
    except anthropic.APIConnectionError:
        raise TransportFailure(None, "connection_error", f"could not connect to {base_url}")
