"""A large synthetic organization, as Analytics API pages (the JSON shape of
../shared/reference/anthropic-admin-api.md): 400 API keys over 40 workspaces, 10 priced models.

Each key uses 1 to 3 (model, tier, context window, cache habit) combinations, each active in
some hours only, so an hour holds about 80 usage rows (plus Workbench usage, no API key) and
about 340 cost rows (one per token type used, web search, code execution). Deterministic: a
day's pages depend only on the seed and the day. Amounts are tokens x list price from
spendwatch's own price table, in cents, built with Decimal (exact strings, never 1e-05).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from spendwatch.pricing import PriceTable, price_table

#: (model, offers the 200k-1M context window, how often keys pick it)
MODELS = (("claude-sonnet-5-5", True, 20), ("claude-haiku-5-5", True, 16),
          ("claude-opus-5-5", True, 8), ("claude-sonnet-4-6", True, 10),
          ("claude-haiku-4-5-20251001", False, 12), ("claude-opus-4-6", False, 5),
          ("claude-sonnet-5", False, 8), ("claude-opus-5", False, 4),
          ("claude-opus-4-8", False, 4), ("claude-sonnet-4-5", False, 5))
TIERS = (("standard", 75), ("batch", 18), ("priority", 7))
GROUP_KEYS = ("model", "workspace_id", "api_key_id", "service_tier", "context_window",
              "inference_geo", "speed", "product", "actor", "actor_type", "user_profile_id",
              "rbac_group_id", "organization_id", "agent_id", "deployment_id", "environment_id",
              "session_id", "slack_channel_id", "claude_tag_category", "claude_tag_user_id")
#: token_type of each usage metric, in cost rows
TOKEN_TYPES = (("uncached_input_tokens", "input"),
               ("cache_creation.ephemeral_5m_input_tokens", "cache_write_5m"),
               ("cache_creation.ephemeral_1h_input_tokens", "cache_write_1h"),
               ("cache_read_input_tokens", "cache_read"), ("output_tokens", "output"))
USAGE_ROWS_PER_HOUR = 80
CODE_EXECUTION_ROWS_PER_HOUR = 3
PAGE_ROWS = 1000
_TEN_THOUSAND = Decimal(10_000)  # tokens x $/MTok / 10**4 = cents


@dataclass(frozen=True)
class Use:
    """One combination a key (or the Workbench, api_key_id None) sends traffic with."""

    workspace_id: str
    api_key_id: str | None
    model: str
    tier: str
    context_window: str
    prompt: int           # tokens per request
    output: int
    cache: str            # none | 5m | 5m+1h
    read_share: float
    web_search: bool
    requests: int         # mean requests in an active hour


class Organization:
    """The synthetic organization: names, and the pages of any UTC day."""

    def __init__(self, seed: int = 7, keys: int = 400, workspaces: int = 40,
                 models: int = len(MODELS)):
        if not 1 <= models <= len(MODELS):
            raise ValueError(f"models: 1 to {len(MODELS)} (the synthetic catalogue)")
        self.seed = seed
        self.models = MODELS[:models]
        rng = random.Random(seed)
        self.workspaces = [f"wrkspc_bench{w:02d}" for w in range(workspaces)]
        self.keys = [f"apikey_bench{k:03d}" for k in range(keys)]
        self.key_workspace = {k: self.workspaces[i % workspaces] for i, k in enumerate(self.keys)}
        self.uses = [use for key in self.keys for use in self._key_uses(rng, key)]
        self.workbench = [Use(w, None, rng.choice(("claude-sonnet-5-5", "claude-opus-5-5")),
                              "standard", "0-200k", 3000, 800, "none", 0.0, False, 3)
                          for w in self.workspaces[:8]]
        self.code_execution_keys = rng.sample(self.keys, min(40, len(self.keys)))
        self.prices = price_table()
        # Spread over the week's hours (a working-day curve, quieter weekends), mean 1.
        weights = [self._weight(h) for h in range(7 * 24)]
        mean = sum(weights) / len(weights)
        self.hour_weight = [w / mean for w in weights]

    @staticmethod
    def _weight(hour_of_week: int) -> float:
        day, hour = divmod(hour_of_week, 24)
        curve = 1.0 + 0.8 * math.sin((hour - 9) / 24 * 2 * math.pi)  # UTC, peaks ~15:00
        return curve * (0.5 if day >= 5 else 1.0)

    def _key_uses(self, rng: random.Random, key: str) -> list[Use]:
        names = [m for m, _, _ in self.models]
        weights = [w for _, _, w in self.models]
        chosen = set()
        uses = []
        for _ in range(rng.choice((1, 2, 2, 3))):
            model = rng.choices(names, weights)[0]
            tier = rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0]
            long = dict((m, lc) for m, lc, _ in self.models)[model] and rng.random() < 0.12
            window = "200k-1M" if long else "0-200k"
            if (model, tier, window) in chosen:
                continue
            chosen.add((model, tier, window))
            uses.append(Use(self.key_workspace[key], key, model, tier, window,
                            prompt=rng.randint(300_000, 600_000) if long
                            else rng.choice((1500, 4000, 9000, 20000)),
                            output=rng.choice((150, 400, 900)),
                            cache=rng.choices(("none", "5m", "5m+1h"), (10, 70, 20))[0],
                            read_share=rng.uniform(0.2, 0.8), web_search=rng.random() < 0.15,
                            requests=rng.choice((3, 10, 30, 100)) if not long else 2))
        return uses

    def names(self, now: datetime) -> tuple[list[dict], list[dict]]:
        """(workspaces, api_keys) as ``collectors.sync.write_names`` takes them."""
        workspaces = [{"workspace_id": w, "name": f"Team {i:02d}" if i else "Default Workspace",
                       "archived_at": None, "is_default": i == 0}
                      for i, w in enumerate(self.workspaces)]
        created = now - timedelta(days=400)
        keys = [{"api_key_id": k, "name": f"service-{i:03d}", "status": "active",
                 "workspace_id": self.key_workspace[k], "created_at": created}
                for i, k in enumerate(self.keys)]
        return workspaces, keys

    # --- one day -----------------------------------------------------------------------------

    def day(self, start: datetime, refreshed: datetime) -> tuple[list[dict], list[dict]]:
        """(usage pages, cost pages) of the UTC day starting at ``start``."""
        rng = random.Random(self.seed * 1_000_003 + start.toordinal())
        prices = _day_prices(self.prices, start.date())
        usage: list[dict] = []
        cost: list[dict] = []
        everyone = self.uses + self.workbench
        base = USAGE_ROWS_PER_HOUR / len(everyone)
        for hour in range(24):
            at = start + timedelta(hours=hour)
            span = {"starting_at": _stamp(at), "ending_at": _stamp(at + timedelta(hours=1))}
            chance = base * self.hour_weight[at.weekday() * 24 + at.hour]
            for use in everyone:
                if rng.random() < chance:
                    row, costs = _hour_of(rng, use, span, prices)
                    usage.append(row)
                    cost.extend(costs)
            for key in self.code_execution_keys:
                if rng.random() < CODE_EXECUTION_ROWS_PER_HOUR / len(self.code_execution_keys):
                    cents = Decimal(rng.randint(1, 40)) * Decimal("1.25")  # $0.05/h, quarters
                    cost.append(_cost_item(span, _group(
                        workspace_id=self.key_workspace[key], api_key_id=key,
                        cost_type="code_execution", token_type=None), cents))
        return _pages(usage, PAGE_ROWS, refreshed), _pages(cost, 4 * PAGE_ROWS, refreshed)


def _day_prices(table: PriceTable, day: date) -> dict[tuple[str, str, str], Decimal]:
    """(model, context window, component) -> list $/MTok on ``day`` (the long-context prices of
    Haiku 5.5 for 200k-1M, as spendwatch's formula does)."""
    out = {}
    for model, has_long, _ in MODELS:
        for window in ("0-200k", "200k-1M") if has_long else ("0-200k",):
            for _, component in TOKEN_TYPES:
                long = window == "200k-1M" and table.price(model, f"long_{component}", day)
                out[model, window, component] = long or table.price(model, component, day)
    return out


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _group(**values: Any) -> dict[str, Any]:
    group: dict[str, Any] = dict.fromkeys(GROUP_KEYS)
    group.update(values)
    return group


def _hour_of(rng: random.Random, use: Use, span: dict, prices: dict
             ) -> tuple[dict, list[dict]]:
    requests = max(1, int(use.requests * rng.uniform(0.3, 1.7)))
    prompt = int(requests * use.prompt * rng.uniform(0.7, 1.3))
    read = int(prompt * use.read_share) if use.cache != "none" else 0
    write_5m = int(prompt * 0.08) if use.cache != "none" else 0
    write_1h = int(prompt * 0.04) if use.cache == "5m+1h" else 0
    tokens = {"input": prompt - read - write_5m - write_1h, "cache_write_5m": write_5m,
              "cache_write_1h": write_1h, "cache_read": read,
              "output": int(requests * use.output * rng.uniform(0.5, 1.5))}
    searches = rng.randint(1, requests) if use.web_search else 0
    dims = {"model": use.model, "workspace_id": use.workspace_id, "api_key_id": use.api_key_id,
            "service_tier": use.tier, "context_window": use.context_window}
    row = {**span, "group": _group(**dims), "usage": {
        "uncached_input_tokens": tokens["input"],
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m,
                           "ephemeral_1h_input_tokens": write_1h},
        "cache_read_input_tokens": read, "output_tokens": tokens["output"],
        "server_tool_use": {"web_search_requests": searches},
        "total_tokens": sum(tokens.values()), "requests": requests}}
    batch = Decimal("0.5") if use.tier == "batch" else Decimal(1)
    costs = [_cost_item(span, _group(**dims, cost_type="tokens", token_type=token_type),
                        Decimal(tokens[component]) * prices[use.model, use.context_window,
                                                            component] * batch / _TEN_THOUSAND)
             for token_type, component in TOKEN_TYPES if tokens[component]]
    if searches:  # $10 per 1,000 searches: one cent each
        costs.append(_cost_item(span, _group(**dims, cost_type="web_search", token_type=None),
                                Decimal(searches)))
    return row, costs


def _cost_item(span: dict, group: dict, cents: Decimal) -> dict:
    text = f"{cents:f}"
    return {**span, "group": group, "cost": {"amount": text, "list_amount": text,
                                             "currency": "USD", "requests": None}}


def _pages(rows: list[dict], size: int, refreshed: datetime) -> list[dict]:
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)] or [[]]
    return [{"data": chunk, "has_more": n < len(chunks) - 1,
             "next_page": f"page_{n + 1}" if n < len(chunks) - 1 else None,
             "data_refreshed_at": _stamp(refreshed)} for n, chunk in enumerate(chunks)]
