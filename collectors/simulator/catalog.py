"""The simulated Models API (``GET /v1/models`` and ``GET /v1/models/{model_id}``).

Contracts
---------
- :data:`CATALOG` lists every model the generator produces usage for
  (:data:`collectors.simulator.generator.MODEL_DISPLAY_NAMES`), with its real ``line``, plus
  ``claude-fable-5-2`` (line ``fable``), ``claude-mythos-5-2`` (line ``mythos``), one
  deprecated model (``claude-sonnet-4-6``) and one retired model
  (``claude-3-5-haiku-20241022``).
- Every item has every field of the SDK's ``ModelInfo``: ``id``, ``type`` ``"model"``,
  ``display_name``, ``created_at``, ``lifecycle``, ``line``, ``deprecated_at``,
  ``retires_at``, ``max_input_tokens``, ``max_tokens`` and ``capabilities`` (null here).
- The listing is newest first (``created_at`` descending, then ``id``), paged like the other
  id-cursor listings: ``limit`` (1..1000, default 20), ``after_id`` / ``before_id``,
  ``{"data", "has_more", "first_id", "last_id"}``.
- ``lifecycle[]`` filters (values ``active``, ``deprecated``, ``retired``; 400 otherwise);
  without it the listing holds ``active`` and ``deprecated`` models only, as the real API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Sequence

from .endpoints import ApiError, Query, enum_list, id_page
from .generator import MODEL_DISPLAY_NAMES, parse_rfc3339

LIFECYCLES: tuple[str, ...] = ("active", "deprecated", "retired")
DEFAULT_LIFECYCLES: tuple[str, ...] = ("active", "deprecated")


@dataclass(frozen=True)
class CatalogModel:
    """One model of the simulated catalogue (times are RFC 3339 strings, UTC)."""

    id: str
    display_name: str
    line: str | None
    created_at: str
    lifecycle: str = "active"
    deprecated_at: str | None = None
    retires_at: str | None = None
    max_input_tokens: int = 200_000
    max_tokens: int = 64_000

    def to_json(self) -> dict[str, object]:
        """The ``ModelInfo`` JSON object."""
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": self.lifecycle,
            "line": self.line,
            "deprecated_at": self.deprecated_at,
            "retires_at": self.retires_at,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "capabilities": None,
        }


def _name(model_id: str) -> str:
    return MODEL_DISPLAY_NAMES[model_id]


CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("claude-mythos-5-2", "Claude Mythos 5.2", "mythos", "2026-11-03T00:00:00Z",
                 max_input_tokens=1_000_000, max_tokens=128_000),
    CatalogModel("claude-fable-5-2", "Claude Fable 5.2", "fable", "2026-11-03T00:00:00Z"),
    CatalogModel("claude-opus-5-5", _name("claude-opus-5-5"), "opus", "2026-09-15T00:00:00Z",
                 max_input_tokens=1_000_000, max_tokens=128_000),
    CatalogModel("claude-sonnet-5-5", _name("claude-sonnet-5-5"), "sonnet",
                 "2026-09-15T00:00:00Z", max_input_tokens=1_000_000),
    CatalogModel("claude-haiku-5-5", _name("claude-haiku-5-5"), "haiku", "2026-09-15T00:00:00Z"),
    CatalogModel("claude-sonnet-4-6", _name("claude-sonnet-4-6"), "sonnet",
                 "2026-02-17T00:00:00Z", lifecycle="deprecated",
                 deprecated_at="2026-10-01T00:00:00Z", retires_at="2027-04-01T00:00:00Z",
                 max_input_tokens=1_000_000),
    CatalogModel("claude-haiku-4-5-20251001", _name("claude-haiku-4-5-20251001"), "haiku",
                 "2025-10-01T00:00:00Z"),
    CatalogModel("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "haiku",
                 "2024-10-22T00:00:00Z", lifecycle="retired",
                 deprecated_at="2025-07-01T00:00:00Z", retires_at="2026-02-19T00:00:00Z",
                 max_tokens=8_192),
)

_BY_ID: Mapping[str, CatalogModel] = {m.id: m for m in CATALOG}


def _newest_first(models: Sequence[CatalogModel]) -> list[CatalogModel]:
    def key(m: CatalogModel) -> tuple[datetime, str]:
        return parse_rfc3339(m.created_at), m.id
    return sorted(models, key=key, reverse=True)


def list_models(query: Query) -> dict[str, object]:
    """``GET /v1/models``: one page of the catalogue, newest first (see the module contracts)."""
    wanted = enum_list(query, "lifecycle", LIFECYCLES) or list(DEFAULT_LIFECYCLES)
    items = [m.to_json() for m in _newest_first(CATALOG) if m.lifecycle in wanted]
    return id_page(items, query)


def get_model(model_id: str) -> dict[str, object]:
    """``GET /v1/models/{model_id}`` (any lifecycle; 404 for an unknown id)."""
    model = _BY_ID.get(model_id)
    if model is None:
        raise ApiError(404, "not_found_error", f"model: {model_id}")
    return model.to_json()


__all__: Sequence[str] = ("CATALOG", "CatalogModel", "get_model", "list_models")
