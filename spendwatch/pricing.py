"""The price table: list prices per model and component, each with the day it took effect.

Prices live in a data file (``prices.csv`` beside this module), not in code, so a price change
(Sonnet 5.5's cache read cut on 2026-10-07) prices older usage at the old rate. Rows from
config override or extend the file.

Formulas (all exact, in Decimal dollars):

- token cost = tokens x price_per_mtok / 1,000,000 x tier multiplier
- tier multiplier: ``batch`` = 0.5 (the Batch API halves every token price, cache prices
  included); ``standard`` and unset = 1; other tiers have no public price (None).
- web search cost = requests x price_per_request.

A model with no price gives ``None``, never $0: callers report it as unpriced.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

PRICES_FILE = Path(__file__).with_name("prices.csv")

TOKEN_COMPONENTS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
MILLION = Decimal(1_000_000)
TIER_MULTIPLIERS: Mapping[str | None, Decimal] = {
    None: Decimal(1),
    "standard": Decimal(1),
    "batch": Decimal("0.5"),
}
_DATED_SUFFIX = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class PriceRow:
    """One price: ``model`` ('*' for organization-wide items), component, dollars per unit."""

    model: str
    component: str
    price_usd: Decimal
    unit: str
    effective_from: date


def canonical_model(model: str) -> str:
    """Dated model IDs price as their alias: ``claude-haiku-4-5-20251001`` -> ``claude-haiku-4-5``."""
    return _DATED_SUFFIX.sub("", model)


def load_price_rows(path: Path = PRICES_FILE) -> list[PriceRow]:
    """Read a price CSV (lines starting with '#' are comments).

    Raises ValueError naming the file and line for a malformed row.
    """
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    rows: list[PriceRow] = []
    for number, record in enumerate(csv.DictReader(lines), start=2):
        try:
            rows.append(
                PriceRow(
                    model=record["model"].strip(),
                    component=record["component"].strip(),
                    price_usd=Decimal(record["price_usd"].strip()),
                    unit=record["unit"].strip(),
                    effective_from=date.fromisoformat(record["effective_from"].strip()),
                )
            )
        except (KeyError, ValueError, ArithmeticError, AttributeError) as exc:
            raise ValueError(f"{path}: price row {number} is malformed ({exc})") from None
    return rows


class PriceTable:
    """Look up the price in force for a model, component and UTC day."""

    def __init__(self, rows: Iterable[PriceRow]):
        self._rows: dict[tuple[str, str], list[PriceRow]] = {}
        for row in rows:
            self._rows.setdefault((row.model, row.component), []).append(row)
        for history in self._rows.values():
            history.sort(key=lambda r: r.effective_from)

    def price(self, model: str | None, component: str, day: date) -> Decimal | None:
        """Dollars per unit in force on ``day``, or None when the table has no such price."""
        key_model = "*" if model is None else canonical_model(model)
        history = self._rows.get((key_model, component)) or self._rows.get(("*", component))
        if not history:
            return None
        in_force = [r for r in history if r.effective_from <= day]
        return in_force[-1].price_usd if in_force else None

    def token_cost(
        self, model: str | None, component: str, tokens: int, day: date, service_tier: str | None
    ) -> Decimal | None:
        """Cost in dollars of ``tokens`` of one component, or None if unpriced."""
        price = self.price(model, component, day) if model is not None else None
        multiplier = TIER_MULTIPLIERS.get(service_tier)
        if price is None or multiplier is None:
            return None
        return Decimal(tokens) * price / MILLION * multiplier


@lru_cache(maxsize=1)
def default_price_table() -> PriceTable:
    """The price table shipped with spendwatch."""
    return PriceTable(load_price_rows())
