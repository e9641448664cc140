"""The usage/cost API simulator, run as a real separate process and read with the real SDK."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import anthropic
import pytest
import requests

from collectors.simulator.generator import COST_TYPES, SimulatedOrg
from spendwatch.pricing import default_price_table

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-ant-admin01-test-simulator"
NOW = "2026-11-24T12:00:00Z"
UTC = timezone.utc
BETA = {"anthropic-beta": "analytics-usage-cost-2026-08-24"}
LEGACY = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
DAY = "2026-11-23"
DAY_START = "2026-11-23T00:00:00Z"
DAY_END = "2026-11-24T00:00:00Z"


class Sim:
    """A simulator process: ``url``, ``proc``, and small HTTP helpers."""

    def __init__(self, *extra: str, seed: int = 7) -> None:
        cmd = [sys.executable, "-m", "collectors.simulator", "--port", "0", "--seed", str(seed),
               "--admin-key", KEY, "--now", NOW, *extra]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        prefix = "spendwatch simulator listening on "
        assert line.startswith(prefix), (line, self.errors())
        self.url = line[len(prefix):].strip()
        self.http = requests.Session()

    def get(self, path: str, params: Any = None, headers: dict[str, str] | None = None,
            key: str | None = KEY) -> requests.Response:
        hdrs = dict(headers or {})
        if key is not None and "x-api-key" not in hdrs:
            hdrs["Authorization"] = f"Bearer {key}"
        return self.http.get(self.url + path, params=params, headers=hdrs, timeout=10)

    def analytics(self, kind: str, params: Any) -> requests.Response:
        return self.get(f"/v1/organizations/analytics/{kind}", params, BETA)

    def legacy(self, path: str, params: Any) -> requests.Response:
        return self.http.get(self.url + path, params=params, headers=LEGACY, timeout=10)

    def control(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        resp = self.http.request(method, self.url + path, json=body, params=params, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def client(self, **kw: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=KEY, base_url=self.url, max_retries=kw.pop("max_retries", 0), **kw)

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> int:
        """SIGTERM the process; returns its exit code. It must have written nothing else: no
        second stdout line, no traceback, never the key."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=10)
            assert self.proc.stdout is not None
            assert self.proc.stdout.read() == ""
            errors = self.errors()
            assert KEY not in errors and "Traceback" not in errors, errors
        finally:
            self.http.close()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.stderr.close()
        return code


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """One simulator process shared by the read-only tests (faults are cleared after each)."""
    server = Sim()
    yield server
    assert server.stop() == 0


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        server: Sim = request.getfixturevalue("sim")
        server.control("DELETE", "/_sim/faults")


def _row_key(row: Any) -> tuple[Any, ...]:
    group = row["group"] if isinstance(row, dict) else row.group.model_dump()
    start = row["starting_at"] if isinstance(row, dict) else row.starting_at.isoformat()
    return (start, tuple(sorted(group.items(), key=lambda kv: kv[0])))


