"""DuckDB access: writer and reader connections, lock retry, numbered migrations.

DuckDB lets one process write only while no other process has the file open at all, and a
conflicting open fails at once. So (DESIGN.md): a writer opens, writes one transaction, and
closes, per job; a reader opens ``read_only=True`` per query batch and closes; both retry the
lock error with a bounded backoff; nobody caches a connection.

The database and the folders created for it are owner-only (0600, 0700: :mod:`spendwatch.files`),
whatever the umask. A path that cannot be a database (a file that is not DuckDB, a folder, a
folder that cannot be created) is a ConfigError of one line: the user's to fix.
"""

from __future__ import annotations

import logging
import secrets
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence, TypeVar

import duckdb

from spendwatch.config import Config
from spendwatch.errors import (ConfigError, ConflictingWriters, DatabaseBusy, DatabaseMissing,
                               DatabaseOutdated, DatabaseTooNew)
from spendwatch import facts, lake
from spendwatch.facts import CUT_FACTS_VIEW, SPEND_FACTS_VIEW
from spendwatch.files import is_private, make_private, private_folder

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOCK_MARKERS = ("Could not set lock", "different configuration", "Conflicting lock")
#: DuckDB's words when the path cannot hold a database at all: the user's mistake.
_NOT_A_DATABASE = {"not a valid DuckDB database": "is not a DuckDB database",
                   "Is a directory": "is a folder",
                   "Permission denied": "cannot be opened (permission denied)",
                   "No such file or directory": "cannot be created (no such folder)",
                   "Read-only file system": "cannot be written (read-only file system)"}


def is_lock_error(exc: BaseException) -> bool:
    """True for the errors that mean "another connection holds the file": retry those."""
    return isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)) and any(
        marker in str(exc) for marker in _LOCK_MARKERS
    )


def _open_with_retry(path: Path, read_only: bool, timeout: float,
                     settings: dict[str, str | int] | None = None) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only, config=dict(settings or {}))
            session_settings(conn)
            return conn
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not is_lock_error(exc):
                for marker, problem in _NOT_A_DATABASE.items():
                    if marker in str(exc):
                        raise ConfigError(f"the database {path} {problem}; point "
                                          "storage.database at spendwatch's database or at "
                                          "a new file in a folder of yours") from None
                raise
            if time.monotonic() + delay > deadline:
                raise DatabaseBusy(
                    f"{path} is locked by another spendwatch process (the worker is probably "
                    "writing); the data is being updated, try again in a moment"
                ) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)


def writer(config: Config) -> ContextManager[duckdb.DuckDBPyConnection]:
    """A read-write connection to ``config``'s warehouse (see :func:`writer_at`, and
    :mod:`spendwatch.lake` for a DuckLake)."""
    if config.storage.is_lake:
        return lake_writer(config)
    return writer_at(config.database_path, config.storage.lock_timeout_seconds)


def reader(config: Config) -> ContextManager[duckdb.DuckDBPyConnection]:
    """A read-only connection to ``config``'s warehouse (see :func:`reader_at`), bounded by
    ``[storage] reader_memory_mb`` and ``reader_threads``."""
    if config.storage.is_lake:
        return lake_reader(config)
    return reader_at(config.database_path, config.storage.lock_timeout_seconds,
                     config.storage.reader_memory_mb, config.storage.reader_threads)


def reader_settings(memory_mb: int | None, threads: int | None) -> dict[str, str | int]:
    """DuckDB's settings that bound one reader's memory and threads (None: its defaults)."""
    settings: dict[str, str | int] = {}
    if memory_mb is not None:
        settings["memory_limit"] = f"{memory_mb}MB"
    if threads is not None:
        settings["threads"] = threads
    return settings


def session_settings(conn: duckdb.DuckDBPyConnection) -> None:
    """What every connection sets first. No progress bar: DuckDB draws one on stdout for a
    long query (a migration's rebuild, a reprice), into the worker's log and the demo's output
    (a session setting: in config it is global, refused while the file is open in-process).
    Timestamps come back in the session's zone, which defaults to the machine's: pinned, so a
    bucket's UTC day (prices, legacy days) never depends on the host."""
    conn.execute("SET enable_progress_bar = false")
    conn.execute("SET TimeZone = 'UTC'")


def check_version(conn: duckdb.DuckDBPyConnection, where: str) -> None:
    """DatabaseOutdated when an older spendwatch wrote the warehouse and no writer has
    migrated it since (a reader cannot migrate: it says what will)."""
    version = schema_version(conn)
    if version < len(MIGRATIONS):
        raise DatabaseOutdated(
            f"{where} was written by an older spendwatch (schema {version}, this one needs "
            f"{len(MIGRATIONS)}); run `spendwatch collect` once, or start the worker, to "
            "upgrade it")


