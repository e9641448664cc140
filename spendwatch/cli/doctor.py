"""``spendwatch doctor``: is this installation ready, and if not, what to do.

One line per check, ``ok  <what was found>`` or ``FAIL <what is wrong>; <what to do>``: the
config loads; every secret is there and looks like what it should be (an admin key starts
with ``sk-ant-admin``, a webhook URL is https); no secret file, nor the config, nor the
database is open to group or others; the database can be written; each channel's server
answers a TCP connection (nothing is sent unless ``--send``, which sends what ``alerts test``
sends); the API answers one cheap call with each organization's key; the dashboard listens on
this machine only, or behind a login with someone allowed in. Exit 1 when a check fails.

Nothing here prints a secret: a check says where a secret was looked for, never its value.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import click

from spendwatch.cli.shell import config_of, exit_failed
from spendwatch.config import ChannelConfig, Config, OrganizationConfig, is_loopback, \
    resolve_admin_key, resolve_channel_secret
from spendwatch.errors import ConfigError, SpendwatchError
from spendwatch.files import check_private, is_private
from spendwatch.secrets import Secret

#: How long a reachability check waits for a TCP connection or an answer.
CONNECT_TIMEOUT = 5.0
ADMIN_KEY_PREFIX = "sk-ant-admin"
#: Default SMTP ports by ``security`` (alerts/email.py uses the same).
SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``ok`` and its line (what was found, or what to do)."""

    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {' '.join(self.text.split())}"


def ok(text: str) -> Finding:
    return Finding(True, text)


def fail(text: str) -> Finding:
    return Finding(False, text)


@click.command("doctor")
@click.option("--send", is_flag=True,
              help="Also send each channel a marked test message (as `alerts test` does).")
@click.pass_context
def doctor(ctx: click.Context, send: bool) -> None:
    """Check the config, secrets, file permissions, database, channels, API and dashboard.

    Prints one line per check; exits 1 when one fails.
    """
    try:
        config = config_of(ctx)
    except SpendwatchError as exc:
        click.echo(fail(f"config: {exc}").line())
        exit_failed()
    failed = False
    for finding in findings(config, send):
        click.echo(finding.line())
        failed = failed or not finding.ok
    if failed:
        exit_failed()


def findings(config: Config, send: bool = False) -> Iterator[Finding]:
    """Every check's finding, in the order the doctor prints them."""
    yield ok(f"config {config.path} loads ({len(config.organizations)} organization(s), "
             f"{len(config.alerts.channels)} channel(s), {len(config.alerts.rules)} rule(s))")
    yield from guarded("config file permissions", lambda: [config_permissions(config)])
    for org in config.organizations:
        yield from guarded(f"organization {org.name!r}", partial(organization, config, org))
    if config.models.api_key_env:
        yield from guarded("[models]", lambda: [models_key(config)])
    yield from guarded("database", lambda: database(config))
    yield from guarded("reports folder", lambda: [reports_folder(config)])
    for channel in config.alerts.channels:
        yield from guarded(f"channel {channel.name!r}",
                           partial(channel_checks, config, channel, send))
    yield from guarded("dashboard", lambda: dashboard(config))


def guarded(what: str, check: Callable[[], list[Finding] | Iterator[Finding]]
            ) -> Iterator[Finding]:
    """A check's findings; a check that raises is one failed finding, never a traceback."""
    try:
        yield from list(check())
    except SpendwatchError as exc:
        yield fail(f"{what}: {exc}")
    except Exception as exc:  # a doctor reports, whatever it meets
        yield fail(f"{what}: unexpected {type(exc).__name__}; run the failing command with -vv")


def config_permissions(config: Config) -> Finding:
    check_private(config.path, "the config file")
    return ok(f"config file {config.path} is private to its owner")


def organization(config: Config, org: OrganizationConfig) -> list[Finding]:
    """The admin key is there and looks like one, and the API answers one call with it."""
    where = org.admin_key_file or f"${org.admin_key_env}"
    key = resolve_admin_key(config, org)  # ConfigError: not there, or the file is open
    if not key.reveal().startswith(ADMIN_KEY_PREFIX):
        looks = "a normal API key" if key.reveal().startswith("sk-ant-api") else "not a key"
        return [fail(f"organization {org.name!r}: the key in {where} is {looks}, not an Admin "
                     f"API key ({ADMIN_KEY_PREFIX}...); create one in the Claude Console "
                     "(Settings > Admin keys)")]
    found = [ok(f"organization {org.name!r}: admin key found in {where}")]
    return found + [api_reachable(config, org, key)]


def api_reachable(config: Config, org: OrganizationConfig, key: Secret) -> Finding:
    """One cheap call (the first workspace) with the key; its failure, in one line."""
    from collectors.clients import sdk_call, sdk_client
    from collectors.retry import TransportFailure

    client = sdk_client(org, key, config.collection)
    try:
        sdk_call(lambda: client.organization.workspaces.list(limit=1, timeout=CONNECT_TIMEOUT),
                 org.base_url)
    except TransportFailure as exc:
        if exc.status in (401, 403):
            fix = "the key is revoked or not an admin key; create an Admin API key"
        elif exc.status is None:
            fix = f"check the network and {org.base_url}"
        else:
            fix = "try again later; if it stays, check the API status"
        return fail(f"organization {org.name!r}: the API at {org.base_url} answered "
                    f"{exc.status or 'nothing'} ({exc.error_type}); {fix}")
    return ok(f"organization {org.name!r}: the API at {org.base_url} answers with the key")


