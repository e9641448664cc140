"""Features defined by products, people (e-mail globs) and RBAC groups, besides keys.

One simulator, two days collected once (every cut, with the feature rules below, so the people
cut's cost is read by token type too) into a template; each test reads a copy. The simulator's
truth per (actor, product) with its people and keys (``/_sim/org``) says what each feature
must hold, rule by rule as the config's documentation states them (first match wins).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterator

import pytest
import requests

from collectors.sync import CollectOptions, collect
from spendwatch.config import load_config
from spendwatch.cuts import CUTS
from conftest import (ADMIN_KEY, SIM_NOW, SLACK, Simulator, copy_warehouse, module_env, run_cli,
                      start_simulator_process, stop_simulator, write_config)
from warehouse import query

START = datetime(2026, 11, 18, tzinfo=timezone.utc)
END = datetime(2026, 11, 20, tzinfo=timezone.utc)
FIRST, LAST = date(2026, 11, 18), date(2026, 11, 19)
DATA_GROUP = "rbacgrp_01BP5Dm4r1ZF2emXJxvDMq9Qx5"  # "Data" in the simulator's seed-7 org
FEATURES = f"""
[[features]]
name = "Claude Code"
products = ["claude_code"]

[[features]]
name = "Support bot"
api_key_names = ["support-bot-*"]

[[features]]
name = "Data team"
rbac_groups = ["{DATA_GROUP}"]

[[features]]
name = "Hiro"
people = ["HIRO.TANAKA@*"]
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = start_simulator_process()
    yield simulator
    stop_simulator(simulator)


def _config(folder: Path, sim: Simulator, features: str = FEATURES, **org: object) -> Path:
    return write_config(folder, [{"name": "acme", "source": "analytics", "base_url": sim.url,
                                  "cuts": [c.name for c in CUTS], **org}],
                        extra=features, timezone_name="UTC")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, sim: Simulator) -> Path:
    folder = tmp_path_factory.mktemp("features")
    with module_env(ANTHROPIC_ADMIN_KEY=ADMIN_KEY):
        results = collect(load_config(_config(folder, sim)),
                          CollectOptions(since=START, until=END), now=SIM_NOW)
    assert all(r.ok for r in results), [r.error for r in results]
    return folder / "data" / "spendwatch.duckdb"