def refuse_newer(conn: duckdb.DuckDBPyConnection, where: str) -> None:
    """DatabaseTooNew when a newer spendwatch migrated the warehouse past this one's schema:
    this code would write its rows without what the newer keeps beside them."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise DatabaseTooNew(
            f"{where} was upgraded by a newer spendwatch (schema {version}, this one knows "
            f"{len(MIGRATIONS)}); upgrade spendwatch on this host before it writes there "
            "(readers of this version still read it)")


@contextmanager
def writer_at(path: Path, lock_timeout: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection with migrations applied; closed on exit.

    Creates the file (0600) and its folder (0700) if missing. Raises DatabaseBusy when the
    file stays locked past ``lock_timeout`` seconds, ConfigError when the path cannot be a
    database.
    """
    try:
        private_folder(path.parent)
    except OSError as exc:
        raise ConfigError(f"the database folder {path.parent} cannot be created "
                          f"({exc.strerror or type(exc).__name__}); point storage.database "
                          "at a file in a folder of yours") from None
    created = not path.exists()
    conn = _open_with_retry(path, read_only=False, timeout=lock_timeout)
    if created:
        make_private(path)
    try:
        refuse_newer(conn, str(path))
        migrate(conn)
        yield conn
    finally:
        conn.close()
        if is_private(path):  # a write-ahead log left behind holds the data too
            make_private(path.with_name(path.name + ".wal"))


