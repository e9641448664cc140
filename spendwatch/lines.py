"""Model lines (haiku, sonnet, opus, fable, mythos): which line a model ID belongs to.

Where the line comes from
-------------------------
- **The Models API**, when ``[models] api_key_env`` is configured: ``collectors.models.
  refresh_models`` stores every listed model, with the ``line`` the API gives, in the
  ``models`` table. The API's documentation says not to infer the line from the ID when the
  API gives one, so a stored model always wins, including a stored ``line`` of null (the model
  belongs to no line): that stays None and is never guessed.
- **The fallback on the ID** otherwise (nothing configured, or a model the table does not
  hold): :func:`line_from_id`, the first of ``haiku``, ``sonnet``, ``opus``, ``fable`` or
  ``mythos`` (leftmost in the ID) that appears as a whole dash-separated word, so
  ``claude-3-5-haiku``, ``claude-haiku-4-5-20251001`` and ``claude-opus-5-5`` all work;
  anything else is None.

A model ID is looked up in the table as given, then as its alias without a trailing
``-YYYYMMDD`` date (``claude-haiku-4-5-20251001`` finds a stored ``claude-haiku-4-5``).
Nothing here touches the network.
"""

from __future__ import annotations

import re
from typing import Iterable

import duckdb

#: Every line the Models API documents, in its order.
MODEL_LINES: tuple[str, ...] = ("haiku", "sonnet", "opus", "fable", "mythos")

#: A line name as a whole dash-separated word of a model ID (case-insensitive).
FALLBACK_PATTERN = re.compile(r"(?<![^-])(haiku|sonnet|opus|fable|mythos)(?![^-])", re.IGNORECASE)

_DATE_SUFFIX = re.compile(r"-\d{8}$")


def line_from_id(model_id: str | None) -> str | None:
    """The line named in ``model_id`` (lower case), or None.

    The fallback for models the Models API has not described: the leftmost of haiku, sonnet,
    opus, fable or mythos that is a whole dash-separated word of the ID. ``None`` or an ID
    naming no line gives None; a line word inside another word (``claude-opusx``) does not count.
    """
    if not model_id:
        return None
    match = FALLBACK_PATTERN.search(model_id)
    return match.group(1).lower() if match else None


def undated(model_id: str) -> str:
    """``model_id`` without a trailing ``-YYYYMMDD`` date (unchanged when it has none)."""
    return _DATE_SUFFIX.sub("", model_id)


def _stored_lines(conn: duckdb.DuckDBPyConnection) -> dict[str, str | None]:
    """model_id -> line of every stored model; empty when the table does not exist yet."""
    exists = conn.execute("SELECT count(*) FROM information_schema.tables "
                          "WHERE table_name = 'models' AND table_catalog = current_database() "
                          "AND table_schema = current_schema()").fetchone()
    if not exists or not exists[0]:
        return {}
    return {str(model_id): (str(line) if line is not None else None)
            for model_id, line in conn.execute("SELECT model_id, line FROM models").fetchall()}


def model_lines(conn: duckdb.DuckDBPyConnection,
                model_ids: Iterable[str | None]) -> dict[str | None, str | None]:
    """The line of each of ``model_ids``: ``{model_id: line or None}``, one entry per distinct ID.

    For each ID: the ``line`` stored in the ``models`` table for that exact ID, else for its
    undated alias (trailing ``-YYYYMMDD`` removed), even when that stored line is null;
    otherwise :func:`line_from_id`. ``None`` maps to None. ``conn`` may be a reader or a
    writer; a database without the ``models`` table uses the fallback for every ID. Reads only.
    """
    ids = set(model_ids)
    stored = _stored_lines(conn) if any(i is not None for i in ids) else {}
    lines: dict[str | None, str | None] = {}
    for model_id in ids:
        if model_id is None:
            lines[model_id] = None
        elif model_id in stored:
            lines[model_id] = stored[model_id]
        elif undated(model_id) in stored:
            lines[model_id] = stored[undated(model_id)]
        else:
            lines[model_id] = line_from_id(model_id)
    return lines