def _error(resp: requests.Response, status: int, error_type: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"].startswith("req_")
    assert resp.headers["request-id"] == body["request_id"]
    return str(body["error"]["message"])


# ---------------------------------------------------------------------------------------------
# Analytics API with the real SDK


def test_sdk_pages_usage_without_duplicates_and_matches_one_big_read(sim: Sim) -> None:
    client = sim.client()
    usage = client.beta.organization.analytics.usage

    def read(limit: int) -> Any:
        return usage.list(
            starting_at=datetime(2026, 11, 21, tzinfo=UTC),
            ending_at=datetime(2026, 11, 24, tzinfo=UTC),
            time_bucket_width="1d",
            group_by=["model", "api_key_id", "workspace_id"],
            limit=limit,
        )

    sim.control("DELETE", "/_sim/requests")
    small = list(read(7))
    log = sim.control("GET", "/_sim/requests")
    assert len(log) >= 4, "expected several pages"
    assert all(entry["query"]["group_by[]"] == ["model", "api_key_id", "workspace_id"] for entry in log)
    assert all("page" in entry["query"] for entry in log[1:])

    big_page = read(1000)
    assert big_page.has_more is False and big_page.next_page is None
    assert big_page.data_refreshed_at == datetime(2026, 11, 24, 12, tzinfo=UTC)
    big = big_page.data

    keys = [_row_key(r) for r in small]
    assert len(keys) == len(set(keys)), "a row appeared on two pages"
    assert [r.model_dump() for r in small] == [r.model_dump() for r in big]
    # Default order: total_tokens descending.
    totals = [r.usage.total_tokens for r in big]
    assert totals == sorted(totals, reverse=True)
    # Every group key of the SDK type is present; ungrouped ones are null.
    raw = sim.analytics("usage", {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["model"]}).json()
    assert raw["data"][0]["group"].keys() >= {"model", "workspace_id", "api_key_id", "actor", "product", "speed"}
    assert raw["data"][0]["group"]["workspace_id"] is None
    # Code execution shows up as a null-model row with zero tokens and requests.
    null_rows = [r for r in raw["data"] if r["group"]["model"] is None]
    assert len(null_rows) == 1
    assert null_rows[0]["usage"]["total_tokens"] == 0 and null_rows[0]["usage"]["requests"] > 0


def test_cost_fanout_rows_stay_on_one_page(sim: Sim) -> None:
    params: dict[str, Any] = {
        "starting_at": DAY_START,
        "ending_at": DAY_END,
        "time_bucket_width": "1h",
        "group_by[]": ["model", "cost_type", "token_type"],
        "limit": 5,
    }
    seen: dict[tuple[Any, ...], int] = {}
    fanned: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    page_no = 0
    longest = 0
    while True:
        body = sim.analytics("cost", params).json()
        combos = {(r["starting_at"], r["group"]["model"]) for r in body["data"]}
        assert len(combos) <= 5
        longest = max(longest, len(body["data"]))
        for combo in combos:
            assert combo not in seen, "a (bucket, group) was split across pages"
            seen[combo] = page_no
        for r in body["data"]:
            assert r["cost"]["requests"] is None
            assert Decimal(r["cost"]["amount"]) != 0
            if r["group"]["cost_type"] == "tokens":
                assert r["group"]["token_type"] is not None
            else:
                assert r["group"]["token_type"] is None
            fanned[(r["starting_at"], r["group"]["model"])] += Decimal(r["cost"]["amount"])
        page_no += 1
        if not body["has_more"]:
            break
        params["page"] = body["next_page"]
    assert page_no > 3 and longest > 5, "fan-out rows should make pages longer than limit"

    combined = sim.analytics("cost", {"starting_at": DAY_START, "ending_at": DAY_END, "time_bucket_width": "1h",
                                      "group_by[]": ["model"], "limit": 1000}).json()
    assert combined["has_more"] is False
    expected = {(r["starting_at"], r["group"]["model"]): Decimal(r["cost"]["amount"]) for r in combined["data"]}
    assert all(isinstance(r["cost"]["requests"], int) for r in combined["data"])
    assert dict(fanned) == expected


def test_usage_priced_with_table_equals_cost_endpoint_and_truth(sim: Sim) -> None:
    table = default_price_table()
    client = sim.client()
    usage = client.beta.organization.analytics.usage.list(
        starting_at=DAY_START, ending_at=DAY_END, time_bucket_width="1h",
        group_by=["model", "service_tier", "context_window"], limit=1000,
    )
    assert usage.has_more is False
    priced = Decimal(0)
    searches = 0
    components = {
        "input": lambda u: u.uncached_input_tokens,
        "cache_write_5m": lambda u: u.cache_creation.ephemeral_5m_input_tokens,
        "cache_write_1h": lambda u: u.cache_creation.ephemeral_1h_input_tokens,
        "cache_read": lambda u: u.cache_read_input_tokens,
        "output": lambda u: u.output_tokens,
    }
    for row in usage.data:
        searches += row.usage.server_tool_use.web_search_requests
        if row.group.model is None:
            assert row.usage.total_tokens == 0
            continue
        for component, get in components.items():
            price = table.unit_price(row.group.model, component, date(2026, 11, 23),
                                     row.group.service_tier)
            assert price is not None
            priced += get(row.usage) * price / 1_000_000 * 100
    cost_rows = client.beta.organization.analytics.cost.list(
        starting_at=DAY_START, ending_at=DAY_END, time_bucket_width="1h", group_by=["cost_type"], limit=1000,
    ).data
    by_type: dict[str, Decimal] = defaultdict(Decimal)
    for cost_row in cost_rows:
        assert cost_row.cost.amount == cost_row.cost.list_amount and cost_row.cost.currency == "USD"
        by_type[str(cost_row.group.cost_type)] += Decimal(cost_row.cost.amount)
    assert set(by_type) == {"tokens", "web_search", "code_execution", "session_usage"}
    assert priced == by_type["tokens"]
    assert round(priced) == round(by_type["tokens"])  # to the cent, and exactly

    truth = sim.control("GET", "/_sim/truth", params={"starting_at": DAY_START, "ending_at": DAY_END})
    assert Decimal(truth["token_cost_usd"]) * 100 == by_type["tokens"]
    assert Decimal(truth["cost_usd"]) * 100 == sum(by_type.values())
    assert Decimal(truth["web_search_cost_usd"]) * 100 == by_type["web_search"]
    assert truth["web_search_requests"] == searches
    assert sum(Decimal(v) for v in truth["by_model"].values()) == Decimal(truth["cost_usd"])

    # No time bucket: one row for the whole range, same total.
    whole = sim.analytics("cost", {"starting_at": DAY_START, "ending_at": DAY_END}).json()["data"]
    assert len(whole) == 1
    assert Decimal(whole[0]["cost"]["amount"]) == sum(by_type.values())


def test_legacy_cost_day_equals_analytics_cost_day(sim: Sim) -> None:
    legacy = sim.legacy("/v1/organizations/cost_report",
                        {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["workspace_id", "description"]})
    assert legacy.status_code == 200, legacy.text
    buckets = legacy.json()["data"]
    assert len(buckets) == 1 and buckets[0]["starting_at"] == DAY_START
    rows = buckets[0]["results"]
    legacy_total = sum((Decimal(r["amount"]) for r in rows), Decimal(0))
    descriptions = {r["description"] for r in rows}
    assert {"Web Search Usage", "Code Execution Usage", "Session Usage"} <= descriptions
    assert "Claude Sonnet 5.5 Usage - Input Tokens" in descriptions
    assert "Claude Haiku 5.5 Usage - Output Tokens (Batch)" in descriptions
    assert any(r["workspace_id"] is None for r in rows)

    analytics = sim.analytics("cost", {"starting_at": DAY_START, "ending_at": DAY_END, "time_bucket_width": "1d",
                                       "group_by[]": ["api_key_id"], "limit": 1000}).json()["data"]
    analytics_total = sum((Decimal(r["cost"]["amount"]) for r in analytics), Decimal(0))
    assert legacy_total == analytics_total
    assert legacy_total.quantize(Decimal("0.01")) == analytics_total.quantize(Decimal("0.01"))

    ungrouped = sim.legacy("/v1/organizations/cost_report", {"starting_at": DAY_START, "ending_at": DAY_END}).json()
    only = ungrouped["data"][0]["results"]
    assert len(only) == 1 and Decimal(only[0]["amount"]) == legacy_total
    assert only[0]["description"] is None and only[0]["model"] is None


def test_legacy_usage_reports_default_workspace_as_null(sim: Sim) -> None:
    org = sim.control("GET", "/_sim/org")
    default_id = next(w["id"] for w in org["workspaces"] if w["is_default"])
    legacy = sim.legacy("/v1/organizations/usage_report/messages",
                        {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": "workspace_id"}).json()
    assert legacy["has_more"] is False
    rows = legacy["data"][0]["results"]
    by_ws = {r["workspace_id"]: r["output_tokens"] for r in rows}
    assert None in by_ws and default_id not in by_ws
    assert all(r["model"] is None and r["api_key_id"] is None for r in rows)

    analytics = sim.analytics("usage", {"starting_at": DAY_START, "ending_at": DAY_END,
                                        "group_by[]": "workspace_id"}).json()["data"]
    a_by_ws = {r["group"]["workspace_id"]: r["usage"]["output_tokens"] for r in analytics}
    assert None not in a_by_ws
    assert a_by_ws.pop(default_id) == by_ws.pop(None)
    assert a_by_ws == by_ws

    # Hourly buckets: every bucket up to now is present, empty results allowed, limit counts buckets.
    hourly = sim.legacy("/v1/organizations/usage_report/messages",
                        {"starting_at": "2026-11-24T00:00:00Z", "bucket_width": "1h", "limit": 168}).json()
    assert len(hourly["data"]) == 12 and hourly["has_more"] is False
    assert hourly["data"][-1]["starting_at"] == "2026-11-24T11:00:00Z"
    paged = sim.legacy("/v1/organizations/usage_report/messages",
                       {"starting_at": "2026-11-24T00:00:00Z", "bucket_width": "1h", "limit": 5})
    first = paged.json()
    assert len(first["data"]) == 5 and first["has_more"] is True
    second = sim.legacy("/v1/organizations/usage_report/messages",
                        {"starting_at": "2026-11-24T00:00:00Z", "bucket_width": "1h", "limit": 5,
                         "page": first["next_page"]}).json()
    assert second["data"][0]["starting_at"] == "2026-11-24T05:00:00Z"


def test_filters(sim: Sim) -> None:
    base = {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["model", "api_key_id", "service_tier"],
            "limit": 1000}
    rows = sim.analytics("usage", dict(base, **{"models[]": "claude-opus-5-5"})).json()["data"]
    assert rows and {r["group"]["model"] for r in rows} == {"claude-opus-5-5"}
    rows = sim.analytics("usage", dict(base, **{"api_key_ids[]": ""})).json()["data"]
    assert rows and {r["group"]["api_key_id"] for r in rows} == {None}  # Console Workbench
    rows = sim.analytics("cost", dict(base, **{"service_tiers[]": "batch"})).json()["data"]
    assert rows and {r["group"]["service_tier"] for r in rows} == {"batch"}
    _error(sim.analytics("usage", dict(base, **{"service_tiers[]": "gold"})), 400, "invalid_request_error")


def test_legacy_validation(sim: Sim) -> None:
    usage = "/v1/organizations/usage_report/messages"
    _error(sim.legacy(usage, {"starting_at": DAY_START, "limit": 32}), 400, "invalid_request_error")
    assert sim.legacy(usage, {"starting_at": DAY_START, "bucket_width": "1h", "limit": 168}).status_code == 200
    _error(sim.legacy(usage, {"starting_at": DAY_START, "bucket_width": "1h", "limit": 169}), 400,
           "invalid_request_error")
    _error(sim.legacy(usage, {"ending_at": DAY_END}), 400, "invalid_request_error")
    _error(sim.legacy(usage, {"starting_at": DAY_START, "group_by[]": "colour"}), 400, "invalid_request_error")
    cost = "/v1/organizations/cost_report"
    _error(sim.legacy(cost, {"starting_at": DAY_START, "bucket_width": "1h"}), 400, "invalid_request_error")
    _error(sim.legacy(cost, {"starting_at": DAY_START, "group_by[]": "model"}), 400, "invalid_request_error")
    # Legacy history goes back further than the Analytics API's 2026-01-01.
    old = sim.legacy(cost, {"starting_at": "2025-09-01T00:00:00Z", "limit": 2}).json()
    assert old["has_more"] is True and all(b["results"] for b in old["data"])
    before = sim.legacy(cost, {"starting_at": "2025-08-30T00:00:00Z", "limit": 2}).json()
    assert [b["results"] for b in before["data"]] == [[], []]
    # The legacy endpoints take the key only in x-api-key.
    _error(sim.get(cost, {"starting_at": DAY_START}, {"anthropic-version": "2023-06-01"}), 401,
           "authentication_error")


# ---------------------------------------------------------------------------------------------
# Validation and auth


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"starting_at": "2026-10-01T00:00:00Z", "ending_at": "2026-11-02T00:00:00Z"}, "31 days"),
        ({"starting_at": "2025-12-31T00:00:00Z", "ending_at": "2026-01-02T00:00:00Z"}, "starting_at"),
        ({"starting_at": DAY_START, "ending_at": DAY_END,
          "group_by[]": ["model", "workspace_id", "api_key_id", "service_tier", "context_window", "speed"]},
         "group_by"),
        ({"starting_at": DAY_START, "ending_at": DAY_END, "limit": 0}, "limit"),
        ({"starting_at": DAY_START, "ending_at": DAY_END, "limit": 1001}, "limit"),
        ({"starting_at": DAY_START, "time_bucket_width": "1h"}, "ending_at"),
        ({"starting_at": DAY_START, "ending_at": "2026-11-24T00:01:00Z", "time_bucket_width": "1m"}, "24 hours"),
        ({"ending_at": DAY_END}, "starting_at"),
        ({"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": "colour"}, "group_by"),
        ({"starting_at": DAY_START, "ending_at": DAY_END, "time_bucket_width": "1w"}, "time_bucket_width"),
        ({"starting_at": "2026-11-23T00:00:00", "ending_at": DAY_END}, "starting_at"),
    ],
)
def test_analytics_validation_errors(sim: Sim, params: dict[str, Any], names: str) -> None:
    message = _error(sim.analytics("usage", params), 400, "invalid_request_error")
    assert names in message


