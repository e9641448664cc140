"""HTTP front of the simulator: routing, authentication, faults, request log.

Contracts
---------
- Every response is JSON with ``Content-Length`` and a ``request-id`` header. API errors are
  ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the status mapping
  400 invalid_request_error, 401 authentication_error, 403 permission_error,
  404 not_found_error, 429 rate_limit_error, 500 api_error, 529 overloaded_error.
- Authentication (``/v1/...`` only): the key is read from ``x-api-key`` or, when that header
  is absent, from ``Authorization: Bearer``; the legacy report endpoints
  (``usage_report/messages``, ``cost_report``) accept only ``x-api-key`` and also require
  ``anthropic-version`` (400 when missing). On the admin endpoints (everything under
  ``/v1/organizations/``) a configured admin key passes; a configured normal API key, or any
  key starting with ``sk-ant-api``, gets 403 permission_error; anything else, or no key, 401
  authentication_error (the legacy report endpoints are ``usage_report/messages``,
  ``cost_report`` and ``usage_report/claude_code``). The Models API (``/v1/models``, see
  :mod:`collectors.simulator.catalog`) is the other way round, as the real one: only a
  configured normal API key passes, and an admin key, an unknown key or no key gets 401
  authentication_error. The Analytics endpoints then require an ``anthropic-beta`` header
  containing ``analytics-usage-cost-2026-08-24`` (400). The legacy usage report gets the
  request's ``anthropic-beta`` values (several headers or a comma-separated list): grouping
  or filtering it by ``speed`` needs ``fast-mode-2026-02-01`` (400). No key is ever echoed or
  logged.
- Organizations without people dimensions (``SimulatedOrg.people_dimensions`` off; CLI
  ``--no-people-dimensions``, ``POST /_sim/people_dimensions``) get a 403 permission_error
  for Analytics requests grouping or filtering by product, actor, actor_type, rbac_group_id or
  user_profile_id.
- Request ids are deterministic: the n-th ``/v1`` request of a server gets the same id for
  the same seed.
- Control endpoints under ``/_sim/`` need no auth and are not logged: see
  :class:`SimulatorHandler`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from .endpoints import (
    ApiError,
    analytics_report,
    claude_code_report,
    get_api_key,
    get_workspace,
    invalid,
    legacy_cost_report,
    legacy_usage_report,
    list_api_keys,
    list_workspaces,
    normalize_query,
)
from .catalog import get_model, list_models
from .generator import SimulatedOrg, stable_suffix, parse_rfc3339

ANALYTICS_BETA = "analytics-usage-cost-2026-08-24"
KNOWN_VERSIONS = ("2023-01-01", "2023-06-01", "2026-10-21")
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
    529: "overloaded_error",
}
FAULT_KINDS = ("error", "missing_field", "wrong_type", "delay", "disconnect", "repeat_cursor",
               "oversized_page", "bad_amount")
#: The cursor a ``repeat_cursor`` fault hands out (unless the fault gives its ``value``).
REPEATED_CURSOR = "sim-repeated-cursor"

ANALYTICS_PATHS = {
    "/v1/organizations/analytics/usage": "usage",
    "/v1/organizations/analytics/cost": "cost",
}
LEGACY_USAGE_PATH = "/v1/organizations/usage_report/messages"
LEGACY_COST_PATH = "/v1/organizations/cost_report"
CLAUDE_CODE_PATH = "/v1/organizations/usage_report/claude_code"
LEGACY_PATHS = (LEGACY_USAGE_PATH, LEGACY_COST_PATH, CLAUDE_CODE_PATH)
WORKSPACES_PATH = "/v1/organizations/workspaces"
API_KEYS_PATH = "/v1/organizations/api_keys"
MODELS_PATH = "/v1/models"
DEFAULT_ADMIN_KEYS: tuple[str, ...] = ("sk-ant-admin01-sim",)
DEFAULT_API_KEYS: tuple[str, ...] = ("sk-ant-api03-sim",)


def error_type_for(status: int) -> str:
    """The error ``type`` for an HTTP status (4xx default invalid_request_error, 5xx api_error)."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


