"""Shared fixtures: an isolated working folder, the simulator in a real process, configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pytest
import requests

import lake

# Local stand-ins for Slack and an SMTP server, with their fixtures.
pytest_plugins = ("fake_slack", "fake_smtp")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=("file", "ducklake"), default="file",
                     help="the warehouse every test writes: a DuckDB file (default) or a "
                          "DuckLake (a throwaway PostgreSQL catalog, data on local disk)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "file_only(reason): a test of what only a DuckDB file "
                            "has (its lock, its mode, its path); skipped on --backend ducklake")
    config.addinivalue_line("markers", "lake_only: a test of what only a DuckLake has (many "
                            "hosts, its catalog); skipped on the file backend")
    if config.getoption("backend") != "ducklake":
        return
    shared = os.environ.get(lake.CLUSTER_ENV)
    if shared:  # an xdist worker: the first process started it
        lake.use(lake.decode(shared))
        return
    cluster = lake.start_cluster()
    lake.use(cluster)
    os.environ[lake.CLUSTER_ENV] = lake.encode(cluster)
    config.stash[_OWN_CLUSTER] = cluster


_OWN_CLUSTER = pytest.StashKey["lake.Cluster"]()


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = config.stash.get(_OWN_CLUSTER, None)
    if cluster is not None:
        lake.stop_cluster(cluster)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("backend") != "ducklake":
        for item in items:
            if item.get_closest_marker("lake_only") is not None:
                item.add_marker(pytest.mark.skip(reason="DuckLake only: run with --backend "
                                                        "ducklake (scripts/test.sh does)"))
        return
    for item in items:
        marker = item.get_closest_marker("file_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason="file backend only: " + (
                marker.args[0] if marker.args else "a DuckDB file's own behaviour")))

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "sk-ant-admin01-test-key-0123456789abcdef"
SIM_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
SIM_NOW_TEXT = "2026-11-24T12:00:00Z"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own folder, with the user's config and keys kept out."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "SPENDWATCH_")) and name != lake.CLUSTER_ENV:
            monkeypatch.delenv(name)
    return tmp_path


@dataclass
class Simulator:
    """A simulator running in its own process."""

    url: str
    process: subprocess.Popen

    def control(self, method: str, path: str, **kwargs: object) -> requests.Response:
        response = requests.request(method, self.url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def fault(self, **spec: object) -> None:
        self.control("POST", "/_sim/faults", json=spec)

    def truth(self, start: datetime, end: datetime, people: bool = False) -> dict:
        return self.control("GET", "/_sim/truth", params={
            "starting_at": start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": end.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **({"people": "1"} if people else {})}).json()

    def requests_served(self) -> list[dict]:
        return self.control("GET", "/_sim/requests").json()


def start_simulator_process(seed: int = 7, keys: tuple[str, ...] = (ADMIN_KEY,),
                            now: str | None = SIM_NOW_TEXT,
                            extra: tuple[str, ...] = ()) -> Simulator:
    """``extra``: more simulator options (``--fast-and-us``, ``--no-people-dimensions``)."""
    args = [sys.executable, "-m", "collectors.simulator", "--port", "0", "--seed", str(seed),
            *extra]
    for key in keys:
        args += ["--admin-key", key]
    if now:
        args += ["--now", now]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return Simulator(url=line.rsplit(" ", 1)[-1].strip(), process=process)


def stop_simulator(sim: Simulator) -> None:
    sim.process.terminate()
    try:
        sim.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.process.kill()


@pytest.fixture
def simulators() -> Iterator[Callable[..., Simulator]]:
    """A factory of simulators (several organizations); all stopped after the test."""
    started: list[Simulator] = []

    def make(**kwargs: object) -> Simulator:
        sim = start_simulator_process(**kwargs)  # type: ignore[arg-type]
        started.append(sim)
        return sim

    yield make
    for sim in started:
        stop_simulator(sim)


@pytest.fixture(scope="module")
def module_simulator() -> Iterator[Simulator]:
    """One simulator (seed 7, SIM_NOW) for a whole test module: for tests that only read it
    (its ground truth, or a warehouse collected from it once). A test that injects faults or
    counts requests takes its own ``simulator``."""
    sim = start_simulator_process()
    yield sim
    stop_simulator(sim)


@contextmanager
def module_env(**values: str) -> Iterator[None]:
    """For module-scoped fixtures (``isolated`` is per test): the user's ANTHROPIC_ and
    SPENDWATCH_ variables out, ``values`` in, for the fixture's duration."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("ANTHROPIC_", "SPENDWATCH_")) and name != lake.CLUSTER_ENV:
                patch.delenv(name)
        for name, value in values.items():
            patch.setenv(name, value)
        yield


