"""The price table and the one formula that turns usage into estimated dollars.

Prices live in a data file (``prices.csv`` beside this module), not in code, one row per model
and component with the UTC day it took effect, so a price change (Sonnet 5.5's cache read cut
on 2026-10-07) prices older usage at the old rate. Rows from config (``[[pricing.prices]]``)
extend or override the file: for the same model, component and day, config wins.

The formula, for ``tokens`` of one component of one model on one UTC day (all Decimal, exact):

    unit price   = the component's price per million tokens in force that day
                   - fast mode (speed "fast"): fast_input / fast_output replace input / output,
                     and each cache price becomes fast_input x (cache price / input price):
                     the cache multipliers apply on top of the fast input price;
                   - a Haiku 5.5 prompt over 100k tokens: the long_* prices, output included;
    x batch      = batch_multiplier (0.5) when service_tier is "batch" (cache prices too;
                   batch and fast mode do not combine);
    x US-only    = the model's us_inference_multiplier (1.1, models from 4.6 on) when
                   inference_geo is "us";
    cost         = tokens x unit price / 1,000,000
    web search   = web_search_requests x price per request ($10 per 1,000).

Other service tiers (priority, flex, ...) have no public price. A model, tier or component with
no price makes the estimate *unpriced*: it is reported as such, never as $0.

Stored usage is grouped by model, workspace, API key, service tier and context window only
(the Analytics API allows five group_by dimensions), so estimates of stored rows assume
global inference at standard speed, and price Haiku 5.5 at its 100k-and-under rate unless the
row's context window is 200k-1M. Billed cost, where it exists, is always used instead.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

PRICES_FILE = Path(__file__).with_name("prices.csv")

TOKEN_COMPONENTS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
COMPONENTS = (*TOKEN_COMPONENTS, "web_search")
UNITS = ("per_mtok", "per_request", "per_hour", "multiplier")
PRICED_TIERS = (None, "standard", "batch")
MILLION = Decimal(1_000_000)
#: Decimal places a price per million tokens may have: with the batch (0.5) and US-only (1.1)
#: multipliers it stays exact at 12 decimals per token (the SQL pricing, unit_price_rows).
MAX_MTOK_DECIMALS = 4
#: Decimal places of every stored dollar amount and price (DECIMAL(38, 12), DECIMAL(18, 12)).
STORED_DECIMALS = 12
LONG_CONTEXT_MODELS = ("claude-haiku-5-5",)
_DATED_SUFFIX = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class PriceRow:
    """One price: ``model`` ('*' for everything), component, dollars per unit, from a day."""

    model: str
    component: str
    price_usd: Decimal
    unit: str
    effective_from: date


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of one usage row, split by cache status."""

    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0

    @property
    def prompt(self) -> int:
        """Input + cache writes + cache reads: what Haiku 5.5's 100k tier counts."""
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read


@dataclass(frozen=True)
class Estimate:
    """Estimated dollars per component (see COMPONENTS), or why there is no estimate."""

    by_component: Mapping[str, Decimal] = field(default_factory=dict)
    unpriced_reason: str | None = None

    @property
    def priced(self) -> bool:
        return self.unpriced_reason is None

    @property
    def total(self) -> Decimal | None:
        """The whole estimate; None when unpriced (never a silent $0)."""
        return sum(self.by_component.values(), Decimal(0)) if self.priced else None


def canonical_model(model: str) -> str:
    """Dated model IDs price as their alias: ``claude-haiku-4-5-20251001`` -> ``claude-haiku-4-5``."""
    return _DATED_SUFFIX.sub("", model)


