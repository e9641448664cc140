"""The weekly CSV report against the simulator: columns, totals, local weeks, safety, re-runs.

One simulator and one collection (America/Chicago, local days 2026-11-15..2026-11-23) serve
every test of this module; the week under test is 2026-W47, Mon 2026-11-16 .. Sun 2026-11-22.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest

from conftest import (ADMIN_KEY, SIM_NOW, Simulator, copied_config, start_simulator_process,
                      write_config)
from spendwatch.warehouse.batch import Batch
from spendwatch import facts, storage
from spendwatch.config import Config, load_config
from spendwatch.warehouse.spend import spend
from reports.weekly import (COLUMNS, apportioned, csv_text, iso_week_range,
                                last_complete_week, weekly_rows, write_csv)
from spendwatch.timeutil import local_range

CHICAGO = ZoneInfo("America/Chicago")
MONDAY, SUNDAY = date(2026, 11, 16), date(2026, 11, 22)
HEADER = ("date,organization,workspace_id,workspace_name,api_key_id,api_key_name,feature,"
          "product,model,"
          "service_tier,uncached_input_tokens,cache_write_5m_tokens,cache_write_1h_tokens,"
          "cache_read_tokens,output_tokens,web_search_requests,cost_usd,list_cost_usd,cost_basis,"
          "uncached_input_cost_usd,cache_write_5m_cost_usd,cache_write_1h_cost_usd,"
          "cache_read_cost_usd,output_cost_usd,other_cost_usd")
CENT = Decimal("0.01")


def spendwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    env["ANTHROPIC_ADMIN_KEY"] = ADMIN_KEY
    return subprocess.run([sys.executable, "-m", "spendwatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = start_simulator_process()
    yield simulator
    simulator.process.terminate()
    try:
        simulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        simulator.process.kill()


@pytest.fixture(scope="module")
def folder(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config and a database collected over local days around the week (Chicago)."""
    home = tmp_path_factory.mktemp("reports")
    write_config(home, [{"name": "acme", "base_url": sim.url}])
    result = spendwatch("collect", "--since", "2026-11-15", "--until", "2026-11-23", cwd=home)
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def config(folder: Path) -> Config:
    return load_config(folder / "config.toml")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_iso_weeks_and_the_last_complete_week() -> None:
    assert iso_week_range("2026-W47") == (MONDAY, SUNDAY)
    assert iso_week_range("2026-W01") == (date(2025, 12, 29), date(2026, 1, 4))
    for bad in ("2026-47", "2026-W7", "W47", "2026-W54", "2025-W53"):
        with pytest.raises(ValueError, match="is not a week"):
            iso_week_range(bad)
    assert last_complete_week(SIM_NOW, CHICAGO) == "2026-W47"
    # Monday 2026-11-23 04:00 UTC is still Sunday in Chicago: W47 is not complete there yet.
    sunday_night = datetime(2026, 11, 23, 4, 0, tzinfo=timezone.utc)
    assert last_complete_week(sunday_night, CHICAGO) == "2026-W46"
    assert last_complete_week(sunday_night, ZoneInfo("UTC")) == "2026-W47"


def test_rounding_keeps_the_column_total() -> None:
    values = [Decimal("0.0000004")] * 5 + [None, Decimal("1.0000005")]
    rounded = apportioned(values)
    assert sum(r for r in rounded if r is not None) == Decimal("1.000002")
    assert rounded[5] is None and all(r == r.quantize(Decimal("0.000001"))
                                      for r in rounded if r is not None)


