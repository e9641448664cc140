"""``spendwatch doctor`` against real parts: the simulator in its own process, the local Slack
stand-in, aiosmtpd. One line per check; exit 0 when all are ok, 1 when one fails; nothing is
sent without ``--send``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ADMIN_KEY, Simulator, write_config
from fake_slack import FakeSlack
from fake_smtp import Mailbox, closed_port

CHANNELS = '''
[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url_env = "SLACK_WEBHOOK"

[[alerts.channels]]
name = "finance-email"
kind = "email"
host = "127.0.0.1"
port = {port}
security = "none"
from = "spendwatch@acme.example"
to = ["finance@acme.example"]
timeout_seconds = 5
'''


def doctor(folder: Path, *args: str, key: str = ADMIN_KEY,
           webhook: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    env["ANTHROPIC_ADMIN_KEY"] = key
    if webhook:
        env["SLACK_WEBHOOK"] = webhook
    return subprocess.run([sys.executable, "-m", "spendwatch", "doctor", *args], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def installed(isolated: Path, simulator: Simulator, fake_slack: FakeSlack,
              smtp_server) -> dict:
    """A config with one organization on the simulator, Slack and email channels; mode 600."""
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    path = write_config(isolated, [{"name": "acme", "base_url": simulator.url}],
                        extra=CHANNELS.format(port=port))
    path.chmod(0o600)
    return {"folder": isolated, "mailbox": mailbox, "path": path, "port": port,
            "webhook": fake_slack.url()}


def lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout.splitlines()


def test_a_ready_installation_is_all_ok_and_nothing_is_sent(installed: dict,
                                                            fake_slack: FakeSlack) -> None:
    result = doctor(installed["folder"], webhook=installed["webhook"])
    out = lines(result)
    assert result.returncode == 0, result.stdout
    assert all(line.startswith("ok   ") for line in out), out
    text = "\n".join(out)
    for found in ("loads (1 organization(s), 2 channel(s)", "private to its owner",
                  "organization 'acme': admin key found in $ANTHROPIC_ADMIN_KEY",
                  "organization 'acme': the API at http://127.0.0.1:",
                  "does not exist yet; `spendwatch collect` creates it",
                  "channel 'ops-slack': webhook URL found",
                  f"channel 'finance-email': 127.0.0.1:{installed['port']} accepts connections",
                  "dashboard listens on 127.0.0.1:8501, this machine only"):
        assert found in text, (found, text)
    assert fake_slack.received == [] and installed["mailbox"].delivered == []
    assert ADMIN_KEY not in result.stdout + result.stderr
    assert installed["webhook"] not in result.stdout + result.stderr


def test_send_sends_each_channel_a_test_message(installed: dict, fake_slack: FakeSlack) -> None:
    result = doctor(installed["folder"], "--send", webhook=installed["webhook"])
    assert result.returncode == 0, result.stdout
    assert "channel 'ops-slack': test message sent" in result.stdout
    assert "channel 'finance-email': test message sent" in result.stdout
    assert len(fake_slack.received) == 1 and "TEST" in fake_slack.received[0].json["text"]
    assert len(installed["mailbox"].delivered) == 1


@pytest.mark.file_only("a database file open to others is one of the problems")
def test_each_problem_is_one_line_saying_what_to_do(installed: dict,
                                                    fake_slack: FakeSlack) -> None:
    folder = installed["folder"]
    text = installed["path"].read_text().replace(f"port = {installed['port']}",
                                                 f"port = {closed_port()}")
    installed["path"].write_text(text + '[dashboard]\nhost = "0.0.0.0"\n')
    (folder / "data").mkdir()
    database = folder / "data" / "spendwatch.duckdb"
    import duckdb
    duckdb.connect(str(database)).close()
    database.chmod(0o644)
    result = doctor(folder, key="sk-ant-admin01-revoked-0000000000000000")  # no webhook set
    out = lines(result)
    assert result.returncode == 1
    failures = [line for line in out if line.startswith("FAIL ")]
    assert len(failures) == 5, out
    joined = "\n".join(failures)
    assert "organization 'acme': the API at" in joined and "answered 401" in joined
    assert f"database {database} is open to group or others (mode 0644); chmod 600" in joined
    assert "channel 'ops-slack': " in joined and "SLACK_WEBHOOK" in joined
    assert "channel 'finance-email': 127.0.0.1:" in joined and "cannot be reached" in joined
    assert "dashboard.host = '0.0.0.0' would serve every figure to the network" in joined
    assert fake_slack.received == []


def test_a_normal_api_key_is_not_an_admin_key(installed: dict) -> None:
    result = doctor(installed["folder"], key="sk-ant-api03-normal-key-000000000000",
                    webhook=installed["webhook"])
    assert result.returncode == 1
    (failure,) = [line for line in lines(result) if line.startswith("FAIL")]
    assert "is a normal API key, not an Admin API key (sk-ant-admin...)" in failure
    assert "sk-ant-api03-normal" not in result.stdout


def test_a_config_that_does_not_load_is_one_failed_line(isolated: Path) -> None:
    path = isolated / "config.toml"
    path.write_text("[[organizations]]\nname = \"\"\n")
    path.chmod(0o600)
    result = doctor(isolated)
    assert result.returncode == 1
    assert lines(result) == [f"FAIL config: {path.resolve()}: organizations[0].name is empty; "
                             "give the organization a name such as \"acme\""]
