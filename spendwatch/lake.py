"""A DuckLake warehouse: a catalog in PostgreSQL, Parquet data on object storage or a shared
folder, read and written by any number of processes on any number of hosts at once.

``[storage] database = "ducklake:postgres:dbname=... host=... user=..."`` names the catalog and
``data_path`` the data. The same SQL runs on it as on a DuckDB file (:mod:`spendwatch.storage`
owns the writer and reader; this module opens the connection). What differs:

- DuckDB cannot download its extensions on a locked-down host, so they come from PyPI, as the
  ``ducklake`` extra installs them (``duckdb-ext-ducklake``, ``-postgres``, ``-httpfs``, built
  for DuckDB 1.4.4, the long-term-support line); they are loaded from that package's folder,
  never fetched.
- The catalog's password and the object store's keys are secrets (:mod:`spendwatch.secrets`):
  a file, else an environment variable, never the config. They reach DuckDB as secrets
  (``CREATE SECRET``), never in the connection string, which DuckDB repeats in its errors.
- A DuckLake has no key, index or sequence: the released migrations run through
  :class:`Dialect`, which leaves those out.
- Writers do not lock each other out: two transactions that touch the same rows conflict at
  commit, and :func:`spendwatch.storage.retry_conflicts` runs the loser again. Readers read a
  committed snapshot and never wait.
"""

from __future__ import annotations

import importlib
import os
import random
import re
import secrets
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import duckdb

from spendwatch.config import LAKE_PREFIX, Config
from spendwatch.errors import ConfigError, DatabaseBusy, DatabaseMissing
from spendwatch.files import private_folder
from spendwatch.secrets import Secret, redact, resolve_secret

#: The DuckDB line whose extensions PyPI ships (see the README's "DuckDB versions").
LAKE_DUCKDB = "1.4"
#: Catalog connections one attached lake may hold at once (PostgreSQL needs about this many
#: times the spendwatch connections open at once: a dashboard's viewers, the workers).
CATALOG_CONNECTIONS = 32
#: The name the lake is attached under; every query runs in it (``USE lake``).
CATALOG = "lake"
INSTALL_HINT = ("install spendwatch's ducklake extra: pip install 'spendwatch[ducklake]' "
                "(DuckDB 1.4.4 and its ducklake, postgres and httpfs extensions)")


def extension_directory() -> str:
    """The folder of the extensions the ``ducklake`` extra installed. ConfigError (one line,
    what to install) when they are missing or built for another DuckDB."""
    if not duckdb.__version__.startswith(LAKE_DUCKDB + "."):
        raise ConfigError(f"a DuckLake warehouse needs DuckDB {LAKE_DUCKDB}.x (this is "
                          f"{duckdb.__version__}); {INSTALL_HINT}")
    try:
        package = importlib.import_module("duckdb_ext")
    except ImportError:
        raise ConfigError(f"a DuckLake warehouse needs DuckDB's ducklake extension; "
                          f"{INSTALL_HINT}") from None
    return str(Path(list(package.__path__)[0]) / "extensions")


def catalog(config: Config) -> str:
    """The catalog part of ``[storage] database`` (after ``ducklake:``)."""
    return config.storage.database.strip()[len(LAKE_PREFIX):]


def data_path(config: Config) -> str:
    """Where the lake's data files are: an object store URL as given; a folder with a
    trailing slash, relative to the config file's folder."""
    given = config.storage.data_path.strip()
    if "://" in given:
        return given if given.endswith("/") else given + "/"
    folder = Path(given).expanduser()
    folder = folder if folder.is_absolute() else config.path.parent / folder
    return str(folder) + "/"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def password(config: Config) -> Secret | None:
    """The catalog's password: from ``storage.password_file`` when named, else the variable
    ``storage.password_env`` when it is set; None when neither holds one (PostgreSQL may take
    ``~/.pgpass``, a peer or a trusted login)."""
    storage = config.storage
    owner = f"{config.path}: storage"
    if storage.password_file:
        return resolve_secret(owner, "database password", "the catalog's PostgreSQL password",
                              file=storage.password_file)
    if storage.password_env and os.environ.get(storage.password_env, "").strip():
        return resolve_secret(owner, "database password", "the catalog's PostgreSQL password",
                              env=storage.password_env)
    return None


