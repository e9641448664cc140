"""The bench's large organization served over HTTP, as the Admin API sends it.

``python bench/_serve.py --keys 400 --workspaces 40 --models 10`` prints the URL it serves on,
then serves until killed. It is the project's simulator (``collectors.simulator.server``: its
HTTP server, authentication, beta header, parameter rules, 31-day ranges, page cursors and
request log) with the organization of ``_synthetic.py`` behind the three endpoints a key-cut
collection reads: the Analytics usage and cost reports, and the workspace and API key
listings. The simulator's own organization (its people, products, legacy reports and ground
truth) stays the small one of the tests and the demo; this one is 400 keys big and the same
rows ``bench/generate.py`` loaded without HTTP before.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _synthetic import MODELS, Organization  # noqa: E402
from collectors.simulator.endpoints import (  # noqa: E402
    ApiError, encode_cursor, id_page, invalid, parse_analytics_params)
from collectors.simulator.server import (  # noqa: E402
    ANALYTICS_BETA, ANALYTICS_PATHS, API_KEYS_PATH, WORKSPACES_PATH, SimulatorHandler,
    SimulatorState, _HTTPServer)

DAY = timedelta(days=1)
FANOUT = ("cost_type", "token_type")


class Synthetic:
    """The organization's rows per range, built once per range asked (a window's pages are
    asked one after another) and kept for the last few ranges."""

    def __init__(self, org: Organization, now: datetime) -> None:
        self.org, self.now = org, now
        self._ranges: dict[tuple[str, datetime, datetime], list[list[dict]]] = {}
        self._days: dict[datetime, tuple[list[dict], list[dict]]] = {}
        self._lock = threading.Lock()

    def combinations(self, endpoint: str, start: datetime, end: datetime) -> list[list[dict]]:
        """The rows of [start, end) as (bucket, group) combinations in time order: a usage
        row alone, or a cost row with its fan-out by cost and token type (one page holds a
        combination whole, and the limit counts combinations, as the API's does)."""
        key = (endpoint, start, end)
        with self._lock:
            if key in self._ranges:
                return self._ranges[key]
        rows: list[dict] = []
        day = datetime.combine(start.date(), datetime.min.time(), start.tzinfo)
        low, high = start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")
        while day < end:
            pages = self._day(day)[0 if endpoint == "usage" else 1]
            rows.extend(r for page in pages for r in page["data"]
                        if low <= r["starting_at"] < high)
            day += DAY
        if endpoint == "usage":
            combos = [[r] for r in rows]
        else:
            combos = [list(group) for _, group in itertools.groupby(rows, key=lambda r: (
                r["starting_at"], tuple(v for k, v in sorted(r["group"].items())
                                        if k not in FANOUT)))]
        with self._lock:
            if len(self._ranges) >= 4:
                self._ranges.pop(next(iter(self._ranges)))
            self._ranges[key] = combos
        return combos

    def _day(self, day: datetime) -> tuple[list[dict], list[dict]]:
        """A UTC day's (usage pages, cost pages), generated once for both streams (a
        collection asks for a day's usage, then its cost)."""
        with self._lock:
            if day in self._days:
                return self._days[day]
        built = self.org.day(day, self.now)
        with self._lock:
            if len(self._days) >= 40:
                self._days.pop(next(iter(self._days)))
            self._days[day] = built
        return built

    def page(self, endpoint: str, query: dict[str, list[str]]) -> dict[str, Any]:
        params = parse_analytics_params(endpoint, query, self.now)
        if params.width != "1h" or params.order_by != "time" or params.order != "asc":
            raise invalid("this bench server answers time_bucket_width=1h, order_by=time, "
                          "order=asc (what spendwatch asks)")
        combos = self.combinations(endpoint, params.range_lo, params.range_hi)
        chosen = combos[params.offset:params.offset + params.limit]
        more = params.offset + params.limit < len(combos)
        return {"data": [r for combo in chosen for r in combo], "has_more": more,
                "next_page": (encode_cursor(f"analytics/{endpoint}", query,
                                            params.offset + params.limit) if more else None),
                "data_refreshed_at": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def workspaces(self, query: dict[str, list[str]]) -> dict[str, Any]:
        include_default = query.get("include_default", ["false"])[-1] == "true"
        listed, _ = self.org.names(self.now)
        created = (self.now - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [{"id": w["workspace_id"], "type": "workspace", "name": w["name"],
                  "created_at": created, "archived_at": None, "display_color": "#6C5BB9",
                  "external_key_id": None, "tags": {}, "user_profile_id": None,
                  "compartment_id": "cmpt_01" + w["workspace_id"][len("wrkspc_01"):],
                  "data_residency": {"allowed_inference_geos": "unrestricted",
                                     "default_inference_geo": "global",
                                     "workspace_geo": "us"}}
                 for w in listed if include_default or not w["is_default"]]
        return id_page(items, query)

    def api_keys(self, query: dict[str, list[str]]) -> dict[str, Any]:
        _, listed = self.org.names(self.now)
        items = [{"id": k["api_key_id"], "type": "api_key", "name": k["name"],
                  "status": k["status"], "created_at": k["created_at"].strftime(
                      "%Y-%m-%dT%H:%M:%SZ"),
                  "created_by": {"id": "user_01bench", "type": "user"}, "expires_at": None,
                  "partial_key_hint": "sk-ant-api03-R2D...igAA", "principal": None,
                  "scope": {"type": "workspace", "workspace_id": k["workspace_id"]}}
                 for k in listed]
        return id_page(items, query)


class Handler(SimulatorHandler):
    """The simulator's handler, answering from :class:`Synthetic`."""

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        synthetic: Synthetic = self.server.synthetic  # type: ignore[attr-defined]
        if method != "GET":
            raise ApiError(405, "invalid_request_error", f"Method {method} is not allowed.")
        if path in ANALYTICS_PATHS:
            self._authenticate(legacy=False)
            betas = ",".join(self.headers.get_all("anthropic-beta") or []).split(",")
            if ANALYTICS_BETA not in [b.strip() for b in betas]:
                raise invalid(f"anthropic-beta: send the header anthropic-beta: {ANALYTICS_BETA}.")
            return synthetic.page(ANALYTICS_PATHS[path], query)
        if path == WORKSPACES_PATH:
            self._authenticate(legacy=False)
            return synthetic.workspaces(query)
        if path == API_KEYS_PATH:
            self._authenticate(legacy=False)
            return synthetic.api_keys(query)
        raise ApiError(404, "not_found_error", "Not found (the bench server answers the "
                                               "Analytics reports and the name listings).")


def serve(keys: int, workspaces: int, models: int, now: datetime,
          admin_key: str) -> _HTTPServer:
    org = Organization(keys=keys, workspaces=workspaces, models=models)
    httpd = _HTTPServer(("127.0.0.1", 0), Handler)
    # the state's org only seeds request ids here (its seed): Handler answers from Synthetic
    httpd.state = SimulatorState(org=org, admin_keys=frozenset([admin_key]),  # type: ignore
                                 api_keys=frozenset())
    httpd.synthetic = Synthetic(org, now)  # type: ignore[attr-defined]
    return httpd


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/_serve.py")
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--workspaces", type=int, default=40)
    parser.add_argument("--models", type=int, default=len(MODELS))
    parser.add_argument("--now", required=True, help="RFC 3339: the organization's clock")
    parser.add_argument("--admin-key", required=True)
    args = parser.parse_args()
    httpd = serve(args.keys, args.workspaces, args.models,
                  datetime.fromisoformat(args.now.replace("Z", "+00:00")), args.admin_key)
    print(f"http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    httpd.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