def parse_price_row(record: Mapping[str, object], where: str) -> PriceRow:
    """A PriceRow from a CSV record or a config table. Raises ValueError naming ``where``.

    Prices must be strings or integers (a TOML float such as 0.3 is binary, not exact).
    """
    try:
        raw_price = record["price_usd"]
        if isinstance(raw_price, float):
            raise ValueError('write price_usd as a string, e.g. "0.30", so it stays exact')
        row = PriceRow(model=str(record["model"]).strip(),
                       component=str(record["component"]).strip(),
                       price_usd=Decimal(str(raw_price).strip()),
                       unit=str(record["unit"]).strip(),
                       effective_from=date.fromisoformat(str(record["effective_from"]).strip()))
    except KeyError as exc:
        raise ValueError(f"{where}: {exc.args[0]} is missing") from None
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if row.unit not in UNITS:
        raise ValueError(f"{where}: unit must be one of {', '.join(UNITS)}, not {row.unit!r}")
    if not row.price_usd.is_finite() or row.price_usd < 0:
        raise ValueError(f"{where}: price_usd must be a non-negative number")
    if row.model == "*" and row.unit == "per_mtok":
        raise ValueError(f"{where}: a price per million tokens needs a model ID; '*' is for "
                         "web_search, code_execution, session_usage and batch_multiplier")
    if row.unit == "per_mtok" and row.price_usd.as_tuple().exponent < -MAX_MTOK_DECIMALS:  # type: ignore[operator]
        raise ValueError(f"{where}: price_usd has more than {MAX_MTOK_DECIMALS} decimal "
                         "places; write dollars per million tokens to at most "
                         f"{MAX_MTOK_DECIMALS} (stored usage is priced per token to 12)")
    if row.price_usd.as_tuple().exponent < -STORED_DECIMALS:  # type: ignore[operator]
        raise ValueError(f"{where}: price_usd has more than {STORED_DECIMALS} decimal places; "
                         f"stored dollars keep {STORED_DECIMALS}")
    return row


