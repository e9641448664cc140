"""The spendwatch command end to end: collect, spend (text and JSON), demo."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from conftest import ADMIN_KEY, Simulator, copy_warehouse, usd, write_config
from spendwatch.timeutil import local_range

CHICAGO = ZoneInfo("America/Chicago")


def spendwatch(*args: str, cwd: Path, key: str | None = ADMIN_KEY, timeout: float = 300,
               python: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    if key:
        env["ANTHROPIC_ADMIN_KEY"] = key
    return subprocess.run([sys.executable, *python, "-m", "spendwatch", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def simulator(module_simulator: Simulator) -> Simulator:
    """This module's tests only read the simulator: one for all of them."""
    return module_simulator


@pytest.fixture(scope="module")
def template(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The warehouse collected once, by the command, for every test of the module."""
    home = tmp_path_factory.mktemp("cli-template")
    write_config(home, [{"name": "acme", "base_url": simulator.url}])
    result = spendwatch("collect", "--since", "2026-11-20", "--until", "2026-11-22", cwd=home)
    assert result.returncode == 0, result.stderr
    assert "acme:" in result.stdout and "usage rows" in result.stdout
    return home / "data" / "spendwatch.duckdb"


@pytest.fixture
def collected(template: Path, isolated: Path, simulator: Simulator) -> Path:
    """The test's own folder: a config and a copy of the collected warehouse."""
    write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    copy_warehouse(template, isolated)
    return isolated


def test_spend_json_totals_local_days_exactly(collected: Path, isolated: Path,
                                              simulator: Simulator) -> None:
    result = spendwatch("spend", "--since", "2026-11-20", "--until", "2026-11-22",
                        "--by", "date,model", "--json", cwd=isolated)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(
        ["date", "model", "cost_usd", "uncached_input_tokens", "cache_write_5m_tokens",
         "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
         "web_search_requests", "unpriced_tokens"]))}
    assert {r["date"] for r in rows} == {"2026-11-20", "2026-11-21", "2026-11-22"}
    assert all(isinstance(r["cost_usd"], str) for r in rows)
    start, end = local_range(date(2026, 11, 20), date(2026, 11, 22), CHICAGO)
    truth = simulator.truth(start, end)
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(truth["cost_usd"])
    assert sum(r["output_tokens"] for r in rows) == truth["tokens"]["output_tokens"]
    per_model = {}
    for r in rows:
        per_model[r["model"] or "null"] = per_model.get(r["model"] or "null", 0) + Decimal(
            r["cost_usd"])
    assert per_model == {m: Decimal(v) for m, v in truth["by_model"].items()}


def test_spend_by_api_key_and_cache_status_shows_names(collected: Path, isolated: Path,
                                                       simulator: Simulator) -> None:
    result = spendwatch("spend", "--since", "2026-11-21", "--until", "2026-11-21",
                        "--by", "api_key,cache_status", "--json", cwd=isolated)
    rows = json.loads(result.stdout)
    names = {r["api_key"] for r in rows}
    assert "support-bot-prod" in names and "(no API key)" in names
    statuses = {r["cache_status"] for r in rows}
    assert statuses == {"uncached_input", "cache_write_5m", "cache_write_1h", "cache_read",
                        "output", "other"}
    reads = [r for r in rows if r["cache_status"] == "cache_read"]
    assert all(r["output_tokens"] == 0 and r["cache_read_tokens"] > 0 for r in reads)


def test_spend_prints_a_table_with_a_total(collected: Path, isolated: Path) -> None:
    result = spendwatch("spend", "--since", "2026-11-20", "--until", "2026-11-22", "--by",
                        "feature", cwd=isolated)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Spend 2026-11-20 .. 2026-11-22"
    assert result.stdout.splitlines()[-1].startswith("Total: $")


def test_spend_with_an_unknown_dimension_is_one_line_exit_2(isolated: Path) -> None:
    write_config(isolated, [{"name": "acme"}])  # no warehouse: the argument fails first
    result = spendwatch("spend", "--by", "colour", cwd=isolated)
    assert result.returncode == 2
    assert "unknown dimension 'colour'" in result.stderr


def test_spend_before_any_collection_says_what_to_run(isolated: Path) -> None:
    write_config(isolated, [{"name": "acme"}])
    result = spendwatch("spend", cwd=isolated)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("does not exist yet; run `spendwatch collect` first")


def test_every_usage_mistake_is_one_line_and_exit_2(isolated: Path) -> None:
    write_config(isolated, [{"name": "acme"}])
    for args, expected in [(("spend", "--since", "2026-13-01"),
                            "error: --since: '2026-13-01' is not a date; use YYYY-MM-DD"),
                           (("spend", "--colour"), "error: No such option '--colour'"),
                           (("no-such-command",), "error: No such command 'no-such-command'"),
                           (("alerts", "unsilence", "one"), "error: ")]:
        result = spendwatch(*args, cwd=isolated)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, args
        assert "Traceback" not in result.stderr and "Usage:" not in result.stderr


def test_a_wrong_key_exits_non_zero_without_showing_it(isolated: Path,
                                                       simulator: Simulator) -> None:
    write_config(isolated, [{"name": "acme", "base_url": simulator.url}])
    result = spendwatch("collect", "--since", "2026-11-22", "--until", "2026-11-22",
                        cwd=isolated, key="sk-ant-api03-not-an-admin-key")
    assert result.returncode == 1
    assert "looks like a standard workspace API key" in result.stderr
    assert "not-an-admin-key" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.file_only("the demo writes its own DuckDB file, whatever the backend")
