"""The dashboard's People and products page on small seeded warehouses (one UTC day each).

One simulator (fast mode and US-only on) serves every organization: an Enterprise-like one
with every cut (also shown with pseudonyms), one collected with no cuts, and a legacy one with
its Claude Code report. Pages run in-process through Streamlit's AppTest at SIM_NOW.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from collectors.simulator import start_simulator
from collectors.sync import CollectOptions, collect
from conftest import ADMIN_KEY, REPO, SIM_NOW, SIM_NOW_TEXT, copy_warehouse, metrics, \
    module_env, usd, write_config
from spendwatch.config import load_config
from spendwatch.cuts import CUTS
from spendwatch.warehouse.batch import read
from spendwatch.warehouse.spend import spend
from warehouse import query

MAIN = REPO / "app" / "main.py"
DAY = datetime(2026, 11, 23, tzinfo=timezone.utc)
#: The page's default period: the 7 local (here UTC) days that end on SIM_NOW's day.
SINCE, UNTIL = date(2026, 11, 18), date(2026, 11, 24)
PRIVACY = "\n[privacy]\npseudonymize_people = true\n"


@pytest.fixture(scope="module")
def simulator() -> Iterator[Any]:
    sim = start_simulator(seed=7, admin_keys=[ADMIN_KEY], now=SIM_NOW, fast_and_us=True)
    yield sim
    sim.close()


def _collected(folder: Path, sim: Any, extra: str = "", **org: object) -> Path:
    path = write_config(folder, [{"name": "acme", "source": "analytics", "base_url": sim.url,
                                  **org}], extra=extra, timezone_name="UTC")
    with module_env(ANTHROPIC_ADMIN_KEY=ADMIN_KEY):
        results = collect(load_config(path), CollectOptions(since=DAY,
                                                            until=DAY + timedelta(hours=23)),
                          now=SIM_NOW, sleep=lambda s: None)
    assert all(r.ok for r in results), [r.error for r in results]
    return path


@pytest.fixture(scope="module")
def people_config(tmp_path_factory: pytest.TempPathFactory, simulator: Any) -> Path:
    return _collected(tmp_path_factory.mktemp("people"), simulator,
                      cuts=[c.name for c in CUTS])


@pytest.fixture(scope="module")
def pseudonym_config(tmp_path_factory: pytest.TempPathFactory, people_config: Path,
                     simulator: Any) -> Path:
    folder = tmp_path_factory.mktemp("pseudonyms")
    copy_warehouse(people_config.parent / "data" / "spendwatch.duckdb", folder)
    return write_config(folder, [{"name": "acme", "source": "analytics",
                                  "base_url": simulator.url, "cuts": [c.name for c in CUTS]}],
                        extra=PRIVACY, timezone_name="UTC")


@pytest.fixture(scope="module")
def no_cuts_config(tmp_path_factory: pytest.TempPathFactory, simulator: Any) -> Path:
    return _collected(tmp_path_factory.mktemp("nocuts"), simulator, cuts=[])


@pytest.fixture(scope="module")
def legacy_config(tmp_path_factory: pytest.TempPathFactory, simulator: Any) -> Path:
    return _collected(tmp_path_factory.mktemp("legacy"), simulator, source="legacy",
                      claude_code=True)


def open_people(config: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(config))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    st.cache_data.clear()
    at = AppTest.from_file(str(MAIN), default_timeout=60).run()
    at.switch_page("pages/people.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "People and products"
    return at


#: Each table of the page by a column only it has.
TABLES = {"people_top": "person", "people_groups": "RBAC group",
          "people_claude_code": "developer"}


def table(at: AppTest, key: str) -> Any:
    (found,) = [d.value for d in at.dataframe if TABLES[key] in d.value.columns]
    return found


def every_text(at: AppTest) -> str:
    """Everything the page shows as text: metrics and their help, text elements, tables,
    filter options, chart data."""
    parts: list[str] = []
    for m in at.metric:
        parts += [m.label, m.value, m.proto.help]
    for kind in ("markdown", "caption", "info", "warning", "subheader", "title"):
        parts += [e.value for e in at.get(kind)]
    parts += [d.value.to_string() for d in at.dataframe]
    for select in at.multiselect:
        parts += [str(o) for o in select.options]
    parts += [c.proto.spec + bytes(c.proto.datasets[0].data.data).hex()
              for c in at.get("vega_lite_chart") if c.proto.datasets]
    return "\n".join(parts)


def test_the_page_renders_the_figures_of_spend(people_config: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_people(people_config, monkeypatch)
    config = load_config(people_config)
    by_person = read(config, spend, SINCE, UNTIL, ["person"])
    total = sum((r["cost_usd"] for r in by_person), Decimal(0))
    assert total > 0
    shown = metrics(at)
    assert shown["Spend in the period"] == usd(total)
    # The key cut says the same: one question, one answer.
    assert usd(sum((r["cost_usd"] for r in read(config, spend, SINCE, UNTIL, [])),
                   Decimal(0))) == usd(total)
    top = max(by_person, key=lambda r: r["cost_usd"])
    people = table(at, "people_top")
    assert people.iloc[0]["person"] == top["person"]
    assert Decimal(str(people.iloc[0]["spend"])) == top["cost_usd"].quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP)
    products = read(config, spend, SINCE, UNTIL, ["product"])
    best = max(products, key=lambda r: r["cost_usd"])
    assert shown["Top product"] == best["product"]
    assert at.get("vega_lite_chart"), "no chart of spend by product"
    groups = table(at, "people_groups")
    assert len(groups) >= 2 and float(groups["spend"].sum()) > float(total), \
        "RBAC groups overlap"
    assert any("Groups overlap" in c.value for c in at.caption)
    fast = sum((r["cost_usd"] for r in read(config, spend, SINCE, UNTIL, ["speed"])
                if r["speed"] == "fast"), Decimal(0))
    assert fast > 0 and any(c.value.startswith(f"Fast mode: {usd(fast)}") for c in at.caption)
    assert "user_01" not in every_text(at), "a raw user ID where a label exists"
    assert "@acme.example" in every_text(at)


def test_a_product_filter_changes_the_figures(people_config: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_people(people_config, monkeypatch)
    before = metrics(at)["Spend in the period"]
    config = load_config(people_config)
    products = sorted(read(config, spend, SINCE, UNTIL, ["product"]),
                      key=lambda r: -r["cost_usd"])
    second = products[1]
    at.multiselect(key="product").select(second["product"]).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = metrics(at)
    assert shown["Spend in the period"] == usd(second["cost_usd"]) != before
    assert shown["Top product"] == second["product"]
    kept = read(config, spend, SINCE, UNTIL, ["person"], {"product": [second["product"]]})
    top = max(kept, key=lambda r: r["cost_usd"])
    assert table(at, "people_top").iloc[0]["person"] == top["person"]


def test_a_person_filter_keeps_one_person(people_config: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_people(people_config, monkeypatch)
    people = table(at, "people_top")
    someone = people.iloc[1]["person"]
    at.multiselect(key="person").select(someone).run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(table(at, "people_top")["person"]) == [someone]
    assert any("person filter does not apply" in c.value for c in at.caption)


def test_pseudonyms_hide_every_address_and_id(pseudonym_config: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_people(pseudonym_config, monkeypatch)
    text = every_text(at)
    assert "person-" in text
    assert "@acme.example" not in text and "user_01" not in text


def test_an_organization_without_people_data_gets_one_info_line(
        no_cuts_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert query(no_cuts_config.parent / "data" / "spendwatch.duckdb",
                 "SELECT count(*) FROM usage_hourly")[0][0] > 0
    at = open_people(no_cuts_config, monkeypatch)
    (info,) = at.info
    assert "Claude Enterprise" in info.value and "`cuts`" in info.value
    assert not at.get("vega_lite_chart") and not at.metric
    assert not [d for d in at.dataframe]


def test_a_legacy_organization_shows_claude_code_per_developer(
        legacy_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_people(legacy_config, monkeypatch)
    assert "Claude Enterprise" in at.info[0].value
    shown = table(at, "people_claude_code")
    stored = {actor: int(sessions) for actor, sessions in query(
        legacy_config.parent / "data" / "spendwatch.duckdb",
        "SELECT actor, sum(sessions) FROM claude_code_daily WHERE day BETWEEN ? AND ? "
        "GROUP BY 1", SINCE, UNTIL)}
    developer = next(d for d in shown["developer"] if d.endswith("@acme.example"))
    row = shown[shown["developer"] == developer].iloc[0]
    assert int(row["sessions"]) == stored[developer] > 0
    assert len(shown) == len(stored)


def test_pseudonyms_hide_claude_code_developers_too(
        legacy_config: Path, tmp_path: Path, simulator: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    copy_warehouse(legacy_config.parent / "data" / "spendwatch.duckdb", tmp_path)
    config = write_config(tmp_path, [{"name": "acme", "source": "legacy",
                                      "base_url": simulator.url, "claude_code": True}],
                          extra=PRIVACY, timezone_name="UTC")
    at = open_people(config, monkeypatch)
    developers = table(at, "people_claude_code")["developer"]
    assert any(d.startswith("person-") for d in developers)
    text = every_text(at)
    assert "@acme.example" not in text and "user_01" not in text


PEOPLE_FEATURES = """
[[features]]
name = "Claude Code"
products = ["claude_code"]