def _s3_secret(config: Config) -> str | None:
    """``CREATE SECRET`` for an ``s3://`` data path, its keys from files or the environment."""
    storage = config.storage
    if not data_path(config).startswith("s3://"):
        return None
    owner = f"{config.path}: storage"
    key_id = resolve_secret(owner, "S3 access key id", "the object store's access key id",
                            file=storage.s3_key_id_file or None, env=storage.s3_key_id_env)
    secret = resolve_secret(owner, "S3 secret key", "the object store's secret access key",
                            file=storage.s3_secret_file or None, env=storage.s3_secret_env)
    parts = [f"KEY_ID {_quote(key_id.reveal())}", f"SECRET {_quote(secret.reveal())}",
             f"REGION {_quote(storage.s3_region)}"]
    if storage.s3_endpoint:
        endpoint = urlsplit(storage.s3_endpoint if "://" in storage.s3_endpoint
                            else "https://" + storage.s3_endpoint)
        parts += [f"ENDPOINT {_quote(endpoint.netloc)}", "URL_STYLE 'path'",
                  f"USE_SSL {'true' if endpoint.scheme == 'https' else 'false'}"]
    return "CREATE OR REPLACE SECRET __default_s3 (TYPE s3, " + ", ".join(parts) + ")"


_instances: dict[tuple[tuple[str, Any], ...], duckdb.DuckDBPyConnection] = {}
_instances_lock = threading.RLock()


def _instance(settings: dict[str, str | int]) -> duckdb.DuckDBPyConnection:
    """A new cursor of this process's in-memory DuckDB with the extensions loaded (loading
    them takes 0.3 s a time), one instance per set of settings; the lakes :func:`connection`
    attaches live in it."""
    key = tuple(sorted(settings.items()))
    with _instances_lock:
        base = _instances.get(key)
        if base is None:
            base = duckdb.connect(":memory:", config={
                "extension_directory": extension_directory(),
                "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                # where a query past its memory limit spills: a folder of this user's (an
                # in-memory database would spill into the working folder)
                "temp_directory": tempfile.mkdtemp(prefix="spendwatch-duckdb-"),
                **settings})
            for extension in ("ducklake", "postgres", "httpfs"):
                base.execute(f"LOAD {extension}")
            # Each attached lake keeps a pool of catalog connections (64 by default): a few
            # are plenty, and a dashboard with many viewers must not exhaust PostgreSQL's
            # max_connections (100 by default).
            base.execute(f"SET GLOBAL pg_connection_limit = {CATALOG_CONNECTIONS}")
            _instances[key] = base
        return base.cursor()  # under the lock: the instance's own connection is shared


@dataclass
class _Attached:
    alias: str
    users: int = 0
    last_used: float = 0.0


#: The lakes this process has attached, by what identifies one (target, data, schema, mode,
#: settings). One attachment serves every connection to it: each connection is a cursor with
#: its own transactions. (DuckDB cannot attach the same catalog many times at once in one
#: instance: concurrent ATTACHes conflict in its own catalog.)
_attached: dict[tuple[Any, ...], _Attached] = {}
#: Attachments kept while no connection uses them (a test process opens many warehouses).
IDLE_ATTACHMENTS = 4


