"""Golden tests: hand-computed dollars, exact, for every pricing rule.

Each expected figure is worked out in the comment beside it from the list prices in
../shared/reference/pricing.md, not from the code under test.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from spendwatch.allocation import split_exactly
from spendwatch.config import load_config
from spendwatch.errors import ConfigError
from spendwatch.pricing import TokenCounts, default_price_table, price_table

D = Decimal
NOV = date(2026, 11, 2)
table = default_price_table()


def cost(model: str, day: date = NOV, **kwargs: object) -> Decimal | None:
    tokens = TokenCounts(**{k: kwargs.pop(k) for k in list(kwargs) if k in TokenCounts.__annotations__})
    return table.estimate(model, day, tokens, **kwargs).total  # type: ignore[arg-type]


def test_a_one_hour_cache_write_costs_twice_the_input_price() -> None:
    # claude-sonnet-4-6 input $3/Mtok -> 1h write $6/Mtok; 123,456 x 6 / 1e6
    assert cost("claude-sonnet-4-6", cache_write_1h=123_456) == D("0.740736")


def test_a_five_minute_cache_write_costs_1_25_times_the_input_price() -> None:
    # $3 x 1.25 = $3.75/Mtok; 123,456 x 3.75 / 1e6
    assert cost("claude-sonnet-4-6", cache_write_5m=123_456) == D("0.46296")


def test_a_cache_read_uses_the_models_own_multiplier() -> None:
    # Opus 5.5 reads at $0.20 (0.05x of $4), not at 0.1x ($0.40): 2,500,000 x 0.20 / 1e6
    assert cost("claude-opus-5-5", cache_read=2_500_000) == D("0.5")
    # Haiku 4.5 reads at 0.1x of $1: 2,500,000 x 0.10 / 1e6
    assert cost("claude-haiku-4-5", cache_read=2_500_000) == D("0.25")


def test_batch_halves_every_token_price_cache_included() -> None:
    # Sonnet 4.6 on the Batch API: input 1.5, 5m write 1.875, read 0.15, output 7.5 per Mtok
    # 1,000,000 x 1.5 + 200,000 x 1.875 + 5,000,000 x 0.15 + 100,000 x 7.5, / 1e6
    # = 1.5 + 0.375 + 0.75 + 0.75
    assert cost("claude-sonnet-4-6", service_tier="batch", input=1_000_000,
                cache_write_5m=200_000, cache_read=5_000_000, output=100_000) == D("3.375")
    # a batch cache read is 5% of the standard input price: 0.5 x 0.1 x $3 = $0.15/Mtok
    assert table.unit_price("claude-sonnet-4-6", "cache_read", NOV, "batch") == D("0.15")


def test_us_only_inference_costs_1_1x_from_model_4_6_on() -> None:
    # Opus 4.6 input $5 x 1.1 = $5.5; output $25 x 1.1 = $27.5 per Mtok
    assert cost("claude-opus-4-6", inference_geo="us", input=1_000_000,
                output=1_000_000) == D("33")
    # Haiku 4.5 predates 4.6: no US multiplier
    assert cost("claude-haiku-4-5", inference_geo="us", input=1_000_000) == D("1")
    # stacked with batch and a cache read: Sonnet 5.5 read $0.10 x 0.5 x 1.1 = $0.055/Mtok
    assert table.unit_price("claude-sonnet-5-5", "cache_read", NOV, "batch", "us") == D("0.055")


def test_a_price_change_applies_from_its_day() -> None:
    # Sonnet 5.5's cache read went from $0.20 to $0.10 on 2026-10-07
    assert cost("claude-sonnet-5-5", date(2026, 10, 6), cache_read=1_000_000) == D("0.2")
    assert cost("claude-sonnet-5-5", date(2026, 10, 7), cache_read=1_000_000) == D("0.1")


def test_fast_mode_replaces_input_and_output_and_cache_follows_it() -> None:
    # Opus 5.5 fast: input $8, output $40; 5m write 8 x 5/4 = $10; read 8 x 0.2/4 = $0.40
    assert cost("claude-opus-5-5", speed="fast", input=1_000_000, output=1_000_000,
                cache_write_5m=1_000_000, cache_read=1_000_000) == D("58.4")
    # Sonnet 5.5 has no fast mode; batch and fast do not combine
    assert cost("claude-sonnet-5-5", speed="fast", input=1) is None
    assert cost("claude-opus-5-5", speed="fast", service_tier="batch", input=1) is None


def test_haiku_5_5_prices_a_prompt_over_100k_tokens_whole_at_its_higher_rate() -> None:
    # prompt = 100,000 input + 50,000 read = 150,000 > 100k: input $0.50, read $0.05,
    # output $2.50 per Mtok: 0.05 + 0.0025 + 0.0025
    assert cost("claude-haiku-5-5", input=100_000, cache_read=50_000, output=1_000) == D("0.055")
    # at or under 100k: $0.10 / $0.01 / $0.50: 0.005 + 0.0005 + 0.0005
    assert cost("claude-haiku-5-5", input=50_000, cache_read=50_000, output=1_000) == D("0.006")


def test_web_search_costs_ten_dollars_per_thousand() -> None:
    # 37 searches x $0.01, plus 1,000 input tokens of Haiku 4.5 at $1/Mtok
    assert cost("claude-haiku-4-5", input=1_000, web_search_requests=37) == D("0.371")


def test_dated_model_ids_price_as_their_alias() -> None:
    assert cost("claude-haiku-4-5-20251001", output=1_000_000) == D("5")


@pytest.mark.parametrize("model, tier, reason", [
    ("claude-mythos-5-2", None, "no price for model claude-mythos-5-2"),
    ("claude-sonnet-5-5", "priority", "no public price for service tier priority"),
])
def test_an_unpriced_model_or_tier_is_never_zero(model: str, tier: str | None,
                                                 reason: str) -> None:
    estimate = table.estimate(model, NOV, TokenCounts(input=1000), service_tier=tier)
    assert estimate.total is None and not estimate.priced
    assert estimate.unpriced_reason == reason


def test_a_config_row_overrides_the_shipped_price_from_its_day(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[organizations]]\nname = "a"\n[[pricing.prices]]\n'
                    'model = "claude-sonnet-5-5"\ncomponent = "input"\nprice_usd = "1.5"\n'
                    'unit = "per_mtok"\neffective_from = "2026-11-01"\n')
    path.chmod(0o600)
    overridden = price_table(load_config(path).prices)
    assert overridden.price("claude-sonnet-5-5", "input", date(2026, 10, 31)) == D("2")
    assert overridden.price("claude-sonnet-5-5", "input", date(2026, 11, 1)) == D("1.5")
    assert overridden.fingerprint != table.fingerprint


def _price_config(tmp_path: Path, model: str, price: str) -> Path:
    """A config with one [[pricing.prices]] input row (``price`` as written in TOML)."""
    path = tmp_path / "config.toml"
    path.write_text(f'[[organizations]]\nname = "a"\n[[pricing.prices]]\nmodel = "{model}"\n'
                    f'component = "input"\nprice_usd = {price}\nunit = "per_mtok"\n'
                    'effective_from = "2026-11-01"\n')
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("model", "price", "error"), [
    ("m", "0.3", "write price_usd as a string"),  # a TOML float is binary, not exact
    # finer than stored usage is priced (12 decimals per token, with the multipliers)
    ("m", '"0.123456"', "price_usd has more than 4 decimal places"),
    # '*' prices per token would price models the table does not know: say which model
    ("*", '"3"', "a price per million tokens needs a model ID"),
])
def test_a_config_price_that_cannot_be_kept_exact_is_refused(tmp_path: Path, model: str,
                                                              price: str, error: str) -> None:
    with pytest.raises(ConfigError, match=r"pricing.prices\[0\]: " + re.escape(error)):
        load_config(_price_config(tmp_path, model, price))


def test_a_price_finer_than_stored_dollars_is_refused(tmp_path: Path) -> None:
    # Stored dollars and per-request prices keep 12 decimals: a 13th would be rounded away.
    path = _price_config(tmp_path, "*", '"0.0100000000001"').read_text().replace(
        'component = "input"', 'component = "web_search"').replace("per_mtok", "per_request")
    (tmp_path / "config.toml").write_text(path)
    with pytest.raises(ConfigError, match=re.escape(
            "pricing.prices[0]: price_usd has more than 12 decimal places")):
        load_config(tmp_path / "config.toml")
    (tmp_path / "config.toml").write_text(path.replace("0.0100000000001", "0.010000000001"))
    assert load_config(tmp_path / "config.toml").prices[0].price_usd == Decimal("0.010000000001")


def test_a_config_price_to_four_decimals_is_kept(tmp_path: Path) -> None:
    assert load_config(_price_config(tmp_path, "m", '"0.1234"')).prices[0].price_usd == \
        Decimal("0.1234")


def test_shares_of_a_split_add_up_exactly() -> None:
    # $1 in three equal parts: 0.333333333334 + 0.333333333333 + 0.333333333333
    assert split_exactly(D("1"), [1, 1, 1]) == [D("0.333333333334"), D("0.333333333333"),
                                                  D("0.333333333333")]
    shares = split_exactly(D("123.456789012345"), [7, 13, 0, 29, 1])
    assert sum(shares) == D("123.456789012345") and shares[2] == 0
    # proportional: 7/50 of the amount, within one quantum
    assert abs(shares[0] - D("123.456789012345") * 7 / 50) <= D("1e-12")


# ../shared/reference/pricing.md, typed in by hand: input, 5m write, 1h write, read, output.
REFERENCE = {
    "claude-opus-5-5": ("4", "5", "8", "0.20", "20"),
    "claude-haiku-5-5": ("0.10", "0.125", "0.20", "0.01", "0.50"),
    "claude-fable-5-2": ("8", "10", "16", "0.20", "40"),
    "claude-fable-5-1": ("10", "12.50", "20", "0.25", "50"),
    "claude-mythos-5-1": ("10", "12.50", "20", "0.25", "50"),
    "claude-fable-5": ("10", "12.50", "20", "1.00", "50"),
    "claude-mythos-5": ("10", "12.50", "20", "1.00", "50"),
    "claude-sonnet-5": ("2", "2.50", "4", "0.20", "10"),
    "claude-opus-5": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-8": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-7": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-6": ("5", "6.25", "10", "0.50", "25"),
    "claude-opus-4-5": ("5", "6.25", "10", "0.50", "25"),
    "claude-sonnet-4-6": ("3", "3.75", "6", "0.30", "15"),
    "claude-sonnet-4-5": ("3", "3.75", "6", "0.30", "15"),
    "claude-haiku-4-5": ("1", "1.25", "2", "0.10", "5"),
    "claude-opus-4-1": ("15", "18.75", "30", "1.50", "75"),
    "claude-opus-4": ("15", "18.75", "30", "1.50", "75"),
    "claude-sonnet-4": ("3", "3.75", "6", "0.30", "15"),
    "claude-3-5-haiku": ("0.80", "1", "1.60", "0.08", "4"),
}


@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_the_shipped_table_holds_the_reference_prices(model: str) -> None:
    components = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
    assert tuple(table.price(model, c, NOV) for c in components) == tuple(
        D(p) for p in REFERENCE[model])


def test_sonnet_5_5_prices_match_the_reference_on_both_sides_of_its_cut() -> None:
    components = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
    assert tuple(table.price("claude-sonnet-5-5", c, date(2026, 10, 6)) for c in components) == (
        D("2"), D("2.50"), D("4"), D("0.20"), D("10"))
    assert table.price("claude-sonnet-5-5", "cache_read", date(2026, 10, 7)) == D("0.10")