def copy_warehouse(database: Path, folder: Path) -> Path:
    """A copy of a collected warehouse (collected once per module into a template folder) as
    ``folder/data/spendwatch.duckdb``, the path :func:`write_config` names: a test may write
    to its copy. The template's writer has closed, so the file is whole (no .wal to replay)."""
    target = folder / "data" / "spendwatch.duckdb"
    target.parent.mkdir(parents=True, exist_ok=True)
    if lake.active():  # the template folder's DuckLake into one of this folder's
        lake.copy(database.parent.parent, folder)
        return target
    shutil.copyfile(database, target)
    wal = database.with_name(database.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + ".wal"))
    return target


def copied_config(source: Path, folder: Path) -> Any:
    """The config at ``source`` over a copy of its warehouse in ``folder`` (a test may write
    to it): ``folder/data/spendwatch.duckdb``, or ``folder``'s DuckLake."""
    from dataclasses import replace

    from spendwatch.config import StorageConfig, load_config

    config = load_config(source)
    copied = copy_warehouse(source.parent / "data" / "spendwatch.duckdb", folder)
    storage = lake.storage_config(folder) if lake.active() else StorageConfig(
        database=str(copied))
    return replace(config, storage=storage)


@pytest.fixture
def simulator(simulators: Callable[..., Simulator]) -> Simulator:
    return simulators()


def at_once(step: Callable[[], Any], count: int = 2, timeout: float = 120) -> list[Any]:
    """What ``step`` returns in each of ``count`` threads started together (a barrier), in the
    order they finished; an exception in one is raised here, not lost with its thread."""
    start, lock = threading.Barrier(count), threading.Lock()
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            value = step()
        except BaseException as exc:  # noqa: BLE001 (raised again below)
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    assert len(results) == count, "a thread did not finish in time"
    return results


def write_config(folder: Path, orgs: list[dict], extra: str = "",
                 timezone_name: str = "America/Chicago", collection: str = "") -> Path:
    """A config.toml for ``orgs`` (dicts of organization keys) in ``folder``.

    Organizations collect the key cut only unless they name ``cuts`` (tests of other
    behaviour stay focused; tests of cuts ask for them) and no Claude Code report.
    """
    blocks = []
    for org in orgs:
        org = {"cuts": [], "claude_code": False, **org}
        lines = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                          .replace("'", '"') for k, v in org.items())
        blocks.append(f"[[organizations]]\n{lines}\n")
    settings = {"max_retry_after_seconds": "1", "timeout_seconds": "10"}
    for line in collection.splitlines():
        name, _, value = line.partition("=")
        settings[name.strip()] = value.strip()
    collection_lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    storage = (lake.storage_toml(folder) if lake.active() else
               'database = "data/spendwatch.duckdb"\n')
    text = (f'timezone = "{timezone_name}"\n[storage]\n{storage}'
            f"lock_timeout_seconds = 20\n[collection]\n{collection_lines}\n"
            + "\n".join(blocks) + extra)
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # spendwatch refuses a config open to group or others
    return path


@pytest.fixture
def org_config(isolated: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch):
    """A config with one analytics organization on the simulator, its key in the environment."""
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", ADMIN_KEY)

    def make(source: str = "analytics", collection: str = "", extra: str = "") -> Path:
        return write_config(isolated, [{"name": "acme", "source": source,
                                        "base_url": simulator.url}],
                            collection=collection, extra=extra)
    return make


def env_with_key(**extra: str) -> dict[str, str]:
    """The environment for a spendwatch subprocess: the user's ANTHROPIC_ and SPENDWATCH_
    variables out, the test admin key in, ``extra`` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "SPENDWATCH_"))}
    env["ANTHROPIC_ADMIN_KEY"] = ADMIN_KEY
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], object], seconds: float = 120) -> None:
    """Poll ``predicate`` (a look into a warehouse another process writes) until it is true;
    a DuckDB error (the writer holds the file) means look again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except duckdb.Error:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds:g} s waiting")


# --- what several test modules share -------------------------------------------------------

#: A Slack channel named "ops-slack" whose webhook URL is in $SLACK_WEBHOOK.
SLACK = '''
[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url_env = "SLACK_WEBHOOK"
min_interval_seconds = 0
'''


def usd(amount: Decimal) -> str:
    """Dollars as the dashboard shows them, computed here (not by spendwatch's formatter)."""
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{'-' if cents < 0 else ''}${abs(cents):,.2f}"


def metrics(at: Any) -> dict[str, str]:
    """An AppTest page's metrics, label -> value."""
    return {m.label: m.value for m in at.metric}


@dataclass
class Ran:
    """A CLI run: exit code, standard output, standard error."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list[str]) -> Ran:
    """The CLI in this process (a subprocess costs 2-3 s importing the SDK; the one-line
    error and the exit code are the CLI's own either way)."""
    from click.testing import CliRunner

    from spendwatch.cli.main import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)

