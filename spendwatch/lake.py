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
import re
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb

from spendwatch.config import LAKE_PREFIX, Config
from spendwatch.errors import ConfigError, DatabaseBusy
from spendwatch.files import private_folder
from spendwatch.secrets import Secret, redact, resolve_secret

#: The DuckDB line whose extensions PyPI ships (see the README's "DuckDB versions").
LAKE_DUCKDB = "1.4"
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
_instances_lock = threading.Lock()


def _instance(settings: dict[str, str | int]) -> duckdb.DuckDBPyConnection:
    """A new cursor of this process's in-memory DuckDB with the extensions loaded (loading
    them takes 0.3 s a time), one instance per set of settings. The instance holds no
    warehouse: each :func:`connect` attaches the lake under a name of its own and detaches it
    when closed, so nothing is cached but the loaded extensions."""
    key = tuple(sorted(settings.items()))
    with _instances_lock:
        base = _instances.get(key)
        if base is None:
            base = duckdb.connect(":memory:", config={
                "extension_directory": extension_directory(),
                "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                **settings})
            for extension in ("ducklake", "postgres", "httpfs"):
                base.execute(f"LOAD {extension}")
            _instances[key] = base
        return base.cursor()  # under the lock: the instance's own connection is shared


def connect(config: Config, read_only: bool,
            settings: dict[str, str | int] | None = None) -> duckdb.DuckDBPyConnection:
    """A connection with the lake attached and in use; :func:`close` it. ConfigError when an
    extension is missing or the catalog refuses the login, DatabaseBusy when the catalog
    cannot be reached (PostgreSQL down or restarting)."""
    target, where = catalog(config), data_path(config)
    conn = _instance(dict(settings or {}))
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
        conn.execute(f"ATTACH {_quote(LAKE_PREFIX + target)} AS {alias} "
                     f"({', '.join(attach)})")
        conn.execute(f"USE {alias}")
        return conn
    except duckdb.Error as exc:
        close(conn)
        raise _attach_error(config, exc) from None
    except BaseException:
        close(conn)
        raise


def close(conn: duckdb.DuckDBPyConnection) -> None:
    """Detach the lake a :func:`connect` attached, and close the cursor."""
    try:
        (alias,) = conn.execute("SELECT current_database()").fetchone() or ("",)
        conn.execute("USE memory")
        if str(alias).startswith(CATALOG + "_"):
            conn.execute(f"DETACH {alias}")
    except duckdb.Error:
        pass
    finally:
        conn.close()


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