[[features]]
name = "Data team"
rbac_groups = ["rbacgrp_01BP5Dm4r1ZF2emXJxvDMq9Qx5"]
"""


@pytest.fixture(scope="module")
def feature_config(tmp_path_factory: pytest.TempPathFactory, simulator: Any) -> Path:
    return _collected(tmp_path_factory.mktemp("features"), simulator, extra=PEOPLE_FEATURES,
                      cuts=[c.name for c in CUTS])


def test_features_defined_by_people_filter_the_spend_page(feature_config: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(feature_config))
    monkeypatch.setenv("SPENDWATCH_NOW", SIM_NOW_TEXT)
    st.cache_data.clear()
    at = AppTest.from_file(str(MAIN), default_timeout=60).run()
    at.switch_page("pages/spend.py").run()
    assert not at.exception, [e.value for e in at.exception]
    config = load_config(feature_config)
    data_team = sum((r["cost_usd"] for r in read(config, spend, SINCE, UNTIL, [],
                                                 {"feature": ["Data team"]})), Decimal(0))
    assert data_team > 0
    at.multiselect(key="feature").select("Data team").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert metrics(at)["Spend in the period"] == usd(data_team)
    # Workspaces are not in the people cut: one warning, not a traceback.
    at.selectbox(key="by").select("workspace").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot be shown" in w.value and "workspace" in w.value for w in at.warning)
