"""The one secret resolver (spendwatch/secrets.py): a file first, else the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendwatch.errors import ConfigError
from spendwatch.secrets import resolve_secret

MEANT = "the organization's Admin API key (sk-ant-admin01-...)"


def resolve(**kwargs: object) -> str:
    return resolve_secret("c.toml: organization 'acme'", "admin key", MEANT,
                          **kwargs).reveal()  # type: ignore[arg-type]


def test_a_named_file_wins_over_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("  sk-ant-admin01-from-file\n", encoding="utf-8")
    key.chmod(0o600)
    env = {"KEY": "sk-ant-admin01-from-env"}
    assert resolve(file=str(key), env="KEY", environ=env.get) == "sk-ant-admin01-from-file"
    assert resolve(env="KEY", environ=env.get) == "sk-ant-admin01-from-env"


@pytest.mark.parametrize("setup, expected", [
    ("unset", "c.toml: organization 'acme': no admin key in environment variable KEY; set it to "
              + MEANT),
    ("empty file", "no admin key in file "),
    ("no file", "admin key file "),
])
def test_a_missing_secret_is_one_line_saying_where(tmp_path: Path, setup: str,
                                                   expected: str) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    empty.chmod(0o600)
    kwargs = {"unset": {"env": "KEY", "environ": {}.get},
              "empty file": {"file": str(empty)},
              "no file": {"file": str(tmp_path / "nope")}}[setup]
    with pytest.raises(ConfigError) as caught:
        resolve(**kwargs)
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_the_value_never_shows(tmp_path: Path) -> None:
    secret = resolve_secret("x", "admin key", MEANT, env="KEY",
                            environ={"KEY": "sk-ant-admin01-hidden"}.get)
    assert "hidden" not in repr(secret) and "hidden" not in str(secret)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o660, 0o604, 0o666])
def test_a_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "key"
    key.write_text("sk-ant-admin01-from-file\n", encoding="utf-8")
    key.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        resolve(file=str(key))
    message = str(caught.value)
    assert message.endswith(f"chmod 600 {key}") and f"(mode {mode:04o})" in message
    assert "sk-ant" not in message and "\n" not in message
    key.chmod(0o400)  # owner-only, read-only: fine
    assert resolve(file=str(key)) == "sk-ant-admin01-from-file"