def models_key(config: Config) -> Finding:
    """The Models API's key (model lines for routing) is there and is a normal API key."""
    from collectors.models import resolve_models_key

    key = resolve_models_key(config).reveal()
    where = f"${config.models.api_key_env}"
    if key.startswith(ADMIN_KEY_PREFIX):
        return fail(f"[models]: the key in {where} is an Admin API key; the Models API takes a "
                    "normal API key (sk-ant-api...)")
    return ok(f"[models]: API key found in {where}")


def database(config: Config) -> list[Finding]:
    """The database can be written (opened for writing, migrated, closed) and is private."""
    from spendwatch import storage
    from spendwatch.errors import DatabaseBusy, DatabaseMissing

    if config.storage.is_lake:
        try:
            with storage.reader(config):
                pass
            with storage.writer(config):
                pass
        except DatabaseMissing:  # the catalog answered: nothing is made before a collection
            return [ok(f"DuckLake {config.database_label} does not exist yet; `spendwatch "
                       "collect` creates it")]
        except DatabaseBusy as exc:
            return [fail(str(exc))]
        return [ok(f"DuckLake {config.database_label} can be written")]
    db = config.database_path
    if not db.exists():
        parent = next((p for p in db.parents if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK | os.X_OK):
            return [fail(f"database {db} does not exist and {parent} cannot be written; point "
                         "storage.database at a writable folder")]
        return [ok(f"database {db} does not exist yet; `spendwatch collect` creates it "
                   f"(0600, in {parent})")]
    findings = []
    try:
        with storage.writer_at(db, lock_timeout=min(config.storage.lock_timeout_seconds, 3)):
            pass
        findings.append(ok(f"database {db} can be written"))
    except DatabaseBusy:
        findings.append(ok(f"database {db} is in use by another spendwatch process (the "
                           "worker?): it is there; try again for a write check"))
    if not is_private(db):
        findings.append(fail(f"database {db} is open to group or others (mode "
                             f"{db.stat().st_mode & 0o777:04o}); chmod 600 {db}"))
    return findings


def reports_folder(config: Config) -> Finding:
    folder = config.reports_folder
    if not config.reports.enabled:
        return ok("weekly reports are off ([reports] enabled = false)")
    if folder.exists() and not is_private(folder):
        return fail(f"reports folder {folder} is open to group or others (mode "
                    f"{folder.stat().st_mode & 0o777:04o}); chmod 700 {folder}")
    return ok(f"reports folder {folder} is private to its owner" if folder.exists() else
              f"reports folder {folder} does not exist yet; the worker creates it (0700)")


def channel_checks(config: Config, channel: ChannelConfig, send: bool) -> list[Finding]:
    """The channel's secret, its server reachable, and with ``send`` a test message."""
    name = channel.name
    secret = resolve_channel_secret(config, channel)  # ConfigError when missing or open
    if channel.kind == "slack":
        url = urlsplit(secret or "")
        if url.scheme != "https" and not (url.scheme == "http" and is_loopback(url.hostname)):
            return [fail(f"channel {name!r}: the webhook URL is not an https:// URL; put the "
                         "URL Slack gave you (https://hooks.slack.com/services/...) there")]
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        found = [ok(f"channel {name!r}: webhook URL found")]
    else:
        settings = channel.settings
        host = str(settings.get("host", ""))
        port = int(settings.get("port") or SMTP_PORTS.get(str(settings.get("security",
                                                                              "starttls")), 587))
        found = [ok(f"channel {name!r}: SMTP password found")] if secret else []
    found.append(reachable(name, host, port))
    if send and found[-1].ok:
        found.append(send_test_message(config, name))
    return found


def reachable(name: str, host: str, port: int) -> Finding:
    """A TCP connection to ``host:port`` opens (and closes at once: nothing is sent)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return fail(f"channel {name!r}: {host}:{port} cannot be reached ({reason}); check the "
                    "host, the port and the firewall")
    return ok(f"channel {name!r}: {host}:{port} accepts connections (nothing sent)")


def send_test_message(config: Config, name: str) -> Finding:
    from alerts.outbox import send_test
    from spendwatch.timeutil import utcnow

    result = send_test(config, name, utcnow())
    if result.ok:
        return ok(f"channel {name!r}: test message sent ({result.answer})")
    return fail(f"channel {name!r}: the test message was not sent ({result.answer}); fix the "
                "channel, then run `spendwatch alerts test`")


def dashboard(config: Config) -> list[Finding]:
    """Where the dashboard listens, and whether a login stands in front of it: the checks
    ``spendwatch dashboard`` makes at start (:func:`spendwatch.cli.dashboard.check_exposure`)."""
    from spendwatch.cli.dashboard import check_exposure

    board = config.dashboard
    where = f"{board.host}:{board.port}"
    try:
        check_exposure(config)
    except ConfigError as exc:
        return [fail(f"dashboard: {exc}")]
    if not board.login_required:
        return [ok(f"dashboard listens on {where}, this machine only (no login)")]
    return [ok(f"dashboard listens on {where} behind a login ({len(board.allowed_emails)} "
               f"address(es), {len(board.allowed_domains)} domain(s) allowed)")]