@dataclass
class Fault:
    """A queued fault: the next ``after`` requests whose path starts with ``path`` pass
    normally, then ``count`` requests get the fault (faults queue up in order: see
    :meth:`SimulatorState.take_fault`).

    Kinds: ``error`` (``status`` with a proper error body, ``retry-after`` header when
    ``retry_after`` is set), ``missing_field`` / ``wrong_type`` (a 200 page with ``field``,
    a dotted path in the first row, removed or given the wrong JSON type: a string becomes the
    number 12.5, anything else the string "lots"), ``delay`` (sleep ``seconds`` then answer
    normally), ``disconnect`` (close the connection without an answer).

    Hostile pages (analytics and legacy usage/cost/Claude Code reports): ``repeat_cursor`` (the page, read
    as a first page whatever cursor was sent, says ``has_more`` with the same ``next_page``
    every time: ``value`` or :data:`REPEATED_CURSOR`; ``empty`` true gives no rows),
    ``oversized_page`` (the page's rows repeated up to ``rows`` entries, whatever ``limit``
    asked), ``bad_amount`` (every cost row's ``field``, by default the amount, set to
    ``value``: any JSON value, e.g. ``"-50000"``, ``"1e400"``, ``"NaN"``; on the Claude Code
    report every ``model_breakdown`` item's ``estimated_cost.amount``).
    """

    path: str
    after: int = 0
    count: int = 1
    status: int = 500
    retry_after: str | None = None
    kind: str = "error"
    message: str | None = None
    field: str | None = None
    seconds: float = 0.0
    value: Any = None
    rows: int = 0
    empty: bool = False

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> Fault:
        """Build from a ``POST /_sim/faults`` body; raises ValueError naming a bad field."""
        path = spec.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("path: a URL path starting with '/' is required")
        kind = spec.get("kind", "error")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind: one of {', '.join(FAULT_KINDS)}")
        after = spec.get("after", 0)
        count = spec.get("count", 1)
        status = spec.get("status", 500)
        for name, value, lo in (("after", after, 0), ("count", count, 1), ("status", status, 100)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{name}: an integer >= {lo}")
        retry_after = spec.get("retry_after")
        if retry_after is not None:
            retry_after = str(retry_after)
        fld = spec.get("field")
        if fld is not None and not isinstance(fld, str):
            raise ValueError("field: a dotted path string")
        seconds = spec.get("seconds", 0)
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds: a number >= 0")
        message = spec.get("message")
        rows = spec.get("rows", 0)
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError("rows: an integer >= 0")
        if kind == "oversized_page" and rows < 1:
            raise ValueError("rows: an oversized_page fault needs rows >= 1")
        if kind == "bad_amount" and "value" not in spec:
            raise ValueError("value: a bad_amount fault needs the value to put in the amount")
        empty = spec.get("empty", False)
        if not isinstance(empty, bool):
            raise ValueError("empty: true or false")
        return cls(
            path=path,
            after=after,
            count=count,
            status=status,
            retry_after=retry_after,
            kind=kind,
            message=str(message) if message is not None else None,
            field=fld,
            seconds=float(seconds),
            value=spec.get("value"),
            rows=rows,
            empty=empty,
        )


@dataclass
class SimulatorState:
    """Mutable server state shared by handler threads (guarded by ``lock``)."""

    org: SimulatedOrg
    admin_keys: frozenset[str]
    api_keys: frozenset[str] = frozenset(DEFAULT_API_KEYS)
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[Fault] = field(default_factory=list)
    request_log: list[dict[str, Any]] = field(default_factory=list)
    request_count: int = 0
    slack_messages: list[str] = field(default_factory=list)

    def next_request_id(self) -> str:
        """A deterministic request id (``req_01`` + 24 chars) for the next API request."""
        with self.lock:
            self.request_count += 1
            n = self.request_count
        return "req_01" + stable_suffix(self.org.seed, f"request:{n}")

    def add_fault(self, fault: Fault) -> int:
        """Queue ``fault``; returns how many faults are pending."""
        with self.lock:
            self.faults.append(fault)
            return len(self.faults)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self.lock:
            self.faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        """The fault to apply to a request for ``path``, if any.

        Only the earliest-queued fault whose ``path`` prefixes the request's path looks at a
        request: while its ``after`` is positive the request passes normally and ``after``
        drops by one; otherwise the request gets the fault and ``count`` drops by one (the
        fault is removed at 0, and the next queued fault takes over from the next request).
        So ``[{count: 1, status: 529}, {after: 1, count: 2, status: 500}]`` gives
        529, 200, 500, 500, 200.
        """
        with self.lock:
            for fault in self.faults:
                if not path.startswith(fault.path):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return Fault(**asdict(fault))
            return None

    def log(self, entry: dict[str, Any]) -> None:
        """Append one request to the request log."""
        with self.lock:
            self.request_log.append(entry)

    def logged(self) -> list[dict[str, Any]]:
        """A copy of the request log."""
        with self.lock:
            return [dict(e) for e in self.request_log]

    def clear_log(self) -> None:
        """Empty the request log."""
        with self.lock:
            self.request_log.clear()


def _corrupt(body: Any, path: str, kind: str, field_path: str | None) -> None:
    """Apply a ``missing_field`` / ``wrong_type`` fault to a 200 body in place."""
    target: Any = None
    default_field = None
    data = body.get("data") if isinstance(body, dict) else None
    if (path in ANALYTICS_PATHS or path.startswith(WORKSPACES_PATH) or path.startswith(API_KEYS_PATH)
            or path == MODELS_PATH):
        if isinstance(data, list) and data:
            target = data[0]
        default_field = {
            "usage": "usage.output_tokens",
            "cost": "cost.amount",
        }.get(ANALYTICS_PATHS.get(path, ""), "display_name" if path == MODELS_PATH else "name")
    elif path == CLAUDE_CODE_PATH:
        if isinstance(data, list) and data:
            target = data[0]
        default_field = "core_metrics.num_sessions"
    elif path in (LEGACY_USAGE_PATH, LEGACY_COST_PATH):
        for bucket in data or []:
            if bucket.get("results"):
                target = bucket["results"][0]
                break
        default_field = "output_tokens" if path == LEGACY_USAGE_PATH else "amount"
    if target is None:
        target, default_field = body, "data"
    parts = (field_path or default_field or "data").split(".")
    for part in parts[:-1]:
        nxt = target.get(part) if isinstance(target, dict) else None
        if not isinstance(nxt, dict):
            return
        target = nxt
    last = parts[-1]
    if not isinstance(target, dict):
        return
    if kind == "missing_field":
        target.pop(last, None)
    else:
        current = target.get(last)
        target[last] = 12.5 if isinstance(current, str) else "lots"


def _report_rows(body: Any, path: str) -> list[Any]:
    """The row objects of a report page: analytics ``data`` items, legacy bucket results, the
    ``model_breakdown`` items of Claude Code records."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    if path == CLAUDE_CODE_PATH:
        return [m for record in data if isinstance(record, dict)
                for m in record.get("model_breakdown") or []]
    if path in (LEGACY_USAGE_PATH, LEGACY_COST_PATH):
        return [r for bucket in data if isinstance(bucket, dict)
                for r in bucket.get("results") or []]
    return data


def _hostile(body: Any, path: str, fault: Fault) -> None:
    """Apply a ``repeat_cursor`` / ``oversized_page`` / ``bad_amount`` fault to a 200 body."""
    if not isinstance(body, dict):
        return
    if fault.kind == "repeat_cursor":
        body["has_more"] = True
        body["next_page"] = str(fault.value) if fault.value is not None else REPEATED_CURSOR
        if fault.empty:
            body["data"] = []
    elif fault.kind == "oversized_page":
        data = body.get("data") or [{}]
        body["data"] = [data[i % len(data)] for i in range(fault.rows)]
    elif fault.kind == "bad_amount":
        default = ("amount" if path in (LEGACY_USAGE_PATH, LEGACY_COST_PATH)
                   else "estimated_cost.amount" if path == CLAUDE_CODE_PATH else "cost.amount")
        parts = (fault.field or default).split(".")
        for row in _report_rows(body, path):
            target = row
            for part in parts[:-1]:
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[parts[-1]] = fault.value


class SimulatorHandler(BaseHTTPRequestHandler):
    """Routes requests. Control endpoints (no auth):

    - ``POST /_sim/faults`` queue a fault (see :class:`Fault`); ``GET`` lists, ``DELETE`` clears.
    - ``POST /_sim/revise`` ``{"hours": 6}``: late data (``org.revise``); returns the revision.
    - ``GET /_sim/truth?starting_at=&ending_at=[&people=1]``: ``org.truth`` as JSON (with
      ``people=1`` also ``by_person``, ``by_product`` and ``by_rbac_group``; the last overlaps,
      see ``SimulatedOrg.truth``).
    - ``GET /_sim/requests`` / ``DELETE /_sim/requests``: API requests served so far,
      ``[{"method", "path", "query": {name: [values]}, "status", "received"}]`` (plus
      ``"fault"`` when one applied); query names as sent (``group_by[]``); ``received`` is
      the wall-clock second the request arrived (``time.time()``); headers are never recorded.
    - ``GET /_sim/truth`` with ``people=1`` also has ``by_person_day`` (UTC day -> actor key ->
      dollars) and ``claude_code`` (UTC day -> actor key -> the Claude Code record's
      ``sessions``, ``tokens``, ``cost_usd``).
    - ``GET /_sim/org``: ids, names, revision and clock of the organization, its RBAC groups,
      actors (people, the deleted user, service accounts, the federated identity), products,
      ``organization_id``, whether ``fast_and_us`` and ``people_dimensions`` are on, and the
      ``runaway`` developer: ``{"day": "2026-11-23", "actor_key", "email"}``.
    - ``POST /_sim/people_dimensions`` ``{"on": true | false}``: serve the people and product
      Analytics dimensions to this organization or answer them with a 403; returns
      ``/_sim/org``.
    - ``POST /_sim/names`` ``{"api_keys": {"<id or slug>": "<name>"}, "workspaces": {...}}``:
      rename keys and workspaces (any text: hostile names for tests); returns ``/_sim/org``.
    - ``POST /_sim/clock`` ``{"now": "<RFC 3339>" | null}``: fix the clock or follow the real one.
    - ``POST /_sim/slack/<anything>``: a Slack incoming-webhook sink for the demo (answers
      "ok"); ``GET /_sim/slack`` lists what it received.
    """

    server_version = "spendwatch-simulator/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> SimulatorState:
        return self.server.state  # type: ignore[attr-defined,no-any-return]

    # Silence the default per-request logging (it would print request lines to stderr).
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    # ---- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        raw_query = parse_qs(split.query, keep_blank_values=True)
        body = self._read_body()
        try:
            if path.startswith("/_sim/") or path == "/_sim":
                self._control(method, path, raw_query, body)
            else:
                self._api(method, path, raw_query)
        except Exception:  # pragma: no cover - last resort, keeps the server alive
            traceback.print_exc(file=sys.stderr)
            try:
                self._send_json(500, {"type": "error", "error": {"type": "api_error", "message": "Internal error."}})
            except OSError:
                pass

    # ---- API -------------------------------------------------------------------------------

    def _api(self, method: str, path: str, raw_query: dict[str, list[str]]) -> None:
        """Answer one API request. The request is logged *before* the answer is sent, so a
        client that reads ``/_sim/requests`` right after its response always sees it."""
        state = self.state
        request_id = state.next_request_id()
        entry: dict[str, Any] = {"method": method, "path": path, "query": raw_query,
                                 "status": None, "received": time.time()}
        fault = state.take_fault(path)
        if fault is not None:
            entry["fault"] = fault.kind
        if fault is not None and fault.kind == "disconnect":
            entry["status"] = 0
            state.log(entry)
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        headers: dict[str, str] = {"request-id": request_id}
        body: dict[str, Any]
        try:
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.seconds)
            if fault is not None and fault.kind == "error":
                retry = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
                message = fault.message or f"Simulated {error_type_for(fault.status)}."
                raise ApiError(fault.status, error_type_for(fault.status), message, retry)
            query = raw_query
            if fault is not None and fault.kind == "repeat_cursor":  # read as a first page
                query = {k: v for k, v in raw_query.items() if k not in ("page", "after_id")}
            status, body = 200, self._route(method, path, normalize_query(query))
            if fault is not None and fault.kind in ("missing_field", "wrong_type"):
                _corrupt(body, path, fault.kind, fault.field)
            if fault is not None and fault.kind in ("repeat_cursor", "oversized_page",
                                                    "bad_amount"):
                _hostile(body, path, fault)
        except ApiError as err:
            status = err.status
            body = {
                "type": "error",
                "error": {"type": err.error_type, "message": err.message},
                "request_id": request_id,
            }
            headers.update(err.headers)
        entry["status"] = status
        state.log(entry)
        self._send_json(status, body, headers)

    def _authenticate(self, legacy: bool, models: bool = False) -> None:
        """Check the request's key (see the module contracts); raise ApiError 401/403.

        ``models`` selects the Models API rule (normal keys only) instead of the admin one.
        """
        key = self.headers.get("x-api-key")
        if key is None and legacy:
            if self.headers.get("authorization"):
                raise ApiError(401, "authentication_error", "x-api-key header is required for this endpoint.")
            raise ApiError(401, "authentication_error", "x-api-key header is required.")
        if key is None:
            auth = self.headers.get("authorization") or ""
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        if not key:
            raise ApiError(401, "authentication_error", "x-api-key header is required.")
        if models:
            if key in self.state.api_keys:
                return
            raise ApiError(401, "authentication_error", "invalid x-api-key")
        if key in self.state.admin_keys:
            return
        if key in self.state.api_keys or key.startswith("sk-ant-api"):
            raise ApiError(
                403,
                "permission_error",
                "This endpoint requires an Admin API key (sk-ant-admin...); a standard API key cannot use it.",
            )
        raise ApiError(401, "authentication_error", "invalid x-api-key")

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        org = self.state.org
        known = (
            path in ANALYTICS_PATHS
            or path in LEGACY_PATHS
            or path == WORKSPACES_PATH
            or path.startswith(WORKSPACES_PATH + "/")
            or path == API_KEYS_PATH
            or path.startswith(API_KEYS_PATH + "/")
            or path == MODELS_PATH
            or path.startswith(MODELS_PATH + "/")
        )
        if not known:
            raise ApiError(404, "not_found_error", "Not found.")
        if method != "GET":
            raise ApiError(405, "invalid_request_error", f"Method {method} is not allowed on this path.")
        legacy = path in LEGACY_PATHS
        if path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            self._authenticate(legacy=False, models=True)
            if path == MODELS_PATH:
                return list_models(query)
            return get_model(path[len(MODELS_PATH) + 1 :])
        self._authenticate(legacy)
        now = org.now()
        betas = [b.strip() for b in ",".join(self.headers.get_all("anthropic-beta") or []).split(",")]
        if path in ANALYTICS_PATHS:
            if ANALYTICS_BETA not in betas:
                raise invalid(f"anthropic-beta: this endpoint is in beta; send the header anthropic-beta: {ANALYTICS_BETA}.")
            return analytics_report(org, ANALYTICS_PATHS[path], query, now)
        if legacy:
            version = self.headers.get("anthropic-version")
            if not version:
                raise invalid("anthropic-version: header is required (use 2023-06-01).")
            if version not in KNOWN_VERSIONS:
                raise invalid(f"anthropic-version: unknown version {version!r}.")
            if path == LEGACY_USAGE_PATH:
                return legacy_usage_report(org, query, now, betas=frozenset(betas))
            if path == CLAUDE_CODE_PATH:
                return claude_code_report(org, query, now)
            return legacy_cost_report(org, query, now)
        if path == WORKSPACES_PATH:
            return list_workspaces(org, query)
        if path.startswith(WORKSPACES_PATH + "/"):
            return get_workspace(org, path[len(WORKSPACES_PATH) + 1 :])
        if path == API_KEYS_PATH:
            return list_api_keys(org, query)
        return get_api_key(org, path[len(API_KEYS_PATH) + 1 :])

    # ---- control ---------------------------------------------------------------------------

    def _control(self, method: str, path: str, raw_query: dict[str, list[str]], body: bytes) -> None:
        state = self.state
        org = state.org

        def bad(message: str) -> None:
            self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})

        def parse_body() -> dict[str, Any] | None:
            if not body.strip():
                return {}
            try:
                parsed = json.loads(body)
            except ValueError:
                bad("body: not valid JSON")
                return None
            if not isinstance(parsed, dict):
                bad("body: a JSON object is required")
                return None
            return parsed

        if path == "/_sim/faults":
            if method == "POST":
                spec = parse_body()
                if spec is None:
                    return
                try:
                    fault = Fault.from_json(spec)
                except ValueError as exc:
                    bad(str(exc))
                    return
                pending = state.add_fault(fault)
                self._send_json(200, {"queued": asdict(fault), "pending": pending})
                return
            if method == "DELETE":
                state.clear_faults()
                self._send_json(200, {"pending": 0})
                return
            if method == "GET":
                with state.lock:
                    pending_faults = [asdict(f) for f in state.faults]
                self._send_json(200, {"faults": pending_faults})
                return
        elif path == "/_sim/revise" and method == "POST":
            spec = parse_body()
            if spec is None:
                return
            hours = spec.get("hours", 6)
            if not isinstance(hours, int) or isinstance(hours, bool) or hours < 1:
                bad("hours: an integer >= 1")
                return
            self._send_json(200, {"revision": org.revise(hours)})
            return
        elif path == "/_sim/truth" and method == "GET":
            try:
                start = parse_rfc3339(raw_query["starting_at"][-1])
                end = parse_rfc3339(raw_query["ending_at"][-1])
            except (KeyError, IndexError, ValueError):
                bad("starting_at and ending_at: RFC 3339 date-times are required")
                return
            people = raw_query.get("people", ["0"])[-1] in ("1", "true")
            self._send_json(200, org.truth(start, end, people=people))
            return
        elif path == "/_sim/requests":
            if method == "GET":
                self._send_json(200, state.logged())
                return
            if method == "DELETE":
                state.clear_log()
                self._send_json(200, [])
                return
        elif path == "/_sim/names" and method == "POST":
            # Hostile names for tests: {"api_keys": {id or slug: name}, "workspaces": {...}}.
            spec = parse_body()
            if spec is None:
                return
            renames = {k: spec.get(k) or {} for k in ("api_keys", "workspaces")}
            if set(spec) - set(renames) or not all(isinstance(v, dict) for v in renames.values()):
                bad("body: {\"api_keys\": {id or slug: name}, \"workspaces\": {...}}")
                return
            try:
                org.rename(**renames)
            except ValueError as exc:
                bad(str(exc))
                return
            self._send_json(200, org.describe())
            return
        elif path == "/_sim/org" and method == "GET":
            self._send_json(200, org.describe())
            return
        elif path == "/_sim/people_dimensions" and method == "POST":
            spec = parse_body()
            if spec is None:
                return
            on = spec.get("on")
            if not isinstance(on, bool):
                bad("on: true or false")
                return
            org.people_dimensions = on
            self._send_json(200, org.describe())
            return
        elif path.startswith("/_sim/slack/") and method == "POST":
            # A Slack incoming-webhook sink for the demo: answers as Slack does ("ok").
            with state.lock:
                state.slack_messages.append(body.decode("utf-8", "replace"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return
        elif path == "/_sim/slack" and method == "GET":
            with state.lock:
                messages = [json.loads(m) for m in state.slack_messages]
            self._send_json(200, messages)
            return
        elif path == "/_sim/clock" and method == "POST":
            spec = parse_body()
            if spec is None:
                return
            value = spec.get("now")
            try:
                org.set_now(parse_rfc3339(value) if value is not None else None)
            except (TypeError, ValueError):
                bad("now: an RFC 3339 date-time or null")
                return
            self._send_json(200, org.describe())
            return
        self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": "Not found."}})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Closing must not wait for handler threads parked on a client's keep-alive connection.
    block_on_close = False
    allow_reuse_address = True
    state: SimulatorState

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection-level errors (client went away...) are not worth a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class SimulatorServer:
    """A running simulator: ``url`` (``http://host:port``), ``org``, ``close()``.

    Also usable as a context manager. Helpers mirror the control endpoints for in-process
    use: :meth:`add_fault`, :meth:`clear_faults`, :meth:`requests`, :meth:`clear_requests`.
    """

    def __init__(self, org: SimulatedOrg, admin_keys: Sequence[str], host: str = "127.0.0.1", port: int = 0,
                 api_keys: Sequence[str] = DEFAULT_API_KEYS):
        if not admin_keys:
            raise ValueError("at least one admin key is required")
        if set(admin_keys) & set(api_keys):
            raise ValueError("a key cannot be both an admin key and a normal API key")
        self.state = SimulatorState(org=org, admin_keys=frozenset(admin_keys), api_keys=frozenset(api_keys))
        self._httpd = _HTTPServer((host, port), SimulatorHandler)
        self._httpd.state = self.state
        self._thread: threading.Thread | None = None

    @property
    def org(self) -> SimulatedOrg:
        """The simulated organization behind this server."""
        return self.state.org

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> SimulatorServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="spendwatch-simulator", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_fault(self, **spec: Any) -> None:
        """Queue a fault, as ``POST /_sim/faults`` would (raises ValueError on a bad spec)."""
        self.state.add_fault(Fault.from_json(spec))

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self.state.clear_faults()

    def requests(self) -> list[dict[str, Any]]:
        """The API requests served so far (see ``GET /_sim/requests``)."""
        return self.state.logged()

    def clear_requests(self) -> None:
        """Empty the request log."""
        self.state.clear_log()


def start_simulator(
    seed: int = 7,
    admin_keys: Sequence[str] = DEFAULT_ADMIN_KEYS,
    now: datetime | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    api_keys: Sequence[str] = DEFAULT_API_KEYS,
    fast_and_us: bool = False,
    people_dimensions: bool = True,
) -> SimulatorServer:
    """Start a simulator for ``seed`` in a daemon thread and return it (already serving).

    ``now`` None follows the real clock at each request; a tz-aware ``now`` makes every
    answer reproducible. ``port`` 0 picks a free port (read it from ``.url``). ``admin_keys``
    open the admin endpoints, ``api_keys`` (normal keys) the Models API; a key may not be in
    both (ValueError). ``fast_and_us`` serves fast mode and US-only inference traffic on the
    models that offer them (off by default: estimates do not price them yet).
    ``people_dimensions`` False makes the organization one without the people and product
    Analytics dimensions (403 on them).
    """
    if isinstance(admin_keys, str):
        admin_keys = (admin_keys,)
    if isinstance(api_keys, str):
        api_keys = (api_keys,)
    org = SimulatedOrg(seed=seed, now=now, fast_and_us=fast_and_us, people_dimensions=people_dimensions)
    return SimulatorServer(org, admin_keys, host=host, port=port, api_keys=api_keys).start()
