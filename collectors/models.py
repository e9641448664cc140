"""The Models API collector: every model's line, display name and lifecycle, into ``models``.

``client.models.list()`` needs a **normal API key** (``sk-ant-api...``), not the Admin key the
usage and cost collectors use: ``[models] api_key_env`` names the environment variable that
holds it, and nothing is fetched while it is not configured (``spendwatch.lines`` then falls
back on the model ID). The key is passed to the SDK explicitly (the SDK's own
``ANTHROPIC_API_KEY`` lookup is not used) and never appears in a message or a log line.

Every page is fetched under the shared :class:`RetryPolicy` (SDK retries off), asking for
every lifecycle (active, deprecated and retired), so usage of a retired model still finds
its line. A 401/403 is an :class:`AuthError` saying a normal API key is needed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Literal

import anthropic
import duckdb

from collectors.bounds import RunBounds, unbounded
from collectors.clients import USER_AGENT, check_cursor, sdk_call
from collectors.retry import CAP_SETTING, TransportFailure, call_with_retry
from spendwatch import storage
from spendwatch.config import Config
from spendwatch.retry import RetryPolicy
from spendwatch.secrets import Secret, resolve_secret
from spendwatch.errors import AuthError, ConfigError, MalformedResponse
from spendwatch.timeutil import UTC, parse_utc

log = logging.getLogger(__name__)

Lifecycle = Literal["active", "deprecated", "retired"]
#: Every lifecycle is asked for: by default the API leaves retired models out.
LIFECYCLES: list[Lifecycle] = ["active", "deprecated", "retired"]


def resolve_models_key(config: Config,
                       environ: Callable[[str], str | None] = os.environ.get) -> Secret:
    """The normal API key for the Models API, read from ``[models] api_key_env``.

    Raises ConfigError (one line naming the variable, never the key) when the option is not
    configured or the variable is unset or empty.
    """
    name = config.models.api_key_env
    if not name:
        raise ConfigError(f"{config.path}: [models] api_key_env is not set; name the environment "
                          "variable that holds a normal API key (sk-ant-api...)")
    return resolve_secret(f"{config.path}: [models] api_key_env", "API key",
                          "a normal Anthropic API key (sk-ant-api...), not an Admin key",
                          env=name, environ=environ)


def models_client(config: Config, key: Secret) -> anthropic.Anthropic:
    """The SDK client for the Models API: explicit key, ``[models] base_url``, SDK retries off."""
    return anthropic.Anthropic(api_key=key.reveal(), base_url=config.models.base_url,
                               max_retries=0, timeout=config.collection.timeout_seconds,
                               default_headers={"User-Agent": USER_AGENT})


def _auth_message(config: Config, key: Secret, failure: TransportFailure) -> str:
    kind = ("the key is an Admin key (sk-ant-admin...)" if key.reveal().startswith("sk-ant-admin")
            else "the key was refused")
    return (f"Models API {config.models.base_url}: {failure.status} {failure.error_type}: {kind}; "
            "the Models API needs a normal API key (sk-ant-api...), not an Admin key: set "
            f"{config.models.api_key_env} to a standard API key from the Claude Console")


def _when(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return parse_utc(value)
        except ValueError:
            pass
    raise MalformedResponse(f"{where}: retires_at is not an RFC 3339 date-time")


def _model_row(item: Any, where: str) -> dict[str, Any]:
    model_id = getattr(item, "id", None)
    if not isinstance(model_id, str) or not model_id:
        raise MalformedResponse(f"{where}: a listed model has no valid 'id'")
    line = getattr(item, "line", None)
    display_name = getattr(item, "display_name", None)
    lifecycle = getattr(item, "lifecycle", None)
    return {
        "model_id": model_id,
        "display_name": display_name if isinstance(display_name, str) else None,
        "line": line if isinstance(line, str) and line else None,
        "lifecycle": lifecycle if isinstance(lifecycle, str) else None,
        "retires_at": _when(getattr(item, "retires_at", None), f"{where}: model {model_id!r}"),
    }


def fetch_models(config: Config, policy: RetryPolicy,
                 environ: Callable[[str], str | None] = os.environ.get,
                 bounds: RunBounds | None = None) -> list[dict[str, Any]]:
    """Every model the Models API lists, of every lifecycle, all pages.

    Returns ``[{model_id, display_name, line, lifecycle, retires_at}]`` (``line`` as the API
    gives it, None when null; ``retires_at`` an aware datetime or None), newest first as
    listed, each model once. Pages of ``collection.page_limit`` models, each under ``policy``
    and ``bounds`` (the deadline and stop flag, checked per page; default: none).

    Raises ConfigError when the key cannot be found (see :func:`resolve_models_key`),
    AuthError on 401/403 (not retried), MalformedResponse on a page without the documented
    shape, CollectionError when retries are exhausted or the request is rejected.
    """
    key = resolve_models_key(config, environ)
    bounds = bounds or unbounded("the Models API")
    with models_client(config, key) as client:  # closes its connections
        base_url = config.models.base_url
        rows: dict[str, dict[str, Any]] = {}
        seen_cursors: set[str] = set()
        cursor: str | None = None
        page_number = 0
        while True:
            page_number += 1
            where = f"Models API {base_url}: models page {page_number}"

            def get(after: str | None = cursor) -> Any:
                kwargs: dict[str, Any] = {"limit": config.collection.page_limit,
                                          "lifecycle": LIFECYCLES,
                                          "timeout": bounds.timeout(
                                              config.collection.timeout_seconds)}
                if after is not None:
                    kwargs["after_id"] = after
                try:
                    return sdk_call(lambda: client.models.list(**kwargs), base_url)
                except TransportFailure as failure:
                    if failure.status in (401, 403):
                        raise AuthError(_auth_message(config, key, failure)) from None
                    raise

            page = call_with_retry(lambda: bounds.call(get, where), policy, where, key)
            data = getattr(page, "data", None)
            if not isinstance(data, list):
                raise MalformedResponse(f"{where}: the page has no 'data' list")
            if len(data) > config.collection.page_limit:
                raise MalformedResponse(f"{where}: the page holds {len(data)} models, more "
                                        f"than the {config.collection.page_limit} asked for")
            for item in data:
                row = _model_row(item, where)
                rows.setdefault(row["model_id"], row)
            if not page.has_more:
                break
            cursor = page.last_id
            if not cursor:
                raise MalformedResponse(f"{where}: has_more is true but last_id is missing")
            check_cursor(cursor, seen_cursors, where, "last_id")
    log.info("Models API: %d models in %d page(s)", len(rows), page_number)
    return list(rows.values())


def write_models(config: Config, models: list[dict[str, Any]], now: datetime) -> None:
    """Upsert ``models`` (rows of :func:`fetch_models`) into the ``models`` table, one
    transaction; models no longer listed are kept. Opens and closes the writer."""
    def write(conn: duckdb.DuckDBPyConnection) -> None:
        for m in models:
            conn.execute("DELETE FROM models WHERE model_id = ?", [m["model_id"]])
            conn.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?)",
                         [m["model_id"], m["display_name"], m["line"], m["lifecycle"],
                          m["retires_at"], now])
    storage.written(config, write, "writing the model list")


def refresh_models(config: Config, now: datetime, policy: RetryPolicy | None = None,
                   environ: Callable[[str], str | None] = os.environ.get,
                   bounds: RunBounds | None = None) -> int:
    """Fetch every model and upsert it into ``models``; returns how many were stored.

    Does nothing and returns 0 when ``[models] api_key_env`` is not configured. The fetch
    completes before the database is opened, so a failed fetch writes nothing and the writer
    is held only for the one transaction. ``policy`` defaults to the configured attempts and
    ``retry-after`` cap. Raises what :func:`fetch_models` raises, and DatabaseBusy.
    """
    if config.models.api_key_env is None:
        return 0
    if policy is None:
        policy = RetryPolicy(max_attempts=config.collection.max_attempts,
                             max_retry_after=config.collection.max_retry_after_seconds,
                             cap_setting=CAP_SETTING)
        if bounds is not None:  # the run's deadline, and a retry's wait ends on a stop
            policy = replace(policy, deadline=bounds.deadline, sleep=bounds.sleep,
                             clock=bounds.clock)
    models = fetch_models(config, policy, environ, bounds)
    write_models(config, models, now)
    return len(models)