def load_price_rows(path: Path = PRICES_FILE) -> list[PriceRow]:
    """Read a price CSV (lines starting with '#' are comments). Raises ValueError."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    return [parse_price_row(record, f"{path} line {n}")
            for n, record in enumerate(csv.DictReader(lines), start=2)]


class PriceTable:
    """Prices in force per model, component and UTC day, and the estimate formula."""

    def __init__(self, rows: Iterable[PriceRow]):
        history: dict[tuple[str, str], dict[date, PriceRow]] = {}
        for row in rows:  # later rows (config) replace earlier ones for the same day
            history.setdefault((row.model, row.component), {})[row.effective_from] = row
        self._history = {k: sorted(v.values(), key=lambda r: r.effective_from)
                         for k, v in history.items()}
        self.rows: tuple[PriceRow, ...] = tuple(r for h in self._history.values() for r in h)

    @property
    def fingerprint(self) -> str:
        """Changes whenever any price changes: stored estimates are recomputed then."""
        text = "\n".join(f"{r.model},{r.component},{r.price_usd},{r.unit},{r.effective_from}"
                         for r in sorted(self.rows, key=lambda r: (r.model, r.component,
                                                                   r.effective_from)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def price(self, model: str | None, component: str, day: date) -> Decimal | None:
        """Dollars per unit in force on ``day`` (model-specific, else '*'), or None."""
        keys = ([(canonical_model(model), component)] if model else []) + [("*", component)]
        for key in keys:
            in_force = [r for r in self._history.get(key, ()) if r.effective_from <= day]
            if in_force:
                return in_force[-1].price_usd
        return None

    def has_model(self, model: str) -> bool:
        return (canonical_model(model), "input") in self._history

    def unit_price(self, model: str, component: str, day: date, service_tier: str | None = None,
                   inference_geo: str | None = None, speed: str | None = None,
                   long_context: bool = False) -> Decimal | None:
        """Dollars per million tokens of ``component`` after every modifier, or None."""
        if service_tier not in PRICED_TIERS:
            return None
        fast = speed == "fast"
        if fast and service_tier == "batch":
            return None  # the Batch API does not run in fast mode: no such price
        prefix = "long_" if long_context and canonical_model(model) in LONG_CONTEXT_MODELS else ""
        base = self.price(model, prefix + component, day)
        if base is None:
            return None
        if fast:
            fast_input = self.price(model, "fast_input", day)
            if component == "output":
                base = self.price(model, "fast_output", day)  # type: ignore[assignment]
            elif component == "input":
                base = fast_input  # type: ignore[assignment]
            else:
                plain_input = self.price(model, prefix + "input", day)
                base = (fast_input * base / plain_input  # type: ignore[assignment]
                        if fast_input is not None and plain_input else None)
            if base is None:
                return None
        if service_tier == "batch":
            multiplier = self.price(model, "batch_multiplier", day)
            if multiplier is None:
                return None
            base *= multiplier
        if inference_geo == "us":
            multiplier = self.price(model, "us_inference_multiplier", day)
            if multiplier is not None:
                base *= multiplier
        return base

    def estimate(self, model: str | None, day: date, tokens: TokenCounts,
                 service_tier: str | None = None, inference_geo: str | None = None,
                 speed: str | None = None, long_context: bool | None = None,
                 web_search_requests: int = 0) -> Estimate:
        """Estimated dollars of one usage row (see the module docstring for the formula).

        ``long_context=None`` decides Haiku 5.5's tier from ``tokens.prompt`` (right for one
        request; pass a bool for aggregated rows).
        """
        counts = {c: getattr(tokens, c) for c in TOKEN_COMPONENTS}
        by_component: dict[str, Decimal] = {}
        if any(counts.values()):
            if model is None:
                return Estimate(unpriced_reason="tokens without a model")
            if long_context is None:
                long_context = tokens.prompt > 100_000
            for component, count in counts.items():
                price = self.unit_price(model, component, day, service_tier, inference_geo,
                                        speed, long_context)
                if price is None:
                    return Estimate(unpriced_reason=self._why_unpriced(model, service_tier,
                                                                       speed))
                by_component[component] = Decimal(count) * price / MILLION
        if web_search_requests:
            price = self.price(model, "web_search", day)
            if price is None:
                return Estimate(unpriced_reason="no price for web search")
            by_component["web_search"] = Decimal(web_search_requests) * price
        return Estimate(by_component)

    def _why_unpriced(self, model: str, service_tier: str | None, speed: str | None) -> str:
        if service_tier not in PRICED_TIERS:
            return f"no public price for service tier {service_tier}"
        if not self.has_model(model):
            return f"no price for model {model}"
        if speed == "fast":
            return f"no fast-mode price for {model}"
        return f"incomplete prices for {model}"


@lru_cache(maxsize=1)
def default_price_rows() -> tuple[PriceRow, ...]:
    """The rows shipped with spendwatch."""
    return tuple(load_price_rows())


def price_table(overrides: Sequence[PriceRow] = ()) -> PriceTable:
    """The shipped table with ``overrides`` (from config) applied."""
    return PriceTable([*default_price_rows(), *overrides])


@lru_cache(maxsize=1)
def default_price_table() -> PriceTable:
    """The price table shipped with spendwatch, without overrides."""
    return price_table()


# --- the price table as a relation, for pricing in SQL -------------------------------------------

#: Columns of :func:`unit_price_rows`: per-token dollars of the five token kinds.
UNIT_PRICE_COLUMNS = ("input_usd", "cache_write_5m_usd", "cache_write_1h_usd", "cache_read_usd",
                      "output_usd")
_PER_TOKEN = Decimal(1).scaleb(-12)
_FOREVER = date(9999, 12, 31)
_RELATION_TIERS = ("standard", "batch")
_RELATION_SPEEDS = ("standard", "fast")
_RELATION_GEOS = ("global", "us")


def sql_no_price_reason(u: str, m: str, speed: str) -> str:
    """Why row ``u`` found no unit prices, in SQL (``m``: its row of ``priced_models``, NULL
    when the model has none): :meth:`PriceTable._why_unpriced`'s words, in its order."""
    return f"""CASE
            WHEN {u}.service_tier IS NOT NULL AND {u}.service_tier NOT IN ('standard', 'batch')
                THEN 'no public price for service tier ' || {u}.service_tier
            WHEN {m}.model IS NULL THEN 'no price for model ' || {u}.model
            WHEN {speed} = 'fast' THEN 'no fast-mode price for ' || {u}.model
            ELSE 'incomplete prices for ' || {u}.model END"""


def sql_canonical_model(column: str) -> str:
    """:func:`canonical_model` in SQL: the model ID with a trailing ``-YYYYMMDD`` removed."""
    return f"regexp_replace({column}, '-[0-9]{{8}}$', '')"