def test_cost_group_by_fanout_dims_do_not_count_and_usage_rejects_them(sim: Sim) -> None:
    five = ["model", "workspace_id", "api_key_id", "service_tier", "context_window"]
    ok = sim.analytics("cost", {"starting_at": DAY_START, "ending_at": DAY_END,
                                "group_by[]": five + ["cost_type", "token_type"], "limit": 3})
    assert ok.status_code == 200, ok.text
    _error(sim.analytics("usage", {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": "cost_type"}),
           400, "invalid_request_error")


def test_beta_header_and_cursor_checks(sim: Sim) -> None:
    params = {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": "model", "limit": 2}
    assert "anthropic-beta" in _error(sim.get("/v1/organizations/analytics/usage", params), 400,
                                      "invalid_request_error")
    first = sim.analytics("usage", params).json()
    assert first["has_more"] is True
    changed = dict(params, limit=3, page=first["next_page"])
    assert "page" in _error(sim.analytics("usage", changed), 400, "invalid_request_error")
    assert "page" in _error(sim.analytics("usage", dict(params, page="garbage!")), 400, "invalid_request_error")


def test_auth_errors(sim: Sim) -> None:
    params = {"starting_at": DAY_START, "ending_at": DAY_END}
    bad = sim.get("/v1/organizations/analytics/usage", params, BETA, key="sk-ant-admin01-wrong")
    _error(bad, 401, "authentication_error")
    assert "sk-ant-admin01-wrong" not in bad.text
    _error(sim.get("/v1/organizations/analytics/usage", params, BETA, key=None), 401, "authentication_error")
    forbidden = sim.get("/v1/organizations/analytics/cost", params, BETA, key="sk-ant-api03-normal-key")
    _error(forbidden, 403, "permission_error")
    assert "sk-ant-api03-normal-key" not in forbidden.text
    legacy = sim.http.get(sim.url + "/v1/organizations/cost_report", params=params,
                          headers={"x-api-key": "sk-ant-api03-x", "anthropic-version": "2023-06-01"})
    _error(legacy, 403, "permission_error")
    no_version = sim.http.get(sim.url + "/v1/organizations/cost_report", params=params, headers={"x-api-key": KEY})
    assert "anthropic-version" in _error(no_version, 400, "invalid_request_error")

    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="nope", base_url=sim.url, max_retries=0).organization.api_keys.list()
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic.Anthropic(api_key="sk-ant-api03-zzz", base_url=sim.url,
                            max_retries=0).organization.workspaces.list()


def test_workspace_and_key_names_parse_with_the_sdk(sim: Sim) -> None:
    client = sim.client()
    everything = {w.name: w for w in client.organization.workspaces.list(include_default=True,
                                                                          include_archived=True, limit=2)}
    assert set(everything) == {"Default", "Support", "Search", "Data Platform", "Old Experiments"}
    assert everything["Old Experiments"].archived_at is not None
    plain = {w.name for w in client.organization.workspaces.list()}
    assert plain == {"Support", "Search", "Data Platform"}
    keys = list(client.organization.api_keys.list(limit=3))
    names = {k.name for k in keys}
    assert {"support-bot-prod", "search-rag", "nightly-summaries", "+ops notebook", "eval-harness"} <= names
    assert 8 <= len(keys) <= 10
    statuses = sorted(k.status for k in keys)
    assert statuses.count("archived") == 1 and statuses.count("inactive") == 1
    assert all(k.scope.type == "workspace" and k.scope.workspace_id in {w.id for w in everything.values()}
               for k in keys)


# ---------------------------------------------------------------------------------------------
# Faults


def test_queued_429_comes_back_once_then_passes(sim: Sim) -> None:
    path = "/v1/organizations/analytics/usage"
    sim.control("POST", "/_sim/faults", {"path": path, "after": 0, "count": 1, "status": 429,
                                         "retry_after": "2", "kind": "error"})
    params = {"starting_at": DAY_START, "ending_at": DAY_END}
    limited = sim.analytics("usage", params)
    _error(limited, 429, "rate_limit_error")
    assert limited.headers["retry-after"] == "2"
    assert sim.analytics("usage", params).status_code == 200

    # Faults queue up in order; the second one's `after` counts only requests that reach it.
    sim.control("POST", "/_sim/faults", {"path": path, "count": 1, "status": 529})
    sim.control("POST", "/_sim/faults", {"path": path, "after": 1, "count": 2, "status": 500})
    statuses = [sim.analytics("usage", params).status_code for _ in range(5)]
    assert statuses == [529, 200, 500, 500, 200]

    # The SDK retries through a 429 (short retry-after) and a 529.
    sim.control("POST", "/_sim/faults", {"path": path, "count": 1, "status": 429, "retry_after": "0.05"})
    sim.control("POST", "/_sim/faults", {"path": path, "count": 1, "status": 529, "retry_after": "0.05"})
    sim.control("DELETE", "/_sim/requests")
    page = sim.client(max_retries=3).beta.organization.analytics.usage.list(starting_at=DAY_START, ending_at=DAY_END)
    assert len(page.data) == 1
    assert [e["status"] for e in sim.control("GET", "/_sim/requests")] == [429, 529, 200]


def test_after_skips_requests_and_malformed_pages(sim: Sim) -> None:
    usage_path = "/v1/organizations/analytics/usage"
    params = {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": "model"}
    sim.control("POST", "/_sim/faults", {"path": usage_path, "after": 1, "count": 1, "kind": "missing_field"})
    assert "output_tokens" in sim.analytics("usage", params).json()["data"][0]["usage"]
    assert "output_tokens" not in sim.analytics("usage", params).json()["data"][0]["usage"]
    sim.control("POST", "/_sim/faults", {"path": usage_path, "kind": "wrong_type"})
    assert sim.analytics("usage", params).json()["data"][0]["usage"]["output_tokens"] == "lots"
    sim.control("POST", "/_sim/faults", {"path": "/v1/organizations/analytics/cost", "kind": "wrong_type"})
    assert sim.analytics("cost", params).json()["data"][0]["cost"]["amount"] == 12.5
    sim.control("POST", "/_sim/faults", {"path": "/v1/organizations/usage_report", "kind": "missing_field"})
    legacy = sim.legacy("/v1/organizations/usage_report/messages", {"starting_at": DAY_START, "ending_at": DAY_END})
    assert "output_tokens" not in legacy.json()["data"][0]["results"][0]
    # The SDK does not validate: a missing field reads as None, a wrong type passes through.
    sim.control("POST", "/_sim/faults", {"path": usage_path, "kind": "missing_field"})
    usage = sim.client().beta.organization.analytics.usage.list(starting_at=DAY_START, ending_at=DAY_END,
                                                                group_by=["model"]).data[0].usage
    assert usage.output_tokens is None and "output_tokens" not in usage.model_fields_set
    assert sim.analytics("usage", params).status_code == 200


# ---------------------------------------------------------------------------------------------
# Late data and determinism (own processes: they mutate state / compare servers)


def _hourly(server: Sim) -> dict[str, dict[str, Any]]:
    body = server.analytics("usage", {"starting_at": "2026-11-23T12:00:00Z", "ending_at": "2026-11-24T12:00:00Z",
                                      "time_bucket_width": "1h", "limit": 1000}).json()
    assert body["has_more"] is False
    return {r["starting_at"]: r["usage"] for r in body["data"]}


def test_revise_changes_recent_buckets_only() -> None:
    server = Sim()
    try:
        before = _hourly(server)
        truth_before = server.control("GET", "/_sim/truth",
                                      params={"starting_at": "2026-11-24T06:00:00Z", "ending_at": NOW})
        assert server.control("POST", "/_sim/revise", {"hours": 6}) == {"revision": 1}
        after = _hourly(server)
        assert before.keys() == after.keys() and len(before) == 24
        recent = {f"2026-11-24T{h:02d}:00:00Z" for h in range(6, 12)}
        for start in before:
            if start in recent:
                assert after[start]["total_tokens"] > before[start]["total_tokens"], start
            else:
                assert after[start] == before[start], start
        truth_after = server.control("GET", "/_sim/truth",
                                     params={"starting_at": "2026-11-24T06:00:00Z", "ending_at": NOW})
        assert truth_after["revision"] == 1
        assert Decimal(truth_after["cost_usd"]) > Decimal(truth_before["cost_usd"])
        cost = server.analytics("cost", {"starting_at": "2026-11-24T06:00:00Z", "ending_at": NOW}).json()["data"]
        assert Decimal(cost[0]["cost"]["amount"]) == Decimal(truth_after["cost_usd"]) * 100
    finally:
        assert server.stop() == 0


def test_same_seed_gives_identical_json() -> None:
    a, b, c = Sim(), Sim(), Sim(seed=8)
    try:
        requests_to_make: list[tuple[str, dict[str, Any]]] = [
            ("/v1/organizations/analytics/usage", {"starting_at": "2026-11-20T00:00:00Z", "ending_at": DAY_END,
                                                   "time_bucket_width": "1h", "group_by[]": ["model", "api_key_id"],
                                                   "limit": 50}),
            ("/v1/organizations/analytics/cost", {"starting_at": DAY_START, "ending_at": DAY_END,
                                                  "group_by[]": ["workspace_id", "cost_type", "token_type"]}),
            ("/v1/organizations/analytics/usage", {"starting_at": "2025-01-01T00:00:00Z"}),
            ("/v1/organizations/usage_report/messages", {"starting_at": "2026-11-01T00:00:00Z",
                                                         "group_by[]": ["model", "api_key_id"]}),
            ("/v1/organizations/cost_report", {"starting_at": "2026-11-01T00:00:00Z", "group_by[]": "description"}),
            ("/v1/organizations/workspaces", {"include_default": "true", "include_archived": "true"}),
            ("/v1/organizations/api_keys", {}),
        ]
        for path, params in requests_to_make:
            headers = dict(LEGACY, **BETA)
            ra = a.http.get(a.url + path, params=params, headers=headers)
            rb = b.http.get(b.url + path, params=params, headers=headers)
            rc = c.http.get(c.url + path, params=params, headers=headers)
            assert ra.status_code == rb.status_code
            assert ra.content == rb.content, path
            assert ra.headers["request-id"] == rb.headers["request-id"]
            if ra.status_code == 200:
                assert ra.content != rc.content, path
        assert json.loads(ra.content)["data"]
    finally:
        for server in (a, b, c):
            assert server.stop() == 0


def test_cli_exits_cleanly_on_sigint() -> None:
    server = Sim("--admin-key", "second-key")
    assert server.get("/v1/organizations/workspaces", key="second-key").status_code == 200
    server.proc.send_signal(signal.SIGINT)
    assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# People and products (issue 12, step 1): parts of the records, their truth, fast mode and US-only

WEEK_START = datetime(2026, 11, 17, tzinfo=UTC)
FIXED_NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
COUNT_FIELDS = ("uncached_input_tokens", "cache_creation_5m", "cache_creation_1h", "cache_read_input_tokens",
                "output_tokens", "web_search_requests", "requests", "runtime_hours")


def _org(seed: int = 7, **kw: Any) -> SimulatedOrg:
    return SimulatedOrg(seed=seed, now=FIXED_NOW, **kw)


def _usd_sum(cut: dict[str, str]) -> Decimal:
    return sum((Decimal(v) for v in cut.values()), Decimal(0))


def test_truth_by_person_product_and_rbac_group_add_up_to_the_total(sim: Sim) -> None:
    org = sim.control("GET", "/_sim/org")
    for start, end in ((DAY_START, DAY_END), ("2026-11-17T00:00:00Z", NOW)):
        truth = sim.control("GET", "/_sim/truth", params={"starting_at": start, "ending_at": end,
                                                          "people": "1"})
        total = Decimal(truth["cost_usd"])
        assert total > 0
        for cut in ("by_person", "by_product", "by_model", "by_api_key"):
            assert _usd_sum(truth[cut]) == total, cut
            assert round(_usd_sum(truth[cut]), 2) == round(total, 2), cut
        # Any-membership: a person in two groups counts in full in both; "null" is no group.
        people = {a["key"]: a for a in org["actors"]}
        by_person = truth["by_person"]
        for group, amount in truth["by_rbac_group"].items():
            members = [k for k, a in people.items()
                       if (group in a["rbac_group_ids"] if group != "null" else not a["rbac_group_ids"])]
            spent = sum((Decimal(by_person[k]) for k in members if k in by_person), Decimal(0))
            if group == "null":  # API keys and unattributed usage are no group's either
                spent += sum((Decimal(v) for k, v in by_person.items() if k not in people), Decimal(0))
            assert Decimal(amount) == spent, group
        overlap = sum((Decimal(by_person.get(k, "0")) for k, a in people.items() if len(a["rbac_group_ids"]) > 1),
                      Decimal(0))
        assert overlap > 0
        assert _usd_sum(truth["by_rbac_group"]) == total + overlap


def test_the_organization_has_its_people_groups_and_products() -> None:
    org = _org()
    assert len(org.people) == 30 and len(org.rbac_groups) == 4
    assert all(p.email and not p.deleted and p.rbac_group_ids for p in org.people)
    assert sorted(len(p.rbac_group_ids) for p in org.people).count(2) == 2
    assert {g for p in org.people for g in p.rbac_group_ids} == {g.id for g in org.rbac_groups}
    assert org.deleted_user.deleted and org.deleted_user.email is None and not org.deleted_user.rbac_group_ids
    assert len(org.service_accounts) == 2
    assert len({a.key for a in (*org.people, org.deleted_user, *org.service_accounts, org.federated_identity)}) == 34

    parts = org.parts(datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 17, tzinfo=UTC))
    actor_types = {p.actor.type if p.actor else None for p in parts}
    assert actor_types == {"user_actor", "service_account_actor", "api_actor", "federated_actor", None}
    assert org.deleted_user in {p.actor for p in parts}
    assert {p.actor.key for p in parts if p.actor and p.actor.type == "user_actor"} == \
        {a.key for a in (*org.people, org.deleted_user)}
    assert {p.product for p in parts} >= {"messages_api", "message_batches_api", "claude_code", "managed_agents_api",
                                          "chat", "cowork", "claude_console"}
    for part in parts:  # batch token traffic is the Message Batches API, and no other token traffic is
        if part.record.kind == "tokens":
            assert (part.product == "message_batches_api") == (part.record.service_tier == "batch"), part
        if part.record.kind == "session_usage":
            assert part.product == "managed_agents_api"


def test_parts_add_up_exactly_to_their_records_and_keep_every_key_total() -> None:
    org = _org()
    start, end = WEEK_START, FIXED_NOW
    org.revise(6)  # revised hours split their scaled counts too
    records = org.records(start, end)
    by_record: dict[int, list[Any]] = defaultdict(list)
    for part in org.parts(start, end):
        by_record[id(part.record)].append(part)
    assert set(by_record) == {id(r) for r in records}
    key_records: dict[Any, list[Any]] = defaultdict(lambda: [0] * len(COUNT_FIELDS))
    key_parts: dict[Any, list[Any]] = defaultdict(lambda: [0] * len(COUNT_FIELDS))
    for rec in records:
        parts = by_record[id(rec)]
        for i, name in enumerate(COUNT_FIELDS):
            assert sum(getattr(p, name) for p in parts) == getattr(rec, name), (rec, name)
            key_records[rec.api_key_id][i] += getattr(rec, name)
            key_parts[rec.api_key_id][i] += sum(getattr(p, name) for p in parts)
        assert sum((p.cost_cents for p in parts), Decimal(0)) == rec.cost_cents
        for cost_type in COST_TYPES:
            assert sum((c for p in parts for t, _, c in p.costs if t == cost_type), Decimal(0)) == \
                sum((c for t, _, c in rec.costs if t == cost_type), Decimal(0))
    assert key_parts == key_records
    # The same keys, tokens and costs as the aggregate truth of the records.
    truth: Any = org.truth(start, end, people=True)
    assert sum(v[4] for v in key_parts.values()) == truth["tokens"]["output_tokens"]
    assert sum(v[0] for v in key_parts.values()) == truth["tokens"]["uncached_input_tokens"]
    assert _usd_sum(truth["by_person"]) == Decimal(truth["cost_usd"]) == _usd_sum(truth["by_product"])


def test_people_and_products_are_deterministic_from_the_seed() -> None:
    start = datetime(2026, 11, 22, tzinfo=UTC)
    a, b, c = (_org().truth(start, FIXED_NOW, people=True), _org().truth(start, FIXED_NOW, people=True),
               _org(seed=8).truth(start, FIXED_NOW, people=True))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["by_person"] != c["by_person"]
    parts_a = [(p.product, p.actor, p.output_tokens, p.costs) for p in _org().parts(start, FIXED_NOW)]
    parts_b = [(p.product, p.actor, p.output_tokens, p.costs) for p in _org().parts(start, FIXED_NOW)]
    assert parts_a == parts_b


def _combo_tokens(records: list[Any]) -> dict[tuple[Any, ...], list[int]]:
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 7)
    for r in records:
        key = (r.hour, r.kind, r.api_key_id, r.workspace_id, r.model, r.service_tier, r.context_window)
        for i, name in enumerate(COUNT_FIELDS[:7]):
            out[key][i] += getattr(r, name)
    return dict(out)


def test_fast_mode_and_us_only_are_off_by_default_and_on_the_right_models_when_on() -> None:
    off, on = _org(), _org(fast_and_us=True)
    start = WEEK_START
    off_records, on_records = off.records(start, FIXED_NOW), on.records(start, FIXED_NOW)
    assert all(r.speed == "standard" and r.inference_geo is None for r in off_records)
    assert all(p.record.speed == "standard" and p.record.inference_geo is None for p in off.parts(start, FIXED_NOW))

    fast = [r for r in on_records if r.speed == "fast"]
    us = [r for r in on_records if r.inference_geo == "us"]
    assert fast and us
    day = date(2026, 11, 20)
    for r in fast:
        assert r.model == "claude-opus-5-5" and r.service_tier != "batch" and on.has_fast_mode(r.model, day)
    assert {r.model for r in us} == {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-sonnet-4-6"}
    assert not any(r.inference_geo for r in on_records if r.model == "claude-haiku-4-5-20251001")
    assert not off.has_us_inference("claude-haiku-4-5-20251001", day)
    # Same tokens per hour and combination; only the price of the fast and US-only share moves.
    assert _combo_tokens(on_records) == _combo_tokens(off_records)
    t_off: Any = off.truth(start, FIXED_NOW, people=True)
    t_on: Any = on.truth(start, FIXED_NOW, people=True)
    assert t_on["tokens"] == t_off["tokens"] and t_on["requests"] == t_off["requests"]
    assert Decimal(t_on["cost_usd"]) > Decimal(t_off["cost_usd"])
    for cut in ("by_person", "by_product", "by_model"):
        assert _usd_sum(t_on[cut]) == Decimal(t_on["cost_usd"])
    # A fast Opus 5.5 output token costs 2x, a US-only one 1.1x (pricing.md).
    one_fast = next(r for r in fast if r.output_tokens and r.inference_geo == "global")
    line = next(c for t, tt, c in one_fast.costs if tt == "output_tokens")
    assert line == Decimal(one_fast.output_tokens) * 40 / 1_000_000 * 100
    one_us = next(r for r in us if r.speed == "standard" and r.output_tokens and r.service_tier == "standard"
                  and r.model == "claude-sonnet-5-5")
    line = next(c for t, tt, c in one_us.costs if tt == "output_tokens")
    assert line == Decimal(one_us.output_tokens) * 10 / 1_000_000 * Decimal("1.1") * 100


def test_cli_switch_serves_fast_mode() -> None:
    server = Sim("--fast-and-us")
    try:
        assert server.control("GET", "/_sim/org")["fast_and_us"] is True
        rows = server.analytics("usage", {"starting_at": DAY_START, "ending_at": DAY_END,
                                          "group_by[]": ["model", "speed"]}).json()["data"]
        assert {(r["group"]["model"], r["group"]["speed"]) for r in rows if r["group"]["speed"] == "fast"} == \
            {("claude-opus-5-5", "fast")}
        # The legacy report groups by inference_geo (not_available where a model has none) and,
        # with the fast mode beta, by speed.
        legacy = server.http.get(server.url + "/v1/organizations/usage_report/messages", timeout=10, params={
            "starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["model", "inference_geo", "speed"]},
            headers={**LEGACY, "anthropic-beta": "fast-mode-2026-02-01"})
        assert legacy.status_code == 200, legacy.text
        results = legacy.json()["data"][0]["results"]
        assert {r["inference_geo"] for r in results} == {"global", "us", "not_available"}
        assert {r["model"] for r in results if r["inference_geo"] == "not_available"} == {"claude-haiku-4-5-20251001"}
        assert {r["model"] for r in results if r["speed"] == "fast"} == {"claude-opus-5-5"}
        us = server.analytics("usage", {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["inference_geo"],
                                        "inference_geos[]": ["us"]}).json()["data"]
        assert [r["group"]["inference_geo"] for r in us] == ["us"]
        assert us[0]["usage"]["output_tokens"] == sum(r["output_tokens"] for r in results if r["inference_geo"] == "us")
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# People and products through the API (issue 12, step 2)

PEOPLE_CUT = ["product", "actor", "model", "service_tier", "speed"]
KEY_CUT = ["workspace_id", "api_key_id", "model", "service_tier", "context_window"]
CLAUDE_CODE = "/v1/organizations/usage_report/claude_code"


def _all_rows(server: Sim, kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of an Analytics read, following next_page."""
    params = {**params, "limit": 1000}
    rows: list[dict[str, Any]] = []
    while True:
        resp = server.analytics(kind, params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        rows.extend(body["data"])
        if not body["has_more"]:
            return rows
        params["page"] = body["next_page"]


def _cents_by_hour(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        out[r["starting_at"]] += Decimal(r["cost"]["amount"])
    return dict(out)


def _tokens_by_hour(rows: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    for r in rows:
        u = r["usage"]
        for i, v in enumerate((u["uncached_input_tokens"], u["cache_creation"]["ephemeral_5m_input_tokens"],
                               u["cache_creation"]["ephemeral_1h_input_tokens"], u["cache_read_input_tokens"],
                               u["output_tokens"], u["server_tool_use"]["web_search_requests"], u["requests"])):
            out[r["starting_at"]][i] += v
    return {k: tuple(v) for k, v in out.items()}


def test_sdk_parses_actor_rows_into_its_union_types(sim: Sim) -> None:
    from anthropic.types.beta.organization.beta_analytics_api_actor import BetaAnalyticsAPIActor
    from anthropic.types.beta.organization.beta_analytics_federated_actor import BetaAnalyticsFederatedActor
    from anthropic.types.beta.organization.beta_analytics_federated_actor_oidc_provider import (
        BetaAnalyticsFederatedActorOIDCProvider,
    )
    from anthropic.types.beta.organization.beta_analytics_report_user_actor import BetaAnalyticsReportUserActor
    from anthropic.types.beta.organization.beta_analytics_service_account_actor import (
        BetaAnalyticsServiceAccountActor,
    )

    org = sim.control("GET", "/_sim/org")
    actors = {a["key"]: a for a in org["actors"]}
    page = sim.client().beta.organization.analytics.usage.list(
        starting_at=datetime(2026, 11, 17, tzinfo=UTC), ending_at=datetime(2026, 11, 24, tzinfo=UTC),
        group_by=["actor", "actor_type", "user_profile_id"], limit=1000,
    )
    assert page.has_more is False
    seen: set[type] = set()
    nulls = 0
    for row in page.data:
        actor = row.group.actor
        if actor is None:
            nulls += 1
            assert row.group.actor_type is None and row.group.user_profile_id is None
            continue
        seen.add(type(actor))
        assert row.group.actor_type == actor.type
        if isinstance(actor, BetaAnalyticsReportUserActor):
            known = actors[actor.user_id]
            assert (actor.email_address, actor.name, actor.deleted) == (known["email"], known["name"],
                                                                        known["deleted"])
            assert row.group.user_profile_id == known["user_profile_id"]
            if actor.deleted:
                assert actor.email_address is None and actor.name == "Deleted User"
                assert row.group.user_profile_id is None
            else:
                assert str(row.group.user_profile_id).startswith("uprof_01")
        elif isinstance(actor, BetaAnalyticsServiceAccountActor):
            assert actor.service_account_id in actors
        elif isinstance(actor, BetaAnalyticsAPIActor):
            assert actor.api_key_id in {k["id"] for k in org["api_keys"]}
        else:
            assert isinstance(actor, BetaAnalyticsFederatedActor)
            assert isinstance(actor.provider, BetaAnalyticsFederatedActorOIDCProvider)
            assert actor.provider.issuer == "https://token.actions.githubusercontent.com"
            assert actor.subject == "repo:acme/search-indexer:ref:refs/heads/main"
    assert seen == {BetaAnalyticsReportUserActor, BetaAnalyticsServiceAccountActor, BetaAnalyticsAPIActor,
                    BetaAnalyticsFederatedActor}
    assert nulls == 2, "unattributed usage reads as two separate null-actor rows"
    profiles = [a["user_profile_id"] for a in org["actors"] if a["user_profile_id"]]
    assert len(profiles) == len(set(profiles)) == 30


def test_group_by_six_dimensions_is_a_400_and_fanout_dims_do_not_count(sim: Sim) -> None:
    six = [*PEOPLE_CUT, "rbac_group_id"]
    for kind in ("usage", "cost"):
        resp = sim.analytics(kind, {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": six})
        assert "group_by[]" in _error(resp, 400, "invalid_request_error")
    resp = sim.analytics("cost", {"starting_at": DAY_START, "ending_at": DAY_END,
                                  "group_by[]": [*PEOPLE_CUT, "cost_type", "token_type"], "limit": 1000})
    assert resp.status_code == 200, resp.text


def test_people_cut_adds_up_to_the_key_cut_per_hour_with_duplicate_null_actors(sim: Sim) -> None:
    window = {"starting_at": DAY_START, "ending_at": DAY_END, "time_bucket_width": "1h"}
    people = _all_rows(sim, "cost", {**window, "group_by[]": PEOPLE_CUT})
    keys = _all_rows(sim, "cost", {**window, "group_by[]": KEY_CUT})
    assert _cents_by_hour(people) == _cents_by_hour(keys)
    assert len(_cents_by_hour(people)) == 24
    usage_people = _all_rows(sim, "usage", {**window, "group_by[]": PEOPLE_CUT})
    usage_keys = _all_rows(sim, "usage", {**window, "group_by[]": KEY_CUT})
    assert _tokens_by_hour(usage_people) == _tokens_by_hour(usage_keys)

    # Unattributed usage: two rows with the same (bucket, group), actor null, to be summed.
    same: dict[tuple[Any, ...], int] = defaultdict(int)
    null_cents = Decimal(0)
    for r in people:
        if r["group"]["actor"] is None:
            same[_row_key(r)] += 1
            null_cents += Decimal(r["cost"]["amount"])
    assert same and set(same.values()) == {2}
    truth = sim.control("GET", "/_sim/truth", params={"starting_at": DAY_START, "ending_at": DAY_END,
                                                      "people": "1"})
    assert null_cents == Decimal(truth["by_person"]["null"]) * 100
    by_product: dict[str, Decimal] = defaultdict(Decimal)
    for r in people:
        by_product[r["group"]["product"]] += Decimal(r["cost"]["amount"])
    assert {k: v / 100 for k, v in by_product.items()} == {k: Decimal(v) for k, v in truth["by_product"].items()}
    # Tokens of the people cut: the same per-token split, exact integers.
    assert sum(sum(t[:5]) for t in _tokens_by_hour(usage_people).values()) == sum(truth["tokens"].values())


def test_rbac_group_rows_overlap_and_each_equals_truth(sim: Sim) -> None:
    params = {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["rbac_group_id"]}
    rows = _all_rows(sim, "cost", params)
    truth = sim.control("GET", "/_sim/truth", params={"starting_at": DAY_START, "ending_at": DAY_END,
                                                      "people": "1"})
    got = {r["group"]["rbac_group_id"] or "null": Decimal(r["cost"]["amount"]) for r in rows}
    assert len(got) == len(rows) == 5
    assert got == {k: Decimal(v) * 100 for k, v in truth["by_rbac_group"].items()}
    assert sum(got.values()) > Decimal(truth["cost_usd"]) * 100, "any-membership rows overlap"
    # Filtered to one group: that group's row only, the same amount.
    group = next(g for g in got if g != "null")
    one = _all_rows(sim, "cost", {**params, "rbac_group_ids[]": [group]})
    assert [(r["group"]["rbac_group_id"], Decimal(r["cost"]["amount"])) for r in one] == [(group, got[group])]


def test_people_filters(sim: Sim) -> None:
    org = sim.control("GET", "/_sim/org")
    truth = sim.control("GET", "/_sim/truth", params={"starting_at": DAY_START, "ending_at": DAY_END,
                                                      "people": "1"})

    def total(**filters: Any) -> Decimal:
        rows = _all_rows(sim, "cost", {"starting_at": DAY_START, "ending_at": DAY_END, **filters})
        return sum((Decimal(r["cost"]["amount"]) for r in rows), Decimal(0)) / 100

    assert total(**{"products[]": ["claude_code"]}) == Decimal(truth["by_product"]["claude_code"])
    runaway = org["runaway"]["actor_key"]
    assert total(**{"actor_ids[]": [runaway]}) == Decimal(truth["by_person"][runaway])
    accounts = [a["key"] for a in org["actors"] if a["type"] == "service_account_actor"]
    assert total(**{"actor_types[]": ["service_account_actor"]}) == \
        sum((Decimal(truth["by_person"][k]) for k in accounts), Decimal(0))
    everything = Decimal(truth["cost_usd"])
    assert total(**{"inference_geos[]": ["not_available"]}) == everything  # fast_and_us off: no geo
    assert total(**{"inference_geos[]": ["us"]}) == 0
    assert total(**{"speeds[]": ["standard"]}) == everything
    resp = sim.analytics("cost", {"starting_at": DAY_START, "ending_at": DAY_END, "actor_types[]": ["robot"]})
    assert "actor_types[]" in _error(resp, 400, "invalid_request_error")


def test_legacy_speed_grouping_needs_the_fast_mode_header(sim: Sim) -> None:
    path = "/v1/organizations/usage_report/messages"
    for params in ({"group_by[]": ["speed"]}, {"speeds[]": ["fast"]}):
        resp = sim.legacy(path, {"starting_at": DAY_START, "ending_at": DAY_END, **params})
        message = _error(resp, 400, "invalid_request_error")
        assert "fast-mode-2026-02-01" in message and message.startswith(("group_by[]", "speeds[]"))
    headers = {**LEGACY, "anthropic-beta": "some-other-beta, fast-mode-2026-02-01"}
    resp = sim.http.get(sim.url + path, params={"starting_at": DAY_START, "ending_at": DAY_END,
                                                "group_by[]": ["speed", "inference_geo"]}, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    rows = resp.json()["data"][0]["results"]
    assert {(r["speed"], r["inference_geo"]) for r in rows} == {("standard", "not_available")}
    plain = sim.legacy(path, {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["inference_geo"],
                              "inference_geos[]": ["not_available"]}).json()["data"][0]["results"]
    assert [(r["speed"], r["inference_geo"]) for r in plain] == [(None, "not_available")]
    assert sum(r["output_tokens"] for r in plain) == sum(r["output_tokens"] for r in rows)


def test_claude_code_report_pages_with_a_cursor_and_adds_up(sim: Sim) -> None:
    sim.control("DELETE", "/_sim/requests")
    records: list[dict[str, Any]] = []
    params: dict[str, Any] = {"starting_at": DAY, "limit": 5}
    while True:
        resp = sim.legacy(CLAUDE_CODE, params)
        assert resp.status_code == 200, resp.text
        body = json.loads(resp.text, parse_float=Decimal)
        assert len(body["data"]) <= 5
        records.extend(body["data"])
        if not body["has_more"]:
            assert body["next_page"] is None
            break
        params["page"] = body["next_page"]
    assert len(sim.control("GET", "/_sim/requests")) > 3
    whole = json.loads(sim.legacy(CLAUDE_CODE, {"starting_at": DAY, "limit": 1000}).text, parse_float=Decimal)
    assert whole["data"] == records and whole["has_more"] is False

    org = sim.control("GET", "/_sim/org")
    truth = sim.control("GET", "/_sim/truth", params={"starting_at": DAY_START, "ending_at": DAY_END,
                                                      "people": "1"})
    assert {r["actor"]["type"] for r in records} == {"user_actor", "api_actor"}
    assert len(records) == len(truth["claude_code"][DAY])
    emails = {a["email"]: a["key"] for a in org["actors"] if a["email"]}
    names = {k["name"]: k["id"] for k in org["api_keys"]}
    cents = Decimal(0)
    models = 0
    for r in records:
        assert r["date"] == DAY_START and r["organization_id"] == org["organization_id"]
        assert r["customer_type"] == "api" and isinstance(r["terminal_type"], str)
        assert set(r["tool_actions"]) == {"edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool"}
        assert r["core_metrics"]["num_sessions"] >= 1
        key = emails[r["actor"]["email_address"]] if r["actor"]["type"] == "user_actor" else \
            names[r["actor"]["api_key_name"]]
        expected = truth["claude_code"][DAY][key]
        assert r["core_metrics"]["num_sessions"] == expected["sessions"]
        record_cents = Decimal(0)
        for m in r["model_breakdown"]:
            amount = m["estimated_cost"]["amount"]
            assert isinstance(amount, (Decimal, int)) and m["estimated_cost"]["currency"] == "USD"
            record_cents += Decimal(amount)
            models += 1
        assert abs(record_cents - Decimal(expected["cost_usd"]) * 100) <= Decimal("0.005") * len(r["model_breakdown"])
        cents += record_cents
    # Everything of the claude_code product that day is a user's or an API key's.
    assert abs(cents - Decimal(truth["by_product"]["claude_code"]) * 100) <= Decimal("0.005") * models
    top = max(records, key=lambda r: sum(Decimal(m["estimated_cost"]["amount"]) for m in r["model_breakdown"]))
    assert top["actor"]["email_address"] == org["runaway"]["email"]

    for bad in ({"starting_at": DAY_START}, {}, {"starting_at": "2026-13-01"}):
        assert "starting_at" in _error(sim.legacy(CLAUDE_CODE, bad), 400, "invalid_request_error")
    assert "limit" in _error(sim.legacy(CLAUDE_CODE, {"starting_at": DAY, "limit": 1001}), 400,
                             "invalid_request_error")
    other_day = {"starting_at": "2026-11-22", "page": params["page"]}  # a cursor of other parameters
    assert "page" in _error(sim.legacy(CLAUDE_CODE, other_day), 400, "invalid_request_error")
    # A legacy endpoint: x-api-key only (a Bearer key is refused).
    _error(sim.get(CLAUDE_CODE, {"starting_at": DAY}), 401, "authentication_error")


def test_people_dimensions_switch_gives_403() -> None:
    server = Sim("--no-people-dimensions")
    try:
        assert server.control("GET", "/_sim/org")["people_dimensions"] is False
        window = {"starting_at": DAY_START, "ending_at": DAY_END}
        resp = server.analytics("usage", {**window, "group_by[]": ["model", "product", "actor"]})
        assert _error(resp, 403, "permission_error") == (
            "group_by[]: product is not available for this organization (people and product dimensions "
            "require Claude Enterprise).")
        resp = server.analytics("cost", {**window, "actor_ids[]": ["user_01x"]})
        assert _error(resp, 403, "permission_error").startswith("actor_ids[]: actor is not available")
        assert server.analytics("cost", {**window, "group_by[]": KEY_CUT}).status_code == 200
        assert server.control("POST", "/_sim/people_dimensions", {"on": True})["people_dimensions"] is True
        assert server.analytics("usage", {**window, "group_by[]": ["product"]}).status_code == 200
        assert server.control("POST", "/_sim/people_dimensions", {"on": False})["people_dimensions"] is False
        _error(server.analytics("usage", {**window, "group_by[]": ["rbac_group_id"]}), 403, "permission_error")
    finally:
        assert server.stop() == 0


def test_the_runaway_developer_tops_his_day_only(sim: Sim) -> None:
    org = sim.control("GET", "/_sim/org")
    runaway = org["runaway"]
    assert runaway["day"] == DAY and runaway["email"] == "hiro.tanaka@acme.example"
    truth = sim.control("GET", "/_sim/truth", params={"starting_at": "2026-11-22T00:00:00Z",
                                                      "ending_at": DAY_END, "people": "1"})
    days = truth["by_person_day"]
    assert set(days) == {"2026-11-22", DAY}
    for key in truth["by_person"]:  # the days add up to the range
        assert sum((Decimal(d.get(key, "0")) for d in days.values()), Decimal(0)) == Decimal(truth["by_person"][key])

    def top(day: str) -> str:
        return max(days[day], key=lambda k: Decimal(days[day][k]))

    assert top(DAY) == runaway["actor_key"]
    assert top("2026-11-22") != runaway["actor_key"]
    people = {a["key"] for a in org["actors"] if a["type"] == "user_actor"}
    others = sorted((Decimal(v) for k, v in days[DAY].items() if k in people and k != runaway["actor_key"]),
                    reverse=True)
    assert Decimal(days[DAY][runaway["actor_key"]]) > 10 * others[0], "far above any other person"
    # The API agrees: the top actor row of the day is his.
    rows = _all_rows(sim, "cost", {"starting_at": DAY_START, "ending_at": DAY_END, "group_by[]": ["actor"]})
    best = max(rows, key=lambda r: Decimal(r["cost"]["amount"]))
    assert best["group"]["actor"]["user_id"] == runaway["actor_key"]
