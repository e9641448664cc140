"""Model lines: the simulated Models API, the collector that stores it, and the line lookup."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import anthropic
import duckdb
import pytest
import requests

from collectors.models import fetch_models, refresh_models
from collectors.retry import RetryPolicy
from collectors.simulator.generator import MODEL_DISPLAY_NAMES
from conftest import ADMIN_KEY, REPO, SIM_NOW, Simulator, write_config
from warehouse import db_path, exists
from spendwatch import storage
from spendwatch.config import Config, load_config
from spendwatch.errors import AuthError, ConfigError
from spendwatch.lines import FALLBACK_PATTERN, line_from_id, model_lines

API_KEY = "sk-ant-api03-sim"  # the simulator's default normal key
KEY_ENV = "SPENDWATCH_TEST_MODELS_KEY"
EVERY_LIFECYCLE = ["active", "deprecated", "retired"]
SIMULATED_LINES = {
    "claude-mythos-5-2": "mythos",
    "claude-fable-5-2": "fable",
    "claude-opus-5-5": "opus",
    "claude-sonnet-5-5": "sonnet",
    "claude-haiku-5-5": "haiku",
    "claude-sonnet-4-6": "sonnet",
    "claude-haiku-4-5-20251001": "haiku",
    "claude-3-5-haiku-20241022": "haiku",
}


def _config(folder: Path, simulator: Simulator, models: bool = True,
            page_limit: int = 1000) -> Config:
    extra = f'[models]\napi_key_env = "{KEY_ENV}"\nbase_url = "{simulator.url}"\n' if models else ""
    path = write_config(folder, [{"name": "acme", "base_url": simulator.url}], extra=extra,
                        collection=f"page_limit = {page_limit}")
    return load_config(path)


def _model_requests(simulator: Simulator) -> list[dict[str, Any]]:
    return [r for r in simulator.requests_served() if r["path"].startswith("/v1/models")]


def _stored(config: Config) -> dict[str, tuple[Any, ...]]:
    with storage.reader(config) as conn:
        rows = conn.execute("SELECT model_id, display_name, line, lifecycle, retires_at, fetched_at "
                            "FROM models").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def _no_sleep() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, sleep=lambda seconds: None)


# --- the simulated Models API ----------------------------------------------------------------


def test_simulator_lists_models_with_sdk_shape_newest_first_and_retired_only_on_request(
        simulator: Simulator) -> None:
    client = anthropic.Anthropic(api_key=API_KEY, base_url=simulator.url, max_retries=0)
    default = list(client.models.list(limit=2))
    every = list(client.models.list(limit=3, lifecycle=EVERY_LIFECYCLE))  # type: ignore[arg-type]

    assert {m.id: m.line for m in every} == SIMULATED_LINES
    assert set(MODEL_DISPLAY_NAMES) <= {m.id for m in every}, "every model with usage is listed"
    assert [m.id for m in default] == [m.id for m in every if m.lifecycle != "retired"]
    assert [m.created_at for m in every] == sorted((m.created_at for m in every), reverse=True)
    retired = client.models.retrieve("claude-3-5-haiku-20241022")
    assert retired.lifecycle == "retired" and retired.retires_at is not None
    assert retired.deprecated_at is not None and retired.type == "model"
    assert all(m.display_name == MODEL_DISPLAY_NAMES[m.id] for m in every if m.id in MODEL_DISPLAY_NAMES)

    raw = requests.get(simulator.url + "/v1/models", params={"limit": 2},
                       headers={"x-api-key": API_KEY}, timeout=10).json()
    assert set(raw) == {"data", "has_more", "first_id", "last_id"} and raw["has_more"] is True
    assert set(raw["data"][0]) >= {"id", "type", "display_name", "created_at", "lifecycle", "line",
                                   "retires_at", "deprecated_at"}


@pytest.mark.parametrize("key, status, error_type", [
    (API_KEY, 200, None),
    (ADMIN_KEY, 401, "authentication_error"),
    ("sk-ant-api03-unknown-key", 401, "authentication_error"),
    (None, 401, "authentication_error"),
])
def test_simulator_models_endpoint_takes_only_a_normal_api_key(
        simulator: Simulator, key: str | None, status: int, error_type: str | None) -> None:
    headers = {"x-api-key": key} if key else {}
    response = requests.get(simulator.url + "/v1/models", headers=headers, timeout=10)
    assert response.status_code == status, response.text
    if error_type:
        assert response.json()["error"]["type"] == error_type
        assert key is None or key not in response.text


def test_simulator_normal_key_is_still_forbidden_on_admin_endpoints(simulator: Simulator) -> None:
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic.Anthropic(api_key=API_KEY, base_url=simulator.url,
                            max_retries=0).organization.workspaces.list()
    assert list(anthropic.Anthropic(api_key=ADMIN_KEY, base_url=simulator.url,
                                    max_retries=0).organization.workspaces.list())


@pytest.fixture
def custom_key_simulator() -> Iterator[str]:
    """A simulator process started with ``--api-key``; yields its URL."""
    process = subprocess.Popen([sys.executable, "-m", "collectors.simulator", "--port", "0",
                                "--api-key", "sk-ant-api03-custom-one", "--api-key", "custom-two"],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        assert "listening on" in line, line
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_simulator_api_key_flag_replaces_the_default_normal_key(custom_key_simulator: str) -> None:
    def status(key: str, path: str = "/v1/models") -> int:
        return requests.get(custom_key_simulator + path, headers={"x-api-key": key},
                            timeout=10).status_code

    assert status("sk-ant-api03-custom-one") == 200
    assert status("custom-two") == 200
    assert status(API_KEY) == 401
    assert status("custom-two", "/v1/organizations/workspaces") == 403, \
        "a configured normal key is forbidden on admin endpoints whatever it looks like"


# --- the collector ---------------------------------------------------------------------------


def test_refresh_stores_every_model_with_its_line_from_all_pages(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    config = _config(isolated, simulator, page_limit=3)

    assert refresh_models(config, SIM_NOW, _no_sleep()) == len(SIMULATED_LINES)

    stored = _stored(config)
    assert {model: row[1] for model, row in stored.items()} == SIMULATED_LINES
    assert stored["claude-3-5-haiku-20241022"][1:4] == (
        "haiku", "retired", datetime(2026, 2, 19, tzinfo=timezone.utc))
    assert stored["claude-fable-5-2"][0] == "Claude Fable 5.2"
    assert all(row[4] == SIM_NOW for row in stored.values())
    pages = _model_requests(simulator)
    assert len(pages) == 3 and all(p["status"] == 200 for p in pages)
    assert all(p["query"]["lifecycle[]"] == EVERY_LIFECYCLE for p in pages)
    assert "after_id" not in pages[0]["query"] and "after_id" in pages[1]["query"]


def test_refresh_again_updates_rows_in_place(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    config = _config(isolated, simulator)
    later = datetime(2026, 11, 25, tzinfo=timezone.utc)
    with storage.writer(config) as conn:
        conn.execute("INSERT INTO models VALUES ('claude-opus-5-5', 'old', NULL, NULL, NULL, ?)",
                     [SIM_NOW])

    refresh_models(config, SIM_NOW, _no_sleep())
    assert refresh_models(config, later, _no_sleep()) == len(SIMULATED_LINES)

    stored = _stored(config)
    assert len(stored) == len(SIMULATED_LINES)
    assert stored["claude-opus-5-5"] == ("Claude Opus 5.5", "opus", "active", None, later)


def test_admin_key_is_refused_with_a_message_asking_for_a_normal_key(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, ADMIN_KEY)
    config = _config(isolated, simulator)

    with pytest.raises(AuthError) as caught:
        refresh_models(config, SIM_NOW, _no_sleep())

    message = str(caught.value)
    assert "401 authentication_error" in message
    assert "needs a normal API key (sk-ant-api...), not an Admin key" in message
    assert KEY_ENV in message and "\n" not in message
    assert ADMIN_KEY not in message and ADMIN_KEY not in repr(caught.value)
    assert len(_model_requests(simulator)) == 1, "401 is not retried"
    assert not exists(db_path(config)), "nothing is written when the fetch fails"


def test_not_configured_returns_zero_and_fetches_nothing(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    config = _config(isolated, simulator, models=False)
    assert config.models.api_key_env is None

    assert refresh_models(config, SIM_NOW) == 0

    assert simulator.requests_served() == []
    assert not exists(db_path(config))


def test_unset_key_variable_is_a_one_line_config_error_naming_it(
        isolated: Path, simulator: Simulator) -> None:
    config = _config(isolated, simulator)

    with pytest.raises(ConfigError) as caught:
        fetch_models(config, _no_sleep())

    assert KEY_ENV in str(caught.value) and "\n" not in str(caught.value)
    assert simulator.requests_served() == []


def test_retryable_failure_is_retried_then_succeeds(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    config = _config(isolated, simulator)
    simulator.fault(path="/v1/models", status=529)

    assert len(fetch_models(config, _no_sleep())) == len(SIMULATED_LINES)

    assert [r["status"] for r in _model_requests(simulator)] == [529, 200]


# --- line lookup -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_id, line", [
    ("claude-3-5-haiku", "haiku"),
    ("claude-3-5-haiku-20241022", "haiku"),
    ("claude-haiku-4-5-20251001", "haiku"),
    ("claude-opus-5-5", "opus"),
    ("claude-sonnet-4-6", "sonnet"),
    ("claude-fable-5-2", "fable"),
    ("claude-mythos-5-2", "mythos"),
    ("sonnet", "sonnet"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "haiku"),
    ("Claude-Opus-4", "opus"),
    ("claude-haiku-sonnet-x", "haiku"),
    ("claude-opusx-1", None),
    ("claude-2-1", None),
    ("gpt-4o", None),
    ("", None),
    (None, None),
])
def test_line_from_id_finds_a_line_word_between_dashes(model_id: str | None,
                                                       line: str | None) -> None:
    assert line_from_id(model_id) == line
    assert (FALLBACK_PATTERN.search(model_id or "") is not None) == (line is not None)


@pytest.fixture
def lines_db(isolated: Path) -> Path:
    """A database whose models table holds lines the ID fallback would get wrong."""
    path = isolated / "lines.duckdb"
    with storage.writer_at(path) as conn:
        conn.executemany("INSERT INTO models (model_id, display_name, line, fetched_at) "
                         "VALUES (?, ?, ?, ?)", [
                             ("claude-nova-1", "Nova", "opus", SIM_NOW),        # no line word
                             ("claude-haiku-router", "Router", "sonnet", SIM_NOW),  # other word
                             ("claude-sonnet-lite", "Lite", None, SIM_NOW),     # no line at all
                             ("claude-nova-2", "Nova 2", "fable", SIM_NOW),     # undated alias
                         ])
    return path


def test_model_lines_prefers_the_stored_line_over_the_id(lines_db: Path) -> None:
    with storage.reader_at(lines_db) as conn:
        lines = model_lines(conn, ["claude-nova-1", "claude-haiku-router", "claude-sonnet-lite",
                                   "claude-nova-2-20261101"])
    assert lines == {"claude-nova-1": "opus", "claude-haiku-router": "sonnet",
                     "claude-sonnet-lite": None, "claude-nova-2-20261101": "fable"}


def test_model_lines_falls_back_on_the_id_and_maps_none_to_none(lines_db: Path) -> None:
    with storage.reader_at(lines_db) as conn:
        lines = model_lines(conn, iter(["claude-opus-5-5", "claude-3-5-haiku-20241022",
                                        "claude-unknown-1", None, "claude-opus-5-5"]))
    assert lines == {"claude-opus-5-5": "opus", "claude-3-5-haiku-20241022": "haiku",
                     "claude-unknown-1": None, None: None}


def test_model_lines_without_a_models_table_uses_the_fallback() -> None:
    conn = duckdb.connect(":memory:")
    try:
        assert model_lines(conn, ["claude-mythos-5-2", None]) == {"claude-mythos-5-2": "mythos",
                                                                  None: None}
    finally:
        conn.close()


def test_lines_of_simulated_usage_come_from_the_refreshed_table(
        isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    config = _config(isolated, simulator)
    refresh_models(config, SIM_NOW, _no_sleep())
    with storage.writer(config) as conn:
        conn.execute("UPDATE models SET line = 'mythos' WHERE model_id = 'claude-haiku-5-5'")

    with storage.reader(config) as conn:
        lines = model_lines(conn, MODEL_DISPLAY_NAMES)

    assert lines == {model: SIMULATED_LINES[model] for model in MODEL_DISPLAY_NAMES} | {
        "claude-haiku-5-5": "mythos"}, "the stored line is used, not the ID"