@pytest.fixture
def warehouse(template: Path, isolated: Path, sim: Simulator,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    copy_warehouse(template, isolated)
    return _config(isolated, sim)


def _expected(sim: Simulator) -> dict[str, Decimal]:
    """Dollars per named feature from the simulator's truth, by the rules of FEATURES, plus
    ``"*"``: everything."""
    org = requests.get(f"{sim.url}/_sim/org", timeout=10).json()
    actors = {a["key"]: a for a in org["actors"]}
    key_names = {k["id"]: k["name"] for k in org["api_keys"]}
    truth = requests.get(f"{sim.url}/_sim/truth", params={
        "starting_at": START.isoformat(), "ending_at": END.isoformat(), "people": "1"},
        timeout=60).json()
    out = {"*": Decimal(truth["cost_usd"])}
    for pair, dollars in truth["by_person_product"].items():
        actor, _, product = pair.partition("|")
        person = actors.get(actor, {})
        if product == "claude_code":
            feature = "Claude Code"
        elif fnmatchcase(key_names.get(actor, ""), "support-bot-*"):
            feature = "Support bot"
        elif DATA_GROUP in person.get("rbac_group_ids", ()):
            feature = "Data team"
        elif (person.get("email") or "").lower().startswith("hiro.tanaka@"):
            feature = "Hiro"
        else:
            continue
        out[feature] = out.get(feature, Decimal(0)) + Decimal(dollars)
    return out


def _spend(config: Path, by: str, *extra: str) -> list[dict]:
    result = run_cli(["--config", str(config), "spend", "--since", str(FIRST), "--until",
                      str(LAST), "--by", by, "--json", *extra])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _by(rows: list[dict], key: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for row in rows:
        out[row[key]] = out.get(row[key], Decimal(0)) + Decimal(row["cost_usd"])
    return out


def test_features_by_product_key_rbac_group_and_email_hold_exactly_their_spend(
        warehouse: Path, sim: Simulator) -> None:
    expected = _expected(sim)
    features = _by(_spend(warehouse, "feature"), "feature")
    for name in ("Claude Code", "Support bot", "Data team", "Hiro"):
        assert features.pop(name) == expected[name], name
    assert expected["Data team"] > 0 and expected["Hiro"] > 0
    # What no rule names stays under its person's or key's name: nothing disappears.
    assert sum(features.values()) == expected["*"] - sum(
        v for k, v in expected.items() if k != "*")
    assert "ada.okafor@acme.example" in features, "a person no rule names keeps their label"
    assert not any(name.startswith("user_01") for name in features), "never a raw ID"


def test_a_feature_filter_reads_the_same_spend_by_model_and_cache_status(
        warehouse: Path, sim: Simulator) -> None:
    from spendwatch import storage
    from spendwatch.warehouse.batch import Batch
    from spendwatch.warehouse.spend import spend

    expected = _expected(sim)
    config = load_config(warehouse)
    with storage.reader(config) as conn:
        rows = spend(Batch(conn, config), FIRST, LAST, ["model", "cache_status"],
                     {"feature": ["Data team"]})
    assert sum(r["cost_usd"] for r in rows) == expected["Data team"]
    statuses = _by([{**r, "cost_usd": str(r["cost_usd"])} for r in rows], "cache_status")
    assert statuses.get("cache_read", Decimal(0)) > 0 and statuses.get("output", 0) > 0
    assert "other" not in statuses or statuses["other"] < expected["Data team"] / 2, \
        "token cost is by cache status, not all 'other'"


def test_savings_by_feature_judged_on_people_add_up_to_the_key_cut_savings(
        warehouse: Path, sim: Simulator, isolated: Path) -> None:
    from spendwatch import storage
    from spendwatch.savings import realized
    from spendwatch.warehouse.batch import Batch

    people_config = load_config(warehouse)
    key_config = load_config(_config(isolated, sim, features=""))
    with storage.reader(people_config) as conn:
        by_people = realized(Batch(conn, people_config), FIRST, LAST)
        by_key = realized(Batch(conn, key_config), FIRST, LAST)
    features = {r.feature for r in by_people}
    assert {"Claude Code", "Data team", "Hiro"} <= features
    saved_people = sum((r.realized_total_usd for r in by_people), Decimal(0))
    saved_key = sum((r.realized_total_usd for r in by_key), Decimal(0))
    assert saved_key > 0
    # The people cut has no context window: its tokens take the key cut's split per hour,
    # model and tier, so the savings agree but for the rounding of split tokens.
    assert abs(saved_people - saved_key) <= saved_key * Decimal("0.001"), (saved_people, saved_key)
    tokens = lambda rows: sum(r.tokens.cache_read for r in rows)  # noqa: E731
    assert abs(tokens(by_people) - tokens(by_key)) <= len(by_people)


def test_the_weekly_csv_carries_the_features_with_their_product(warehouse: Path,
                                                                sim: Simulator) -> None:
    from reports.weekly import weekly_rows
    from spendwatch import storage
    from spendwatch.warehouse.batch import Batch
    from spendwatch.warehouse.spend import spend

    expected = _expected(sim)
    config = load_config(warehouse)
    with storage.reader(config) as conn:
        batch = Batch(conn, config)
        rows = weekly_rows(batch, FIRST, LAST, "acme")
        whole = sum((r["cost_usd"] for r in spend(batch, FIRST, LAST)), Decimal(0))
    assert sum((r["cost_usd"] for r in rows), Decimal(0)) == whole == expected["*"]
    csv_features = _by([{**r, "cost_usd": str(r["cost_usd"])} for r in rows], "feature")
    assert csv_features["Data team"] == expected["Data team"]
    assert {r["product"] for r in rows if r["feature"] == "Claude Code"} == {"claude_code"}
    # The people cut has no workspace; its cost by cache status is not split per row here.
    assert all(r["workspace_id"] is None and r["cache_read_cost_usd"] is None for r in rows)


def test_feature_and_workspace_together_are_one_clear_line(warehouse: Path) -> None:
    result = run_cli(["--config", str(warehouse), "spend", "--by", "feature,workspace"])
    assert result.returncode == 2
    assert "feature and workspace come from different cuts" in result.stderr
    assert "people cut" in result.stderr


def test_rules_naming_people_and_workspaces_are_a_config_error(isolated: Path,
                                                               sim: Simulator) -> None:
    config = _config(isolated, sim, features=FEATURES + """
[[features]]
name = "Evals"
workspace_names = ["eval*"]
""")
    result = run_cli(["--config", str(config), "spend"])
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "'Evals' names workspaces" in line and "api_key_names" in line


def test_named_cuts_without_the_people_cut_are_a_config_error(isolated: Path,
                                                              sim: Simulator) -> None:
    config = _config(isolated, sim, cuts=["price", "products"])
    result = run_cli(["--config", str(config), "spend"])
    assert result.returncode == 2
    assert "cuts lacks 'people'" in result.stderr and "add 'people' to cuts" in result.stderr


def test_default_cuts_gain_the_membership_cut_for_rbac_rules(isolated: Path,
                                                             sim: Simulator) -> None:
    path = write_config(isolated, [{"name": "acme", "source": "analytics", "base_url": sim.url}],
                        extra=FEATURES, timezone_name="UTC")
    text = path.read_text().replace('cuts = []\n', '')
    path.write_text(text)
    (org,) = load_config(path).organizations
    assert "members" in org.cut_names() and "people" in org.cut_names()
    assert org.cut("people").cost_fanout == ("cost_type", "token_type")


def test_an_organization_without_people_data_judges_features_by_key(
        isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)
    plain = start_simulator_process(extra=("--no-people-dimensions",))
    try:
        config = _config(isolated, plain)
        results = collect(load_config(config), CollectOptions(since=START, until=END),
                          now=SIM_NOW)
        assert all(r.ok for r in results), [r.error for r in results]
        truth = plain.truth(START, END)
    finally:
        stop_simulator(plain)
    features = _by(_spend(config, "feature"), "feature")
    assert sum(features.values()) == Decimal(truth["cost_usd"])
    assert features["Support bot"] > 0, "key rules still match"
    assert not {"Claude Code", "Data team", "Hiro"} & features.keys(), \
        "product, people and RBAC rules match nothing where the API has no people"
    db = isolated / "data" / "spendwatch.duckdb"
    assert query(db, "SELECT count(*) FROM usage_cuts WHERE cut = 'people'")[0][0] == 0


@pytest.mark.parametrize("scope, error", [
    ('{ feature = "Data team" }', None),  # both on the people cut: a rule can judge it
    ('{ feature = "Data team", workspace = "w" }', "feature and workspace come from different"),
])
def test_alert_scopes_by_people_defined_features_are_checked_as_spend_judges_them(
        isolated: Path, sim: Simulator, scope: str, error: str | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from alerts import settings
    from spendwatch.errors import ConfigError

    monkeypatch.setenv("SLACK_WEBHOOK", "http://127.0.0.1:9/services/T0/B0/x")
    path = _config(isolated, sim)
    path.write_text(path.read_text() + SLACK + '[[alerts.rules]]\nname = "r"\n'
                    'kind = "daily_spend"\nper = "person"\nthreshold_usd = "5"\n'
                    f'channels = ["ops-slack"]\nscope = {scope}\n')
    if error is None:
        (rule,) = settings.load(path).alerts.rules
        assert rule.params["per"] == "person"
    else:
        with pytest.raises(ConfigError, match=error):
            settings.load(path)
