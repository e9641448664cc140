"""Pages to rows: exact money, strict shapes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from collectors.rows import analytics_cost_rows, analytics_usage_rows, cents_to_dollars, legacy_usage_rows
from spendwatch.errors import MalformedResponse


@pytest.mark.parametrize("cents, dollars", [
    ("12378.912", Decimal("123.78912")),
    ("123.45", Decimal("1.2345")),
    ("0", Decimal("0")),
    ("0.000000001", Decimal("0.00000000001")),
    ("99999999999.99", Decimal("999999999.9999")),
])
def test_cents_strings_become_exact_dollars(cents: str, dollars: Decimal) -> None:
    assert cents_to_dollars(cents, "here", "amount") == dollars


@pytest.mark.parametrize("value, message", [
    (12.5, "should be a decimal string of cents, got float"),
    ("abc", "is not a decimal number"),
    ("NaN", "is not a finite amount"),
])
def test_bad_amounts_are_rejected(value: object, message: str) -> None:
    with pytest.raises(MalformedResponse, match=message):
        cents_to_dollars(value, "here", "amount")


def usage_item(**usage_overrides: object) -> dict:
    usage = {"uncached_input_tokens": 10, "cache_creation": {"ephemeral_5m_input_tokens": 1,
             "ephemeral_1h_input_tokens": 2}, "cache_read_input_tokens": 3, "output_tokens": 4,
             "server_tool_use": {"web_search_requests": 0}, "total_tokens": 20, "requests": 1}
    usage.update(usage_overrides)
    return {"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-01T01:00:00Z",
            "group": {"model": "claude-haiku-5-5", "workspace_id": "wrkspc_1",
                      "api_key_id": None, "service_tier": "standard",
                      "context_window": "0-200k"}, "usage": usage}


def test_an_analytics_usage_row_keeps_every_token_kind() -> None:
    (row,) = analytics_usage_rows({"data": [usage_item()]}, "acme", "page 1")
    assert (row.uncached_input_tokens, row.cache_write_5m_tokens, row.cache_write_1h_tokens,
            row.cache_read_tokens, row.output_tokens) == (10, 1, 2, 3, 4)
    assert row.api_key_id is None and row.organization == "acme"


def test_a_row_missing_a_field_is_rejected_naming_it() -> None:
    item = usage_item()
    del item["usage"]["output_tokens"]
    with pytest.raises(MalformedResponse, match=r"page 1, row 0: field 'output_tokens' is missing"):
        analytics_usage_rows({"data": [item]}, "acme", "page 1")


def test_a_field_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(MalformedResponse, match="'output_tokens' should be a non-negative integer"):
        analytics_usage_rows({"data": [usage_item(output_tokens="lots")]}, "acme", "page 1")


def test_a_cost_row_in_another_currency_is_rejected() -> None:
    item = {"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-01T01:00:00Z",
            "group": {"cost_type": "tokens", "token_type": "output_tokens"},
            "cost": {"amount": "10", "list_amount": "10", "currency": "EUR", "requests": None}}
    with pytest.raises(MalformedResponse, match="spendwatch stores US dollars only"):
        analytics_cost_rows({"data": [item]}, "acme", "page 1")


def test_legacy_rows_are_nested_per_bucket_and_keep_a_null_default_workspace() -> None:
    page = {"data": [{"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-01T01:00:00Z",
                      "results": [{**usage_item()["usage"], "workspace_id": None,
                                   "model": "claude-opus-5-5"}]},
                     {"starting_at": "2026-11-01T01:00:00Z", "ending_at": "2026-11-01T02:00:00Z",
                      "results": []}], "has_more": False, "next_page": None}
    (row,) = legacy_usage_rows(page, "acme", "page 1")
    assert row.workspace_id is None and row.model == "claude-opus-5-5" and row.source == "legacy"


def test_an_amount_finer_than_storage_is_rounded_not_refused(caplog) -> None:
    assert cents_to_dollars("1.00000000000051", "here", "amount") == Decimal("0.010000000000")
    assert "rounded" in caplog.text


def test_an_unknown_cost_type_is_stored_as_it_comes() -> None:
    item = {"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-01T01:00:00Z",
            "group": {"cost_type": "voice_minutes", "token_type": None},
            "cost": {"amount": "10", "list_amount": "10", "currency": "USD", "requests": None}}
    (row,) = analytics_cost_rows({"data": [item]}, "acme", "page 1")
    assert row.cost_type == "voice_minutes" and row.amount_usd == Decimal("0.1")
