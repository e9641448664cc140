"""Config: every mistake is one line naming the file, the key and the fix, exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from spendwatch.config import load_config, resolve_admin_key
from spendwatch.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spendwatch", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


MINIMAL = '[[organizations]]\nname = "acme"\n'


def test_example_config_is_valid_and_holds_no_secret(tmp_path: Path) -> None:
    copy = write(tmp_path / "config.toml", (REPO / "config.example.toml").read_text())
    config = load_config(copy)  # as README says: copied, then chmod 600
    assert [o.name for o in config.organizations] == ["acme"]
    text = (REPO / "config.example.toml").read_text()
    # key shapes are named ("sk-ant-admin01-..."), no key is written out
    assert re.findall(r"sk-ant-[\w-]*", text) and not re.findall(r"sk-ant-[\w-]*\w{8}", text)


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.toml", MINIMAL))
    assert config.timezone == "UTC"
    assert config.organizations[0].source == "analytics"
    assert config.organizations[0].admin_key_env == "ANTHROPIC_ADMIN_KEY"
    assert config.database_path == tmp_path / "data" / "spendwatch.duckdb"


@pytest.mark.parametrize("text, expected", [
    ("colour = 1\n" + MINIMAL, "unknown key 'colour'"),
    (MINIMAL + "colour = 1\n", "unknown key 'organizations[0].colour'"),
    ('[collection]\nintervl_minutes = 5\n' + MINIMAL, "unknown key 'collection.intervl_minutes'"),
    ('[collection]\ninterval_minutes = "five"\n' + MINIMAL,
     "collection.interval_minutes must be an integer"),
    ('[collection]\ninterval_minutes = 0\n' + MINIMAL, "must be greater than 0"),
    ('timezone = "Mars/Olympus"\n' + MINIMAL, "not a known IANA time zone"),
    ("timezone = \n", "not valid TOML"),
    ('timezone = "UTC"\n', "no [[organizations]] configured"),
    ('[[organizations]]\nname = "a"\nsource = "new"\n', "source must be"),
    ('[[organizations]]\nsource = "legacy"\n', "organizations[0].name is missing"),
    (MINIMAL + MINIMAL, "two organizations are named 'acme'"),
])
def test_a_bad_config_names_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_a_missing_config_says_how_to_make_one(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.toml"), "collect")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nope.toml: config file not found; copy config.example.toml" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_wrong_type_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[storage]\ndatabase = 5\n' + MINIMAL)
    result = run_cli("--config", str(path), "spend")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {path}: storage.database must be a string, not int 5;"
                                     " fix the value (see config.example.toml)")


def test_a_missing_admin_key_exits_2_naming_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", MINIMAL)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run_cli("--config", str(path), "collect", env=env)
    assert result.returncode == 2
    assert "no admin key in environment variable ANTHROPIC_ADMIN_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists(), "nothing may be created before the key is found"


def test_the_config_comes_from_the_environment_variable(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "elsewhere.toml", MINIMAL)
    monkeypatch.setenv("SPENDWATCH_CONFIG", str(path))
    assert load_config().path == path.resolve()


def test_the_admin_key_is_read_from_a_file_and_never_shown(tmp_path: Path) -> None:
    key_file = write(tmp_path / "key", "sk-ant-admin01-secret-value\n")
    key_file.chmod(0o600)
    config = load_config(write(tmp_path / "c.toml",
                               f'[[organizations]]\nname = "a"\nadmin_key_file = "{key_file}"\n'))
    key = resolve_admin_key(config, config.organizations[0])
    assert key.reveal() == "sk-ant-admin01-secret-value"
    assert "secret" not in repr(key) and "secret" not in str(key)
    assert "secret-value" not in repr(config)


def test_the_example_config_names_every_option() -> None:
    # README: "every option is documented in config.example.toml". Each key a table of the
    # config takes appears there (set, or commented out with its default).
    from spendwatch import config as module

    text = (REPO / "config.example.toml").read_text()
    missing = []
    for name in dir(module):
        if not (name.startswith("_") and name.endswith("_SCHEMA")):
            continue
        for key in getattr(module, name):
            if not re.search(rf"(^|\n)#?\s*{re.escape(key)}\s*=", text) and \
                    not re.search(rf"\[\[?{re.escape(key)}[].]", text):
                missing.append(f"{name[1:-7].lower()}.{key}")
    assert not missing, f"config.example.toml does not name: {', '.join(missing)}"


LAKE = 'database = "ducklake:postgres:dbname=sw host=db.internal user=sw"\n'


@pytest.mark.parametrize("storage, problem", [
    (LAKE + 'data_path = "/mnt/lake/"\ndatabase_password = "x"\n',
     "unknown key 'storage.database_password'"),
    ('database = "ducklake:postgres:dbname=sw host=db user=sw password=hunter2hunter2"\n'
     'data_path = "/mnt/lake/"\n', "storage.database holds a password; take it out"),
    ('database = "ducklake:postgres:postgresql://sw:hunter2hunter2@db/sw"\n'
     'data_path = "/mnt/lake/"\n', "storage.database holds a password; take it out"),
    (LAKE, "storage.data_path is missing"),
    ('database = "ducklake:"\ndata_path = "/mnt/lake/"\n', "names no DuckLake catalog"),
    ('database = "data/x.duckdb"\ndata_path = "/mnt/lake/"\n',
     "storage.data_path is for a DuckLake warehouse, but storage.database is a DuckDB file"),
    (LAKE + 'data_path = "/mnt/lake/"\nmetadata_schema = "a; DROP"\n',
     "is not a plain schema name"),
])
def test_a_ducklake_target_is_checked_and_never_holds_a_password(
        tmp_path: Path, storage: str, problem: str) -> None:
    path = write(tmp_path / "config.toml", f"[storage]\n{storage}{MINIMAL}")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_ducklake_target_is_named_without_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", f'[storage]\n{LAKE}data_path = "lake/"\n{MINIMAL}')
    config = load_config(path)
    assert config.storage.is_lake
    assert config.database_label == ("ducklake:postgres:dbname=sw host=db.internal user=sw "
                                     "(data in lake/)")
    with pytest.raises(ConfigError, match="is a DuckLake, not a file"):
        config.database_path