def test_the_cli_writes_the_week_with_exact_columns_and_totals(folder: Path, config: Config,
                                                               sim: Simulator) -> None:
    result = spendwatch("report", "weekly", "--week", "2026-W47", cwd=folder)
    assert result.returncode == 0, result.stderr
    path = folder / "reports" / "spendwatch-all-2026-W47.csv"
    assert result.stdout.splitlines()[0] == str(path)
    assert result.stdout.splitlines()[1].startswith("Total: $")
    raw = path.read_bytes()
    assert raw.startswith(HEADER.encode() + b"\r\n") and ",".join(COLUMNS) == HEADER
    rows = read_rows(path)
    assert rows and {r["date"] for r in rows} == {f"2026-11-{d}" for d in range(16, 23)}
    assert {r["cost_basis"] for r in rows} <= {"billed", "allocated", "estimated"}
    assert all(len(r["cost_usd"].split(".")[1]) == 6 for r in rows)
    written = sum(Decimal(r["cost_usd"]) for r in rows)
    # The CLI's total over the same local days, and the simulator's truth for them.
    with storage.reader(config) as conn:
        (cli_total,) = spend(Batch(conn, config), MONDAY, SUNDAY, [])
    truth = sim.truth(*local_range(MONDAY, SUNDAY, CHICAGO))
    assert written.quantize(CENT) == cli_total["cost_usd"].quantize(CENT)
    assert written.quantize(CENT) == Decimal(truth["cost_usd"]).quantize(CENT)
    assert abs(written - Decimal(truth["cost_usd"])) <= Decimal("0.000001")
    assert f"${written.quantize(CENT):,}" in result.stdout
    for column, value in truth["tokens"].items():
        assert sum(int(r[column]) for r in rows) == value, column
    assert sum(int(r["web_search_requests"]) for r in rows) == truth["web_search_requests"]
    # Non-token cost (web search, code execution, session runtime) is in its own column.
    other = (Decimal(truth["web_search_cost_usd"]) + Decimal(truth["code_execution_cost_usd"])
             + Decimal(truth["session_usage_cost_usd"]))
    assert sum(Decimal(r["other_cost_usd"]) for r in rows).quantize(CENT) == other.quantize(CENT)
    assert any(r["model"] == "" and Decimal(r["other_cost_usd"]) > 0 for r in rows)
    keys = [tuple(r[c] for c in COLUMNS[:9]) + (r["cost_basis"],) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_the_local_week_boundary_in_chicago(config: Config, sim: Simulator) -> None:
    """Chicago's week starts at 06:00 UTC: it differs from the UTC week and matches truth."""
    with storage.reader(config) as conn:
        local = weekly_rows(Batch(conn, config), MONDAY, SUNDAY)
        utc = weekly_rows(Batch(conn, replace(config, timezone="UTC")), MONDAY, SUNDAY)
    assert {r["date"] for r in local} == {date(2026, 11, d).isoformat() for d in range(16, 23)}
    for rows, zone in ((local, CHICAGO), (utc, ZoneInfo("UTC"))):
        truth = sim.truth(*local_range(MONDAY, SUNDAY, zone))
        assert sum(r["cost_usd"] for r in rows) == Decimal(truth["cost_usd"])
        assert sum(r["output_tokens"] for r in rows) == truth["tokens"]["output_tokens"]
    assert sum(r["cost_usd"] for r in local) != sum(r["cost_usd"] for r in utc)
    monday_local = sum(r["cost_usd"] for r in local if r["date"] == "2026-11-16")
    monday_truth = sim.truth(*local_range(MONDAY, MONDAY, CHICAGO))
    assert monday_local == Decimal(monday_truth["cost_usd"])


def test_formulas_are_neutralised(config: Config, tmp_path: Path) -> None:
    with storage.reader(config) as conn:
        rows = weekly_rows(Batch(conn, config), MONDAY, SUNDAY, organization="acme")
    rows.append({**rows[0], "workspace_name": "=HYPERLINK(\"x\")", "feature": "@sum",
                 "model": "-1", "service_tier": "\tx"})
    path = write_csv(rows, tmp_path / "r.csv")
    text = path.read_text(encoding="utf-8")
    assert "'+ops notebook" in text
    written = read_rows(path)
    assert any(r["api_key_name"] == "'+ops notebook" for r in written)
    assert written[-1]["workspace_name"] == "'=HYPERLINK(\"x\")"
    assert (written[-1]["feature"], written[-1]["model"], written[-1]["service_tier"]) == (
        "'@sum", "'-1", "'\tx")
    text_columns = [c for c in COLUMNS if not c.endswith(("_tokens", "_usd", "_requests"))]
    for row in written:
        assert not any(row[c].startswith(("=", "+", "-", "@", "\t", "\r")) for c in text_columns)
    # RFC 4180: the quoted cell reads back the same through a plain csv reader.
    assert list(csv.reader(io.StringIO(text)))[0] == list(COLUMNS)


def test_a_re_run_is_byte_identical(folder: Path, tmp_path: Path) -> None:
    first = spendwatch("report", "weekly", "--week", "2026-W47", "--org", "acme", "--out",
                       str(tmp_path / "a.csv"), cwd=folder)
    second = spendwatch("report", "weekly", "--week", "2026-W47", "--org", "acme", "--out",
                        str(tmp_path / "b.csv"), cwd=folder)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").stat().st_size > 1000


def test_the_default_path_names_the_organization(folder: Path) -> None:
    result = spendwatch("report", "weekly", "--week", "2026-W47", "--org", "acme", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "reports" / "spendwatch-acme-2026-W47.csv").exists()


@pytest.mark.parametrize("week", ["2026-47", "2026-W99", "last"])
def test_a_bad_week_is_one_line_exit_2(folder: Path, week: str) -> None:
    result = spendwatch("report", "weekly", "--week", week, cwd=folder)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --week:")
    assert "Traceback" not in result.stderr


def test_an_unknown_org_is_one_line_exit_2(folder: Path) -> None:
    result = spendwatch("report", "weekly", "--week", "2026-W47", "--org", "nope", cwd=folder)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no organization named 'nope'" in result.stderr


@pytest.fixture(scope="module")
def legacy(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The same organization collected through the legacy Admin API: its cost comes per UTC
    day and workspace, allocated over API keys and hours; usage without cost is estimated."""
    home = tmp_path_factory.mktemp("legacy")
    write_config(home, [{"name": "acme", "source": "legacy", "base_url": sim.url}])
    result = spendwatch("collect", "--since", "2026-11-15", "--until", "2026-11-23", cwd=home)
    assert result.returncode == 0, result.stderr
    return load_config(home / "config.toml")


def test_tokens_sit_once_on_the_main_basis_of_allocated_and_estimated_rows(
        legacy: Config, sim: Simulator) -> None:
    with storage.reader(legacy) as conn:
        rows = weekly_rows(Batch(conn, legacy), MONDAY, SUNDAY)
        (cli_total,) = spend(Batch(conn, legacy), MONDAY, SUNDAY, [])
    bases = {r["cost_basis"] for r in rows}
    assert "allocated" in bases, bases  # the legacy cost, spread over keys and hours
    # Every token is counted once: the week's token totals are the CLI's and the truth's.
    truth = sim.truth(*local_range(MONDAY, SUNDAY, CHICAGO))
    for column, value in truth["tokens"].items():
        assert sum(r[column] for r in rows) == value == cli_total[column], column
    assert sum(r["cost_usd"] for r in rows) == cli_total["cost_usd"]
    # A group's tokens are on one row only: the one of its main basis.
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[c] for c in COLUMNS[:9]), []).append(row)
    token_columns = [c for c in COLUMNS if c.endswith(("_tokens", "_requests"))]
    rank = {"billed": 0, "allocated": 1, "estimated": 2, "": 3}
    for key, members in groups.items():
        carrying = [r for r in members if any(r[c] for c in token_columns)]
        assert len(carrying) <= 1, key
        if carrying:
            main = min(members, key=lambda r: rank[r["cost_basis"]])["cost_basis"]
            assert carrying[0]["cost_basis"] == main, key
    # Tokens with no cost row at all keep an empty basis rather than a made-up one.
    assert all(r["cost_usd"] == 0 for r in rows if r["cost_basis"] == "")


def test_a_day_half_billed_half_estimated_keeps_its_tokens_on_the_billed_row(
        folder: Path, tmp_path: Path) -> None:
    """The cost API has reported Sunday until 12:00 UTC only: the rest of Sunday is estimated
    from usage. Groups of that day have a billed and an estimated row; tokens go once, on
    the billed one, and the totals stay the CLI's."""
    config = copied_config(folder / "config.toml", tmp_path)
    with storage.writer(config) as conn:
        conn.execute("DELETE FROM cost_buckets WHERE bucket_start >= "
                     "TIMESTAMPTZ '2026-11-22 12:00:00Z'")
        facts.rebuild(conn)  # the stored facts follow the raw rows, as a window write keeps them
    with storage.reader(config) as conn:
        rows = weekly_rows(Batch(conn, config), MONDAY, SUNDAY)
        (cli_total,) = spend(Batch(conn, config), MONDAY, SUNDAY, [])
    sunday = [r for r in rows if r["date"] == "2026-11-22"]
    by_group: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in sunday:
        by_group.setdefault(tuple(row[c] for c in COLUMNS[:9]), {})[row["cost_basis"]] = row
    mixed = [g for g in by_group.values() if {"billed", "estimated"} <= set(g)]
    assert mixed, "no group of Sunday has both a billed and an estimated row"
    token_columns = [c for c in COLUMNS if c.endswith(("_tokens", "_requests"))]
    for group in mixed:
        assert any(group["billed"][c] for c in token_columns)
        assert not any(group["estimated"][c] for c in token_columns)
        assert group["estimated"]["cost_usd"] > 0
    for column in token_columns:
        assert sum(r[column] for r in rows) == cli_total[column], column
    assert sum(r["cost_usd"] for r in rows) == cli_total["cost_usd"]
    assert len(csv_text(rows).splitlines()) == len(rows) + 1