def sql_price_match(u: str, p: str, day: str, window: str, geo: str, speed: str,
                    tier: str | None = None) -> str:
    """The ON condition that finds a row's unit prices in the relation ``p``: its canonical
    model, tier (none means standard; ``tier``, a SQL expression, instead when given), long
    context (``window`` is 200k-1M), speed (fast or not), inference geo (us or not) and UTC
    ``day``; the SQL twin of :meth:`PriceTable.unit_price`."""
    tier = tier or f"coalesce({u}.service_tier, 'standard')"
    return (f"{p}.model = {sql_canonical_model(f'{u}.model')} "
            f"AND {p}.service_tier = {tier} "
            f"AND {p}.long_context = coalesce({window} = '200k-1M', false) "
            f"AND {p}.speed = CASE WHEN {speed} = 'fast' THEN 'fast' ELSE 'standard' END "
            f"AND {p}.inference_geo = CASE WHEN {geo} = 'us' THEN 'us' ELSE 'global' END "
            f"AND {day} >= {p}.valid_from AND {day} < {p}.valid_to")


def _per_token(per_mtok: Decimal) -> Decimal:
    return (per_mtok / MILLION).quantize(_PER_TOKEN)


def unit_price_rows(table: PriceTable) -> list[tuple[object, ...]]:
    """Every model's unit prices as rows valid over UTC day ranges, for pricing in SQL.

    One row per (canonical model, service tier standard|batch, long context, speed
    standard|fast, inference geo global|us) and each span of days over which none of the
    model's (or the '*') prices changes: ``(model, service_tier, long_context, speed,
    inference_geo, valid_from, valid_to (exclusive), *UNIT_PRICE_COLUMNS, batch_multiplier)``
    (web search: :func:`web_search_rows`). Each value is :meth:`PriceTable.unit_price` on
    ``valid_from``, per token (per million / 1,000,000, to 12 decimals: exact for prices per
    million to MAX_MTOK_DECIMALS places, times the batch and US-only multipliers). A
    combination with any of the five token kinds unpriced (fast mode on the batch tier, a
    model without fast prices) has no row: a row that finds none is unpriced, never $0.
    """
    models = sorted({model for model, component in table._history if model != "*"})
    shared = {r.effective_from for (model, _), rows in table._history.items() if model == "*"
              for r in rows}
    out: list[tuple[object, ...]] = []
    for model in models:
        days = sorted(shared | {r.effective_from for (m, _), rows in table._history.items()
                                if m == model for r in rows})
        for start, end in zip(days, [*days[1:], _FOREVER]):
            multiplier = table.price(model, "batch_multiplier", start)
            for tier in _RELATION_TIERS:
                for long_context in (False, True):
                    for speed in _RELATION_SPEEDS:
                        for geo in _RELATION_GEOS:
                            prices = [table.unit_price(model, c, start, tier, geo, speed,
                                                       long_context)
                                      for c in TOKEN_COMPONENTS]
                            if any(p is None for p in prices):
                                continue
                            out.append((model, tier, long_context, speed, geo, start, end,
                                        *(_per_token(p) for p in prices),  # type: ignore[arg-type]
                                        multiplier))
    return out


def web_search_rows(table: PriceTable) -> list[tuple[object, ...]]:
    """Web search prices as ``(model, valid_from, valid_to, usd per request)`` rows, per
    canonical model that has its own and for '*' (what every other model pays): a row takes
    its model's row in force that day, else the '*' one, as :meth:`PriceTable.price` does."""
    out: list[tuple[object, ...]] = []
    for (model, component), rows in sorted(table._history.items()):
        if component != "web_search":
            continue
        ends = [r.effective_from for r in rows[1:]] + [_FOREVER]
        out += [(model, r.effective_from, end, r.price_usd) for r, end in zip(rows, ends)]
    return out


def priced_models(table: PriceTable) -> list[str]:
    """The canonical models with an input price (:meth:`PriceTable.has_model`)."""
    return sorted(model for model, component in table._history
                  if component == "input" and model != "*")