@contextmanager
def reader_at(path: Path, lock_timeout: float = 10.0, memory_mb: int | None = None,
              threads: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection; closed on exit. ``memory_mb`` and ``threads`` bound what its
    queries may use (None: DuckDB's defaults, most of the machine).

    Raises DatabaseMissing when nothing has been collected yet, DatabaseBusy when locked,
    DatabaseOutdated when an older spendwatch wrote it and no writer has migrated it since.
    """
    if not path.exists():
        raise DatabaseMissing(f"{path} does not exist yet; run `spendwatch collect` first")
    conn = _open_with_retry(path, read_only=True, timeout=lock_timeout,
                            settings=reader_settings(memory_mb, threads))
    try:
        check_version(conn, str(path))
        yield conn
    finally:
        conn.close()


@contextmanager
def lake_writer(config: Config) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a DuckLake, migrations applied; closed on exit. Other
    writers may write at the same time: a transaction that conflicts with one of theirs
    fails at its commit (:func:`retry_conflicts`)."""
    with lake.connection(config, read_only=False) as conn:
        session_settings(conn)
        refuse_newer(conn, config.database_label)
        if schema_version(conn) < len(MIGRATIONS):  # two new workers may migrate at once
            retry_conflicts(lambda: _migrate_beside_others(conn), "migrating the warehouse")
        yield conn


#: How old a DuckLake snapshot (and the files only it reads) may get before housekeeping
#: removes it: a reader that began before then has long finished.
SNAPSHOT_KEEP = "1 day"


def maintain(config: Config) -> bool:
    """A DuckLake's housekeeping (False for a file, which needs none): rewrite files that are
    mostly deleted rows, merge small adjacent files (every transaction writes new ones),
    expire snapshots older than :data:`SNAPSHOT_KEEP` and delete the files only they read.
    A conflict with a writer (it rewrote the same files) is retried like any other."""
    if not config.storage.is_lake:
        return False

    def housekeeping() -> None:
        with writer(config) as conn:
            (name,) = conn.execute("SELECT current_database()").fetchone() or ("",)
            for call in ("ducklake_rewrite_data_files('{n}')",
                         "ducklake_merge_adjacent_files('{n}')",
                         "ducklake_expire_snapshots('{n}', older_than => now() - INTERVAL "
                         f"'{SNAPSHOT_KEEP}')",
                         "ducklake_cleanup_old_files('{n}', older_than => now() - INTERVAL "
                         f"'{SNAPSHOT_KEEP}')"):
                conn.execute("CALL " + call.format(n=name)).fetchall()
    retry_conflicts(housekeeping, "the DuckLake's housekeeping")
    return True


def _migrate_beside_others(conn: duckdb.DuckDBPyConnection) -> int:
    """:func:`migrate` a lake that another writer may be migrating at the same moment: a
    migration that finds its table made meanwhile (the other committed first) is a conflict,
    tried again from the version now stored."""
    before = schema_version(conn)
    try:
        return migrate(conn, lake_dialect=True)
    except duckdb.CatalogException as exc:
        if schema_version(conn) == before and "already exists" not in str(exc):
            raise
        raise duckdb.TransactionException(f"conflict: another writer migrated first ({exc})"
                                          ) from None


@contextmanager
def lake_reader(config: Config) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to a DuckLake's last committed snapshot (it never waits for a
    writer); closed on exit. DatabaseMissing while nothing was collected into it,
    DatabaseOutdated as for a file."""
    with lake.connection(config, read_only=True, settings=reader_settings(
            config.storage.reader_memory_mb, config.storage.reader_threads)) as conn:
        session_settings(conn)
        version = schema_version(conn)
        if version == 0:
            raise DatabaseMissing(f"the DuckLake {config.database_label} does not exist yet; "
                                  "run `spendwatch collect` first")
        if version < len(MIGRATIONS):  # other hosts read while a worker migrates
            raise DatabaseBusy(f"the DuckLake {lake.catalog(config)} is at schema {version}, "
                               f"this spendwatch needs {len(MIGRATIONS)}: a worker is upgrading "
                               "it (or run `spendwatch collect` once); try again in a moment")
        yield conn


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK if the block raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException as exc:
        conn.execute("ROLLBACK")
        if is_interrupt(exc):
            raise KeyboardInterrupt from exc
        raise
    conn.execute("COMMIT")


def register(conn: duckdb.DuckDBPyConnection, name: str, table: Any) -> None:
    """``conn.register(name, table)``: an Arrow table readable by SQL as ``name``.

    DuckDB refuses to register (or unregister) while an earlier ``execute()`` result on the
    connection is not read to its end (a ``fetchone()``); that result is dropped first. DuckDB
    1.4 (the DuckLake line) has no ``abort`` and no such refusal.
    """
    drop_result(conn)
    conn.register(name, table)


def temp_table(conn: duckdb.DuckDBPyConnection, name: str,
               columns: Mapping[str, tuple[str, Sequence[Any]]]) -> None:
    """A temporary table ``name`` on ``conn`` (replacing one of that name) holding ``columns``:
    column name -> (its SQL type, its values), every list as long. For the small relations a
    query joins (a batch's feature map, the price table): bound as one list per column, not
    registered as a Python object, since DuckDB's ``register`` imports pandas (46 MB of a
    reader process's memory) to check what it was given. Works on a read-only connection
    (the temporary catalog is the session's) and inside a writer's transaction."""
    lengths = {len(values) for _, values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of {name} differ in length: {sorted(lengths)}")
    selects = ", ".join(f"unnest($c{n}::{kind}[]) AS {column}"
                        for n, (column, (kind, _)) in enumerate(columns.items()))
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {selects}",
                 {f"c{n}": list(values) for n, (_, values) in enumerate(columns.values())})


def unregister(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """``conn.unregister(name)``, after dropping an unfinished result (see :func:`register`)."""
    drop_result(conn)
    conn.unregister(name)


def drop_result(conn: duckdb.DuckDBPyConnection) -> None:
    """Drops the connection's unfinished result, where DuckDB has the call (2.0 on)."""
    abort = getattr(conn, "abort", None)
    if abort is not None:
        abort()


# --- writing without constraints ----------------------------------------------------------
# A DuckLake warehouse has no PRIMARY KEY, UNIQUE, index or sequence, and a file warehouse has
# none either since migration 12: nothing relies on a constraint. An upsert is a delete and an
# insert in one transaction; an id is the table's highest plus one, taken under the table's
# lock; "exactly once" (a report, a digest, a claim of the outbox) is a transaction that takes
# a lock, and two transactions that take the same lock conflict, so one of them is retried
# and finds what the other did.

#: The rows of ``locks`` (migration 12). Taking one updates its row: the update conflicts with
#: any other transaction's update of it (DuckDB: at the update; DuckLake: at the commit).
LOCKS = ("outbox", "alerts", "reports", "digests", "collection_runs", "alert_silences")
CONFLICT_ATTEMPTS = 8


def lock(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Make the caller's transaction conflict with every other one that takes ``name``."""
    assert name in LOCKS, name
    conn.execute("UPDATE locks SET taken = taken + 1 WHERE name = ?", [name])


def next_id(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """The next id of ``table`` (its highest plus one). The caller holds the lock that covers
    the table's inserts (:data:`ID_LOCKS`), so two writers never take the same id."""
    lock(conn, ID_LOCKS[table])
    row = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()
    return int(row[0]) if row else 1


#: Which lock covers the inserts of each table with an id.
ID_LOCKS = {"alert_notifications": "outbox", "alert_episodes": "alerts",
            "collection_runs": "collection_runs", "alert_silences": "alert_silences"}


def replace_rows(conn: duckdb.DuckDBPyConnection, table: str, keys: Sequence[str],
                 rows_sql: str, params: Sequence[object] = ()) -> None:
    """An upsert without a constraint: the rows ``rows_sql`` selects (all of ``table``'s
    columns, in order) replace ``table``'s rows with the same ``keys``. ``rows_sql`` may read
    ``table``'s old rows (it is read before they go)."""
    conn.execute("CREATE OR REPLACE TEMP TABLE replacing_rows AS " + rows_sql, list(params))
    match = " AND ".join(f"{table}.{k} = replacing_rows.{k}" for k in keys)
    conn.execute(f"DELETE FROM {table} USING replacing_rows WHERE {match}")
    conn.execute(f"INSERT INTO {table} SELECT * FROM replacing_rows")
    conn.execute("DROP TABLE replacing_rows")


def set_meta(conn: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    """``meta[key] = value``, in the caller's transaction."""
    conn.execute("DELETE FROM meta WHERE key = ?", [key])
    conn.execute("INSERT INTO meta VALUES (?, ?)", [key, value])


def is_conflict(exc: BaseException) -> bool:
    """True for a transaction that lost to another writer's (retry it from the start)."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def retry_conflicts(work: Callable[[], T], what: str,
                    attempts: int = CONFLICT_ATTEMPTS,
                    give_up: Callable[[], bool] | None = None) -> T:
    """``work()`` (a whole writer transaction), again after a short, growing pause while it
    conflicts with another writer's; ConflictingWriters after ``attempts``. When
    ``give_up()`` is true after a conflict (a stop was asked), the conflict is raised at once
    instead (the transaction was rolled back: nothing of it is stored)."""
    delay = 0.02
    for attempt in range(attempts):
        try:
            return work()
        except duckdb.TransactionException as exc:
            if not is_conflict(exc):
                raise
            log.info("%s conflicted with another writer (attempt %d of %d)",
                     what, attempt + 1, attempts)
            if give_up is not None and give_up():
                raise
        if attempt + 1 < attempts:
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
    raise ConflictingWriters(f"{what} conflicted with another writer {attempts} times in a "
                             "row; it is tried again at the next run (if it keeps happening, "
                             "fewer workers should write the same organization)")


def written(config: Config, work: Callable[[duckdb.DuckDBPyConnection], T], what: str,
            conn: duckdb.DuckDBPyConnection | None = None,
            give_up: Callable[[], bool] | None = None) -> T:
    """``work(conn)`` in one writer transaction, retried while it conflicts with another
    writer's (:func:`retry_conflicts`, ``give_up`` as there): on ``conn`` (a
    :func:`batch_writer`'s) when given, else on a writer of its own."""
    def attempt() -> T:
        if conn is not None:
            with transaction(conn):
                return work(conn)
        with writer(config) as own, transaction(own):
            return work(own)
    return retry_conflicts(attempt, what, give_up=give_up)


#: How much write-ahead log a :func:`batch_writer` lets its transactions add before DuckDB
#: checkpoints (its default, 16 MB, is a day of a 400-key organization's window writes).
BATCH_WAL = "1GB"


@contextmanager
def batch_writer(config: Config) -> Iterator[duckdb.DuckDBPyConnection]:
    """A :func:`writer` for several transactions in a row (a collection's fetched windows,
    each its own), checkpointed once, at its close. On a file, a checkpoint rewrites every
    row group a transaction touched (a window's delete and append: 0.3 s of a cost window of
    the 400-key bench's 0.45 s), so one per window was most of a backfill's writing; a DuckLake
    has none. The file stays locked for the whole batch: keep it to seconds (readers wait
    for the lock up to ``lock_timeout_seconds``)."""
    with writer(config) as conn:
        if not config.storage.is_lake:
            conn.execute(f"SET checkpoint_threshold = '{BATCH_WAL}'")
        yield conn


def is_interrupt(exc: BaseException) -> bool:
    """DuckDB turns Ctrl-C during a query into its own error: it means KeyboardInterrupt."""
    return isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException)) or (
        isinstance(exc, RuntimeError) and "Query interrupted" in str(exc))


# --- migrations ------------------------------------------------------------------------------
# Numbered, append-only: never edit a released migration, add the next one.

_DIMENSIONS = """
    model VARCHAR,
    workspace_id VARCHAR,
    api_key_id VARCHAR,
    service_tier VARCHAR,
    context_window VARCHAR,
"""


def _m001_initial(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"""
        CREATE TABLE usage_hourly (
            row_key VARCHAR PRIMARY KEY,        -- the natural key, see collectors.rows
            organization VARCHAR NOT NULL,
            source VARCHAR NOT NULL,            -- analytics | legacy
            bucket_start TIMESTAMPTZ NOT NULL,  -- UTC hour
            bucket_end TIMESTAMPTZ NOT NULL,
            {_DIMENSIONS}
            uncached_input_tokens BIGINT NOT NULL,
            cache_write_5m_tokens BIGINT NOT NULL,
            cache_write_1h_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            web_search_requests BIGINT NOT NULL,
            requests BIGINT,
            provisional BOOLEAN NOT NULL,       -- inside the re-read window when fetched
            fetched_at TIMESTAMPTZ NOT NULL
        )""")
    conn.execute(f"""
        CREATE TABLE cost_buckets (
            row_key VARCHAR PRIMARY KEY,
            organization VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            bucket_start TIMESTAMPTZ NOT NULL,
            bucket_end TIMESTAMPTZ NOT NULL,
            bucket_width VARCHAR NOT NULL,      -- 1h (analytics) | 1d (legacy)
            {_DIMENSIONS}
            cost_type VARCHAR,                  -- tokens | web_search | code_execution | session_usage
            token_type VARCHAR,                 -- only for cost_type = tokens
            description VARCHAR,                -- legacy cost report only
            amount_usd DECIMAL(38, 12) NOT NULL,        -- billed, after discounts, before credits
            list_amount_usd DECIMAL(38, 12),            -- list price; legacy has none
            requests BIGINT,
            provisional BOOLEAN NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE sync_state (
            organization VARCHAR NOT NULL,
            stream VARCHAR NOT NULL,            -- usage | cost
            covered_from TIMESTAMPTZ NOT NULL,  -- [covered_from, covered_until) is stored whole
            covered_until TIMESTAMPTZ NOT NULL,
            data_refreshed_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (organization, stream)
        )""")
    conn.execute("CREATE SEQUENCE collection_run_ids START 1")
    conn.execute("""
        CREATE TABLE collection_runs (
            id BIGINT PRIMARY KEY DEFAULT nextval('collection_run_ids'),
            organization VARCHAR NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ NOT NULL,
            status VARCHAR NOT NULL,            -- ok | failed
            windows INTEGER NOT NULL,
            usage_rows INTEGER NOT NULL,
            cost_rows INTEGER NOT NULL,
            error VARCHAR                       -- one line, never a secret
        )""")
    conn.execute("""
        CREATE TABLE workspaces (
            organization VARCHAR NOT NULL,
            workspace_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            archived_at TIMESTAMPTZ,
            is_default BOOLEAN NOT NULL,        -- the legacy API calls it null
            fetched_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (organization, workspace_id)
        )""")
    conn.execute("""
        CREATE TABLE api_keys (
            organization VARCHAR NOT NULL,
            api_key_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            status VARCHAR,
            workspace_id VARCHAR,
            created_at TIMESTAMPTZ,
            fetched_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (organization, api_key_id)
        )""")
    conn.execute("CREATE INDEX usage_org_bucket ON usage_hourly (organization, bucket_start)")
    conn.execute("CREATE INDEX cost_org_bucket ON cost_buckets (organization, bucket_start)")


_ESTIMATE_COLUMNS = ("est_input_usd", "est_cache_write_5m_usd", "est_cache_write_1h_usd",
                     "est_cache_read_usd", "est_output_usd", "est_web_search_usd")


def _m002_pricing(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("""
        CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""")
    # Estimated cost of each usage row (spendwatch.pricing), recomputed when prices change.
    conn.execute(f"""
        CREATE TABLE usage_estimates (
            row_key VARCHAR PRIMARY KEY,        -- usage_hourly.row_key
            {", ".join(f"{c} DECIMAL(38, 12)" for c in _ESTIMATE_COLUMNS)},
            unpriced_reason VARCHAR             -- set when there is no price: never a silent $0
        )""")
    # Legacy cost (daily per workspace and line) split across API keys and hours in proportion
    # to their usage of the same line; lines with no usage to follow stay whole, key unknown.
    conn.execute(f"""
        CREATE TABLE cost_allocated (
            row_key VARCHAR PRIMARY KEY,
            organization VARCHAR NOT NULL,
            bucket_start TIMESTAMPTZ NOT NULL,
            bucket_width VARCHAR NOT NULL,      -- 1h (allocated) | 1d (kept whole)
            {_DIMENSIONS}
            cost_type VARCHAR,
            token_type VARCHAR,
            amount_usd DECIMAL(38, 12) NOT NULL,
            cost_basis VARCHAR NOT NULL,        -- allocated | billed
            provisional BOOLEAN NOT NULL,
            source_row_key VARCHAR NOT NULL     -- the cost_buckets row it came from
        )""")
    conn.execute("CREATE INDEX allocated_org_bucket ON cost_allocated (organization, bucket_start)")
    # Usage on a legacy-billed day that no cost line follows (the legacy report never has
    # Priority Tier, for one): it keeps its estimate, or shows as unpriced, never as $0.
    conn.execute("""
        CREATE TABLE usage_unbilled (
            row_key VARCHAR NOT NULL,           -- usage_hourly.row_key
            component VARCHAR NOT NULL,         -- the usage column no cost line follows
            organization VARCHAR NOT NULL,
            bucket_start TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (row_key, component)
        )""")
    conn.execute("""
        CREATE TABLE models (
            model_id VARCHAR PRIMARY KEY,
            display_name VARCHAR,
            line VARCHAR,                       -- haiku | sonnet | opus | fable | mythos | NULL
            lifecycle VARCHAR,
            retires_at TIMESTAMPTZ,
            fetched_at TIMESTAMPTZ NOT NULL
        )""")
    conn.execute(SPEND_FACTS_VIEW)


def _m003_alerts(conn: duckdb.DuckDBPyConnection) -> None:
    # The state of each (rule, scope, level): ok | pending | firing, and its open episode.
    conn.execute("""
        CREATE TABLE alert_states (
            rule VARCHAR NOT NULL,
            scope_key VARCHAR NOT NULL,
            level VARCHAR NOT NULL,
            state VARCHAR NOT NULL,             -- ok | pending | firing
            since TIMESTAMPTZ NOT NULL,         -- when this state began
            episode_id BIGINT,                  -- the open episode (pending or firing)
            last_result VARCHAR NOT NULL,       -- ok | firing | no_data: the last evaluation
            last_value DECIMAL(38, 12),
            last_evaluated_at TIMESTAMPTZ NOT NULL,
            last_notified_at TIMESTAMPTZ,
            PRIMARY KEY (rule, scope_key, level)
        )""")
    conn.execute("CREATE SEQUENCE alert_episode_ids START 1")
    conn.execute("""
        CREATE TABLE alert_episodes (
            id BIGINT PRIMARY KEY DEFAULT nextval('alert_episode_ids'),
            rule VARCHAR NOT NULL,
            rule_kind VARCHAR NOT NULL,
            scope_key VARCHAR NOT NULL,
            scope_json VARCHAR NOT NULL,
            level VARCHAR NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,    -- first seen firing (pending from here)
            firing_at TIMESTAMPTZ,              -- NULL while pending
            ended_at TIMESTAMPTZ,
            end_reason VARCHAR,                 -- resolved | cleared_while_pending | expired
            silenced BOOLEAN NOT NULL,          -- a silence covered it when it fired
            threshold DECIMAL(38, 12) NOT NULL,
            peak_value DECIMAL(38, 12),
            unit VARCHAR NOT NULL,
            summary VARCHAR NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE alert_transitions (
            episode_id BIGINT,
            rule VARCHAR NOT NULL,
            scope_key VARCHAR NOT NULL,
            level VARCHAR NOT NULL,
            old_state VARCHAR NOT NULL,
            new_state VARCHAR NOT NULL,
            changed_at TIMESTAMPTZ NOT NULL,
            value DECIMAL(38, 12)
        )""")
    conn.execute("CREATE SEQUENCE alert_notification_ids START 1")
    conn.execute("""
        CREATE TABLE alert_notifications (
            id BIGINT PRIMARY KEY DEFAULT nextval('alert_notification_ids'),
            episode_id BIGINT,                  -- NULL for a test message
            kind VARCHAR NOT NULL,              -- firing | reminder | resolved | test
            channel VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            status VARCHAR NOT NULL,            -- pending | sent | failed | silenced
            attempts INTEGER NOT NULL,
            sent_at TIMESTAMPTZ,
            last_answer VARCHAR,
            payload_json VARCHAR NOT NULL,      -- the Notification, no secret in it
            claimed_at TIMESTAMPTZ              -- a check is sending it (see alerts.engine)
        )""")
    conn.execute("""
        CREATE TABLE alert_deliveries (
            notification_id BIGINT NOT NULL,
            channel VARCHAR NOT NULL,
            attempted_at TIMESTAMPTZ NOT NULL,
            ok BOOLEAN NOT NULL,
            permanent BOOLEAN NOT NULL,
            answer VARCHAR NOT NULL             -- the channel's answer, never a secret
        )""")
    conn.execute("""
        CREATE TABLE alert_channels (
            channel VARCHAR PRIMARY KEY,
            broken BOOLEAN NOT NULL,
            reason VARCHAR,
            since TIMESTAMPTZ NOT NULL
        )""")
    conn.execute("CREATE SEQUENCE alert_silence_ids START 1")
    conn.execute("""
        CREATE TABLE alert_silences (
            id BIGINT PRIMARY KEY DEFAULT nextval('alert_silence_ids'),
            rule VARCHAR NOT NULL,
            scope_key VARCHAR,                  -- NULL: every scope of the rule
            created_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            comment VARCHAR
        )""")


def _m004_reports(conn: duckdb.DuckDBPyConnection) -> None:
    # One row per organization and week the worker wrote and sent: the "once" of delivery.
    conn.execute("""
        CREATE TABLE report_runs (
            organization VARCHAR NOT NULL,
            week VARCHAR NOT NULL,              -- ISO week, e.g. 2026-W47
            written_at TIMESTAMPTZ NOT NULL,
            path VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            total_usd DECIMAL(38, 12) NOT NULL,
            channels VARCHAR NOT NULL,          -- the channels it was queued for, comma-separated
            final_at TIMESTAMPTZ,               -- written again once the week's cost settled
            final_total_usd DECIMAL(38, 12),
            PRIMARY KEY (organization, week)
        )""")


def _m005_silence_authors(conn: duckdb.DuckDBPyConnection) -> None:
    # Who made a silence: the dashboard's logged-in e-mail address, or the CLI's OS user.
    conn.execute("ALTER TABLE alert_silences ADD COLUMN created_by VARCHAR")


_CUT_DIMENSIONS = """
    model VARCHAR,
    service_tier VARCHAR,
    context_window VARCHAR,
    inference_geo VARCHAR,
    speed VARCHAR,
    product VARCHAR,
    actor_key VARCHAR,                  -- user / service account / API key id, federated:...
    actor_type VARCHAR,
    rbac_group_id VARCHAR,
    user_profile_id VARCHAR,
    workspace_id VARCHAR,
    api_key_id VARCHAR,
"""


def _m006_cuts(conn: duckdb.DuckDBPyConnection) -> None:
    # The other cuts of the same hours (spendwatch.cuts): written like usage_hourly and
    # cost_buckets, one window per transaction, a ``cut`` column apart.
    conn.execute(f"""
        CREATE TABLE usage_cuts (
            row_key VARCHAR PRIMARY KEY,
            organization VARCHAR NOT NULL,
            cut VARCHAR NOT NULL,               -- price | people | groups | profiles
            source VARCHAR NOT NULL,
            bucket_start TIMESTAMPTZ NOT NULL,
            bucket_end TIMESTAMPTZ NOT NULL,
            {_CUT_DIMENSIONS}
            uncached_input_tokens BIGINT NOT NULL,
            cache_write_5m_tokens BIGINT NOT NULL,
            cache_write_1h_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            web_search_requests BIGINT NOT NULL,
            requests BIGINT,
            provisional BOOLEAN NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL
        )""")
    conn.execute(f"""
        CREATE TABLE cost_cuts (
            row_key VARCHAR PRIMARY KEY,
            organization VARCHAR NOT NULL,
            cut VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            bucket_start TIMESTAMPTZ NOT NULL,
            bucket_end TIMESTAMPTZ NOT NULL,
            {_CUT_DIMENSIONS}
            cost_type VARCHAR,
            token_type VARCHAR,
            amount_usd DECIMAL(38, 12) NOT NULL,
            list_amount_usd DECIMAL(38, 12),
            requests BIGINT,
            provisional BOOLEAN NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL
        )""")
    conn.execute("CREATE INDEX usage_cuts_org_bucket ON usage_cuts (organization, cut, bucket_start)")
    conn.execute("CREATE INDEX cost_cuts_org_bucket ON cost_cuts (organization, cut, bucket_start)")
    conn.execute(f"""
        CREATE TABLE cut_estimates (
            row_key VARCHAR PRIMARY KEY,        -- usage_cuts.row_key
            {", ".join(f"{c} DECIMAL(38, 12)" for c in _ESTIMATE_COLUMNS)},
            unpriced_reason VARCHAR
        )""")
    # Who an actor is, from the rows that named them (names change; keys do not).
    conn.execute("""
        CREATE TABLE people (
            organization VARCHAR NOT NULL,
            actor_key VARCHAR NOT NULL,
            actor_type VARCHAR NOT NULL,
            email VARCHAR,
            name VARCHAR,
            deleted BOOLEAN NOT NULL,
            last_seen TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (organization, actor_key)
        )""")
    # Whether the organization's key can read a cut (a non-Enterprise organization cannot
    # read people or products): one line when it first could not, never a failed run.
    conn.execute("""
        CREATE TABLE cut_access (
            organization VARCHAR NOT NULL,
            cut VARCHAR NOT NULL,
            readable BOOLEAN NOT NULL,
            reason VARCHAR,
            checked_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (organization, cut)
        )""")
    # The legacy usage_report/claude_code: per actor per UTC day, activity (never spend).
    conn.execute("""
        CREATE TABLE claude_code_daily (
            row_key VARCHAR PRIMARY KEY,
            organization VARCHAR NOT NULL,
            day DATE NOT NULL,                  -- the UTC day
            actor_type VARCHAR NOT NULL,
            actor VARCHAR NOT NULL,             -- e-mail address or API key name
            terminal_type VARCHAR,
            sessions BIGINT NOT NULL,
            lines_added BIGINT NOT NULL,
            lines_removed BIGINT NOT NULL,
            commits BIGINT NOT NULL,
            pull_requests BIGINT NOT NULL,
            tool_accepted BIGINT NOT NULL,
            tool_rejected BIGINT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            cache_creation_tokens BIGINT NOT NULL,
            estimated_cost_usd DECIMAL(38, 12) NOT NULL,
            models VARCHAR NOT NULL,            -- comma-separated
            fetched_at TIMESTAMPTZ NOT NULL
        )""")
    conn.execute(CUT_FACTS_VIEW)
    # The key of people's pseudonyms ([privacy] pseudonymize_people): random per warehouse,
    # so a pseudonym cannot be recomputed from an e-mail address elsewhere.
    conn.execute("INSERT INTO meta VALUES ('people_salt', ?) ON CONFLICT (key) DO NOTHING",
                 [secrets.token_hex(16)])


def _m007_facts(conn: duckdb.DuckDBPyConnection) -> None:
    # The facts every spend query reads, stored (spendwatch.facts): kept by each window write
    # for the hours it replaced, so a query costs its range, not the history.
    facts.create(conn)
    facts.rebuild(conn)


def _m008_fact_keys(conn: duckdb.DuckDBPyConnection) -> None:
    # Every stored combination of a fact's workspace, key, product and actor, per cut: the
    # feature map is built from it without scanning the history.
    facts.create_keys(conn)


def _m009_estimates_unkeyed(conn: duckdb.DuckDBPyConnection) -> None:
    # Estimates without a primary key: each is written and repriced in bulk, in the same
    # transaction as the rows it prices (deleted first); an index on a text key made every
    # insert cost more than the pricing itself, and DuckLake has no keys.
    for table in ("usage_estimates", "cut_estimates"):
        conn.execute(f"CREATE TABLE {table}_unkeyed AS SELECT * FROM {table}")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_unkeyed RENAME TO {table}")


def _m010_digest_runs(conn: duckdb.DuckDBPyConnection) -> None:
    # One row per organization and local day whose daily digest was queued (reports.daily):
    # the "once" of its delivery, as report_runs is the weekly report's.
    conn.execute("""
        CREATE TABLE digest_runs (
            organization VARCHAR NOT NULL,
            day DATE NOT NULL,                  -- the local day the digest tells
            written_at TIMESTAMPTZ NOT NULL,
            total_usd DECIMAL(38, 12) NOT NULL,
            channels VARCHAR NOT NULL,          -- the channels it was queued for, comma-separated
            PRIMARY KEY (organization, day)
        )""")


def _m011_fact_requests(conn: duckdb.DuckDBPyConnection) -> None:
    # Each usage row's request count on its output fact (NULL where the API reports none):
    # cost per request on the dashboard. The facts are built again from the raw rows.
    # (A new file's facts table has it already: migration 7 makes today's columns.)
    conn.execute("ALTER TABLE facts ADD COLUMN IF NOT EXISTS requests BIGINT")
    conn.execute(SPEND_FACTS_VIEW)
    conn.execute(CUT_FACTS_VIEW)
    facts.rebuild(conn)


#: The tables that had a primary key (or an id from a sequence) until migration 12.
_KEYED_TABLES = ("schema_migrations", "usage_hourly", "cost_buckets", "sync_state",
                 "collection_runs", "workspaces", "api_keys", "meta", "cost_allocated",
                 "usage_unbilled", "models", "alert_states", "alert_episodes",
                 "alert_notifications", "alert_channels", "alert_silences", "report_runs",
                 "usage_cuts", "cost_cuts", "people", "cut_access", "claude_code_daily",
                 "digest_runs")
_SEQUENCES = ("collection_run_ids", "alert_episode_ids", "alert_notification_ids",
              "alert_silence_ids")


def _m012_unconstrained(conn: duckdb.DuckDBPyConnection) -> None:
    # No primary key, index or sequence left (DuckLake has none, and nothing may rely on
    # one: see "writing without constraints" above). On a file the text keys' indexes made
    # every row of a window write cost an index insert. The tables are copied whole, in order,
    # their columns as they were (NOT NULL kept; a key's columns are NOT NULL).
    for table in _KEYED_TABLES:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE "
            "table_name = ? AND database_name = current_database() AND schema_name = "
            "current_schema() ORDER BY column_index", [table]).fetchall()
        conn.execute(f"CREATE TABLE {table}_unkeyed (" + ", ".join(
            f"{name} {kind}{'' if nullable else ' NOT NULL'}"
            for name, kind, nullable in columns) + ")")
        conn.execute(f"INSERT INTO {table}_unkeyed SELECT * FROM {table}")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_unkeyed RENAME TO {table}")
    for sequence in _SEQUENCES:
        conn.execute(f"DROP SEQUENCE IF EXISTS {sequence}")
    conn.execute("CREATE TABLE locks (name VARCHAR NOT NULL, taken BIGINT NOT NULL)")
    conn.execute("INSERT INTO locks SELECT unnest(?::VARCHAR[]), 0", [list(LOCKS)])


def _m013_estimates_ranged(conn: duckdb.DuckDBPyConnection) -> None:
    # Each estimate carries its row's organization and bucket: a window's write deletes and
    # joins the estimates of its hours only. Joined on row_key alone, every facts refresh read
    # all of a year's estimates (a day's facts: 0.03 s at 1 month, 0.13 s at 12). An estimate
    # whose row is gone (none should be) is dropped.
    # (Done once even when two new workers on a DuckLake migrate at once: a table that has
    # the columns already is left as it is.)
    for table, rows in (("usage_estimates", "usage_hourly"), ("cut_estimates", "usage_cuts")):
        columns = [c for (c,) in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND database_name = "
            "current_database() AND schema_name = current_schema() ORDER BY column_index",
            [table]).fetchall()]
        if "bucket_start" in columns:
            continue
        conn.execute(f"CREATE TABLE {table}_ranged AS SELECT "
                     + ", ".join(f"e.{c}" for c in columns)
                     + f", r.organization, r.bucket_start FROM {table} e "
                     f"JOIN {rows} r USING (row_key)")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_ranged RENAME TO {table}")


def _m014_facts_daily(conn: duckdb.DuckDBPyConnection) -> None:
    # The hourly facts summed per UTC day (spendwatch.facts): a spend query of a week reads
    # its whole days there, a sixth of the rows, and only its edges' hours in facts; and
    # per organization, the state of sync_state they agree with (an older spendwatch writing
    # the facts without them is found out, spendwatch.facts.stale_organizations).
    # (Done once even when two new workers on a DuckLake migrate at once.)
    if not facts.has_table(conn, "facts_daily"):
        facts.create_daily(conn)
    if not facts.has_table(conn, "daily_state"):
        facts.create_daily_state(conn)


MIGRATIONS: list[tuple[int, str, Callable[[duckdb.DuckDBPyConnection], None]]] = [
    (1, "initial", _m001_initial),
    (2, "pricing", _m002_pricing),
    (3, "alerts", _m003_alerts),
    (4, "reports", _m004_reports),
    (5, "silence_authors", _m005_silence_authors),
    (6, "cuts", _m006_cuts),
    (7, "facts", _m007_facts),
    (8, "fact_keys", _m008_fact_keys),
    (9, "estimates_unkeyed", _m009_estimates_unkeyed),
    (10, "digest_runs", _m010_digest_runs),
    (11, "fact_requests", _m011_fact_requests),
    (12, "unconstrained", _m012_unconstrained),
    (13, "estimates_ranged", _m013_estimates_ranged),
    (14, "facts_daily", _m014_facts_daily),
]


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The highest applied migration, 0 for an empty warehouse."""
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations' "
        "AND table_catalog = current_database() AND table_schema = current_schema()"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: duckdb.DuckDBPyConnection, lake_dialect: bool = False) -> int:
    """Apply every pending migration, each in its own transaction. Returns the new version.

    ``lake_dialect``: the warehouse is a DuckLake, which has no key, index or sequence: the
    released migrations run as written, through :class:`spendwatch.lake.Dialect`, which
    leaves those out (migration 12 removes them from a file anyway).
    """
    if lake_dialect:
        conn = lake.Dialect(conn)  # type: ignore[assignment]
    conn.execute("""
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL
        )""")
    current = schema_version(conn)
    pending = [m for m in MIGRATIONS if m[0] > current]
    for version, name, apply in pending:
        with transaction(conn):
            apply(conn)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
        log.info("applied migration %03d_%s", version, name)
        current = version
    return current
