"""The DuckLake backend of the tests (``pytest --backend ducklake``): a throwaway PostgreSQL
cluster for the catalogs, a catalog schema per warehouse, the data beside the test's config.

The cluster is Debian's PostgreSQL (``/usr/lib/postgresql/*/bin``), started by the first
pytest process on a free port with password authentication (scram-sha-256; the tests name the
password's file in ``storage.password_file``) and stopped when it ends. Its address reaches
pytest-xdist's workers through the environment. Nothing here uses spendwatch's own code: a
test reads a DuckLake back through DuckDB and the extensions directly.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

#: How the first pytest process tells its xdist workers where the cluster is.
CLUSTER_ENV = "SPENDWATCH_TEST_CATALOG"
PASSWORD = "spendwatch-test-catalog-password"


@dataclass
class Cluster:
    folder: Path
    port: int
    password_file: Path

    @property
    def dsn(self) -> str:
        return f"dbname=postgres host=127.0.0.1 port={self.port} user=postgres"


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql): "
                           "the ducklake backend needs it for its catalogs")
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the postgres user when root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster() -> Cluster:
    bin_dir = _binaries()
    folder = Path(tempfile.mkdtemp(prefix="spendwatch-pg-"))
    password_file = folder / "password"
    password_file.write_text(PASSWORD, encoding="utf-8")
    password_file.chmod(0o600)
    data, socket_dir = folder / "data", folder / "socket"
    socket_dir.mkdir()
    pw_for_initdb = folder / "initdb-password"
    pw_for_initdb.write_text(PASSWORD, encoding="utf-8")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(socket_dir, "postgres")
        shutil.chown(pw_for_initdb, "postgres")
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                 "-A", "scram-sha-256", f"--pwfile={pw_for_initdb}"]),
                   check=True, capture_output=True)
    pw_for_initdb.unlink()
    port = _free_port()
    subprocess.run(_as_postgres([
        str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
        f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=300 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start"]),
        check=True, capture_output=True)
    if os.geteuid() == 0:  # the tests' user reads the password file
        shutil.chown(password_file, "root")
    return Cluster(folder, port, password_file)


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run(_as_postgres([str(_binaries() / "pg_ctl"), "-D",
                                 str(cluster.folder / "data"), "-m", "immediate", "stop"]),
                   capture_output=True)
    shutil.rmtree(cluster.folder, ignore_errors=True)


def encode(cluster: Cluster) -> str:
    return f"{cluster.folder}|{cluster.port}|{cluster.password_file}"


def decode(text: str) -> Cluster:
    folder, port, password_file = text.split("|")
    return Cluster(Path(folder), int(port), Path(password_file))


_cluster: Cluster | None = None


def use(cluster: Cluster) -> None:
    global _cluster
    _cluster = cluster


def active() -> Cluster | None:
    """The cluster of this run, or None on the file backend."""
    return _cluster


def schema_for(folder: Path) -> str:
    """The catalog schema of the warehouse whose config is in ``folder``: one per folder."""
    return "w_" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]


def storage_toml(folder: Path) -> str:
    """``[storage]``'s lines for a DuckLake warehouse of ``folder`` (its config's folder)."""
    cluster = active()
    assert cluster is not None
    return (f'database = "ducklake:postgres:{cluster.dsn}"\n'
            f'data_path = "lake/"\nmetadata_schema = "{schema_for(folder)}"\n'
            f'password_file = "{cluster.password_file}"\n')


def _attach(conn: duckdb.DuckDBPyConnection, folder: Path, name: str,
            read_only: bool) -> None:
    cluster = active()
    assert cluster is not None
    conn.execute(f"ATTACH 'ducklake:postgres:{cluster.dsn}' AS {name} (DATA_PATH "
                 f"'{folder.resolve()}/lake/', METADATA_SCHEMA '{schema_for(folder)}'"
                 + (", READ_ONLY" if read_only else "") + ")")


def _duckdb() -> duckdb.DuckDBPyConnection:
    import duckdb_ext  # type: ignore[import-not-found]
    ext = str(Path(list(duckdb_ext.__path__)[0]) / "extensions")
    conn = duckdb.connect(config={"extension_directory": ext,
                                  "autoinstall_known_extensions": False,
                                  "autoload_known_extensions": False})
    conn.execute("LOAD ducklake")
    conn.execute("LOAD postgres")
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"CREATE SECRET (TYPE postgres, PASSWORD '{PASSWORD}')")
    return conn


def tables(conn: duckdb.DuckDBPyConnection, catalog: str = "lake") -> list[str]:
    """The warehouse's tables in the lake attached as ``catalog`` (not the catalog's own)."""
    return [t for (t,) in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = "
        "'main' AND NOT internal", [catalog]).fetchall()]


def copy(source: Path, target: Path) -> None:
    """``source``'s DuckLake (its tables, their NOT NULLs, its views) as ``target``'s."""
    conn = _duckdb()
    try:
        _attach(conn, source, "src", read_only=True)
        _attach(conn, target, "dst", read_only=False)
        conn.execute("USE dst")
        conn.execute("BEGIN")
        for table in tables(conn, "src"):
            columns = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE "
                "database_name = 'src' AND table_name = ? ORDER BY column_index",
                [table]).fetchall()
            conn.execute(f"CREATE TABLE dst.{table} (" + ", ".join(
                f"{name} {kind}{'' if nullable else ' NOT NULL'}"
                for name, kind, nullable in columns) + ")")
            conn.execute(f"INSERT INTO dst.{table} SELECT * FROM src.{table}")
        for (sql,) in conn.execute("SELECT sql FROM duckdb_views() WHERE database_name = 'src' "
                                   "AND schema_name = 'main' AND NOT internal").fetchall():
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def storage_config(folder: Path) -> object:
    """The ``StorageConfig`` of :func:`storage_toml` (data path absolute)."""
    from spendwatch.config import StorageConfig
    cluster = active()
    assert cluster is not None
    return StorageConfig(database=f"ducklake:postgres:{cluster.dsn}",
                         data_path=f"{folder.resolve()}/lake/",
                         metadata_schema=schema_for(folder),
                         password_file=str(cluster.password_file))


def connect(folder: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """DuckDB with ``folder``'s DuckLake attached and in use, opened here, independently of
    spendwatch's storage code."""
    conn = _duckdb()
    _attach(conn, folder, "lake", read_only)
    conn.execute("USE lake")
    return conn