def test_the_demo_matches_the_simulators_ground_truth(tmp_path: Path) -> None:
    # 21 days: the week whose report is due (Monday 07:00 by default) is always held whole.
    result = spendwatch("demo", "--dir", str(tmp_path / "demo"), "--days", "21", "--no-serve",
                        cwd=tmp_path, key=None)
    assert result.returncode == 0, result.stderr
    assert "The warehouse matches the simulator's ground truth to the cent." in result.stdout
    assert (tmp_path / "demo" / "spendwatch.duckdb").exists()
    assert oct((tmp_path / "demo" / "admin_key").stat().st_mode & 0o777) == "0o600"
    assert "Alerts:" in result.stdout and "messages sent to the simulated Slack" in result.stdout
    reports = list((tmp_path / "demo" / "reports").glob("spendwatch-demo-org-*.csv"))
    assert len(reports) == 1 and f"Weekly report {reports[0].stem[-8:]}: " in result.stdout
    assert "summary sent to the simulated Slack" in result.stdout
    # Yesterday's digest (the day before, before 07:00): every day before today is stored.
    assert re.search(r"Daily digest of \d{4}-\d\d-\d\d \(\$[\d,]+\.\d\d\) sent", result.stdout)
    firing = [line for line in result.stdout.splitlines() if "FIRING" in line]
    assert len(firing) == len(set(firing))  # each names its scope: no line twice
    # Off a terminal the collection says where it is every few seconds, never silent long.
    assert re.search(r"^demo-org: \d+ of \d+ windows \(", result.stderr, re.MULTILINE)
    assert "WARNING" not in result.stderr and "%" not in result.stderr  # no progress bar


def test_progress_off_a_terminal_is_a_line_every_few_seconds() -> None:
    import io
    import time
    from types import SimpleNamespace

    from spendwatch.cli.progress import ProgressBar

    out = io.StringIO()  # not a terminal
    bar = ProgressBar("acme", 3, stream=out, every=0.05)
    window = SimpleNamespace(stream="usage", start=datetime(2026, 11, 20, tzinfo=timezone.utc))
    bar.advance(window)
    time.sleep(0.3)
    bar.advance(window)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("acme: ") for line in lines)
    assert "acme: 1 of 3 windows (usage 2026-11-20)" in lines
    assert lines[-1] == "acme: 2 of 3 windows (usage 2026-11-20)"


def test_reconcile_lists_estimated_against_billed(collected: Path, isolated: Path) -> None:
    result = spendwatch("reconcile", "--since", "2026-11-21", "--until", "2026-11-21", "--json",
                        cwd=isolated)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    priced = [r for r in rows if r["model"]]
    assert len(priced) == 5
    assert all(Decimal(r["difference_usd"]) == 0 and Decimal(r["billed_usd"]) > 0
               for r in priced)
    text = spendwatch("reconcile", "--since", "2026-11-21", "--until", "2026-11-21",
                      cwd=isolated)
    assert "claude-opus-5-5" in text.stdout and "+0.00%" in text.stdout
    # Spend that is not a model's is listed under the one name every surface gives it, with
    # its spend and nothing to compare; the day's rows add up to `spend`'s day.
    (other,) = [r for r in rows if r["model"] is None]
    assert not other["compared"] and Decimal(other["spend_usd"]) > 0
    by_model = json.loads(spendwatch("spend", "--since", "2026-11-21", "--until", "2026-11-21",
                                     "--by", "model", "--json", cwd=isolated).stdout)
    assert {r["model"]: Decimal(r["cost_usd"]) for r in by_model} == {
        r["model"]: Decimal(r["spend_usd"]) for r in rows}
    (line,) = [t for t in text.stdout.splitlines() if "(not a model)" in t]
    assert line.split()[-4:] == [usd(Decimal(other["spend_usd"])), "-", "-", "-"]
    table = spendwatch("spend", "--since", "2026-11-21", "--until", "2026-11-21", "--by",
                       "model", cwd=isolated).stdout
    assert "(not a model)" in table and "\n-  " not in table


@pytest.mark.skipif(int(duckdb.__version__.split(".")[0]) < 2, reason=(
    "DuckDB 1.4 (the DuckLake line) imports pandas to convert any bound parameter"))
def test_reading_figures_leaves_pandas_unloaded(collected: Path, isolated: Path) -> None:
    # The feature map and the price table reach SQL as bound lists: DuckDB's ``register`` of
    # a Python object imports pandas, 46 MB of a reader process's memory (the CLI's; the
    # worker's writers still register Arrow tables, the dashboard's charts load it).
    for args in (("spend", "--since", "2026-11-20", "--until", "2026-11-22", "--by",
                  "feature,model"), ("savings", "--since", "2026-11-20", "--until",
                                     "2026-11-21")):
        result = spendwatch(*args, cwd=isolated, python=("-X", "importtime"))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Total: $" in result.stdout or "caching saved $" in result.stdout
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert {"duckdb", "spendwatch.warehouse.spend"} <= imported
        assert "pandas" not in imported, args


def test_savings_shows_realized_and_potential(collected: Path, isolated: Path) -> None:
    result = spendwatch("savings", "--since", "2026-11-20", "--until", "2026-11-21", "--json",
                        cwd=isolated)
    assert result.returncode == 0, result.stderr
    book = json.loads(result.stdout)
    realized = {k: Decimal(v) for k, v in book["realized"].items()}
    assert realized["cache_savings_usd"] > 0 and realized["batch_savings_usd"] > 0
    assert realized["total_usd"] == realized["baseline_usd"] - realized["actual_usd"]
    assert {p["lever"] for p in book["potential"]} >= {"caching", "routing"}
    text = spendwatch("savings", "--since", "2026-11-20", "--until", "2026-11-21", cwd=isolated)
    assert "caching saved $" in text.stdout and "[routing]" in text.stdout
