"""How money and numbers read, on every surface: one formatter, one rounding rule.

Display rounding is half up to the shown digit (``$0.125`` reads ``$0.13``), everywhere: the
CLI, the dashboard, Slack, email and log lines. Stored and exported figures are never rounded
here: :func:`money_str` writes an exact decimal string (``--json``, CSVs).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
NO_DATA = "no data"


def money_str(amount: Decimal) -> str:
    """A dollar amount as an exact decimal string: at least two decimals, no exponent."""
    normalized = amount.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = normalized.quantize(CENT)
    return format(normalized, "f")


def round_cents(amount: Decimal) -> Decimal:
    """``amount`` rounded half up to the cent (display only)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def usd(amount: Decimal | None, signed: bool = False) -> str:
    """``$1,234.57`` (half up to the cent), ``-$3.10``; ``+$3.10`` with ``signed``; None reads
    "no data"."""
    if amount is None:
        return NO_DATA
    rounded = round_cents(Decimal(amount))
    sign = "-" if rounded < 0 else ("+" if signed and rounded > 0 else "")
    return f"{sign}${abs(rounded):,.2f}"


def percent(ratio: Decimal | float | None, digits: int = 1, signed: bool = False) -> str:
    """A ratio as a percentage: ``0.4567`` reads ``45.7%`` (half up); None reads "no data"."""
    if ratio is None:
        return NO_DATA
    value = (Decimal(str(ratio)) * 100).quantize(Decimal(1).scaleb(-digits),
                                                  rounding=ROUND_HALF_UP)
    sign = "+" if signed and value > 0 else ""
    return f"{sign}{value:,.{digits}f}%"


def tokens(count: int | None) -> str:
    """A token (or request) count with thousands separators: ``1,700,740``."""
    return NO_DATA if count is None else f"{int(count):,}"


def short_tokens(count: int | None) -> str:
    """A token count for a small space: ``1.7M``, ``12.3k``, ``950``."""
    if count is None:
        return NO_DATA
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(count) >= size:
            value = (Decimal(count) / size).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
            return f"{value:,}{suffix}"
    return f"{count:,}"