@contextmanager
def connection(config: Config, read_only: bool,
               settings: dict[str, str | int] | None = None
               ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the lake attached and in use, closed on exit. ConfigError when an
    extension is missing or the catalog refuses the login, DatabaseBusy when the catalog
    cannot be reached (PostgreSQL down or restarting). The lake is attached once per process
    (its password and keys read then); connections are cursors of that attachment."""
    options = dict(settings or {})
    key = (catalog(config), data_path(config), config.storage.metadata_schema, read_only,
           tuple(sorted(options.items())))
    with _instances_lock:
        attached = _attached.get(key)
        if attached is None:
            attached = _Attached(_attach(config, _instance(options), read_only))
            _attached[key] = attached
        attached.users += 1
        attached.last_used = time.monotonic()
        _forget_idle()
        conn = _instance(options)
    try:
        conn.execute(f"USE {attached.alias}")
        yield conn
    finally:
        conn.close()
        with _instances_lock:
            attached.users -= 1
            attached.last_used = time.monotonic()


def _attach(config: Config, conn: duckdb.DuckDBPyConnection, read_only: bool) -> str:
    """Attach ``config``'s lake under a new name (the caller holds the instances' lock)."""
    target, where = catalog(config), data_path(config)
    alias = f"{CATALOG}_{secrets.token_hex(6)}"
    try:
        if target.startswith("postgres:"):
            secret = password(config)
            if secret is not None:  # the instance's default PostgreSQL login
                conn.execute(f"CREATE OR REPLACE SECRET __default_postgres (TYPE postgres, "
                             f"PASSWORD {_quote(secret.reveal())})")
        s3 = _s3_secret(config)
        if s3 is not None:
            conn.execute(s3)
        elif "://" not in where:
            private_folder(Path(where))
        attach = [f"DATA_PATH {_quote(where)}"]
        if config.storage.metadata_schema:
            attach.append(f"METADATA_SCHEMA {_quote(config.storage.metadata_schema)}")
        if read_only:
            attach.append("READ_ONLY")
        statement = f"ATTACH {_quote(LAKE_PREFIX + target)} AS {alias} ({', '.join(attach)})"
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                conn.execute(statement)
                return alias
            except duckdb.Error as exc:
                if attempt == CREATE_ATTEMPTS or not _created_beside(exc):
                    raise
                # Another process made this new lake's catalog at the same moment (two
                # workers starting on an empty catalog): its creation has committed by the
                # time ours is refused, so the next ATTACH finds the lake and opens it.
                time.sleep(0.05 * attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover
    except duckdb.Error as exc:
        raise _attach_error(config, exc) from None
    finally:
        conn.close()


#: How many times an ATTACH that raced another process's creation of the lake is tried.
CREATE_ATTEMPTS = 5


def _created_beside(exc: duckdb.Error) -> bool:
    """Whether ATTACH failed because another process created the same new lake's catalog
    (schema, tables) at once: PostgreSQL refuses the second creation with a duplicate key in
    its own catalog (pg_namespace, pg_type) even for IF NOT EXISTS."""
    text = str(exc)
    return "Failed to initialize DuckLake" in text and (
        "duplicate key value" in text or "already exists" in text)


def _forget_idle() -> None:
    """Detach the least recently used attachments no connection uses, past
    :data:`IDLE_ATTACHMENTS` (the caller holds the instances' lock)."""
    idle = sorted((key for key, a in _attached.items() if a.users == 0),
                  key=lambda k: _attached[k].last_used)
    for key in idle[:max(0, len(idle) - IDLE_ATTACHMENTS)]:
        attached = _attached.pop(key)
        cursor = _instance(dict(key[4]))
        try:
            cursor.execute(f"DETACH {attached.alias}")
        except duckdb.Error:
            pass
        finally:
            cursor.close()


#: libpq's words for a catalog that is down or unreachable: try again later.
_UNREACHABLE = ("Connection refused", "could not connect", "timeout expired",
                "the database system is starting up", "the database system is shutting down",
                "server closed the connection")
_REFUSED = ("password authentication failed", "no password supplied", "fe_sendauth",
            "does not exist", "permission denied", "no pg_hba.conf entry")


def _attach_error(config: Config, exc: duckdb.Error) -> Exception:
    """One line for a lake that cannot be opened, never a secret (DuckDB repeats the
    connection string, which holds none, and the error is redacted besides)."""
    text = redact(" ".join(str(exc).split()))
    label = f"{config.path}: the DuckLake catalog {catalog(config)}"
    if "creating a new one in read-only mode" in text or (
            "does not exist" in text and "Existing DuckLake" in text):
        return DatabaseMissing(f"the DuckLake {catalog(config)} does not exist yet; run "
                               "`spendwatch collect` first")
    if any(marker in text for marker in _UNREACHABLE):
        return DatabaseBusy(f"{label} cannot be reached (is PostgreSQL running?); the data "
                            "cannot be read or written until it is, try again in a moment")
    for marker in _REFUSED:
        if marker.lower() in text.lower():
            reason = re.sub(r".*?(FATAL|ERROR):\s*", "", text)[:160]
            return ConfigError(f"{label} refused the connection ({reason}); check "
                               "storage.database and the password in storage.password_file "
                               "or storage.password_env")
    return ConfigError(f"{label} with data in {data_path(config)} cannot be opened "
                       f"({text[:200]}); check storage.database and storage.data_path")


# --- migrations ------------------------------------------------------------------------------

_TABLE_KEY = re.compile(r",\s*PRIMARY KEY\s*\([^)]*\)", re.IGNORECASE)
_COLUMN_KEY = re.compile(r"\s+PRIMARY KEY\b", re.IGNORECASE)
_SEQUENCE_DEFAULT = re.compile(r"\s+DEFAULT\s+nextval\('[^']*'\)", re.IGNORECASE)
_ON_CONFLICT = re.compile(r"\s+ON CONFLICT\s*(\([^)]*\))?\s*DO NOTHING", re.IGNORECASE)
_LEFT_OUT = re.compile(r"^\s*(CREATE\s+(UNIQUE\s+)?INDEX|CREATE\s+SEQUENCE|DROP\s+SEQUENCE)\b",
                       re.IGNORECASE)


def lake_sql(sql: str) -> str | None:
    """A released migration's statement as DuckLake takes it: no primary key, no sequence
    default, no ON CONFLICT (a fresh table has nothing to conflict with); None for a statement
    DuckLake has no counterpart of (an index, a sequence), which is left out."""
    if _LEFT_OUT.match(sql):
        return None
    for pattern in (_TABLE_KEY, _COLUMN_KEY, _SEQUENCE_DEFAULT, _ON_CONFLICT):
        sql = pattern.sub("", sql)
    return sql


class Dialect:
    """A connection whose ``execute`` runs :func:`lake_sql` of each statement; everything
    else is the connection's own."""

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self._conn = conn

    def execute(self, sql: str, parameters: Any = None) -> Any:
        rewritten = lake_sql(sql)
        if rewritten is None:
            return self._conn
        if parameters is None:
            return self._conn.execute(rewritten)
        return self._conn.execute(rewritten, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
