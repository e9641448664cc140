"""A reader batch: one open connection, the config, and what every query of the batch shares.

Every figure of the read side takes a :class:`Batch` as its first argument. The name book
(workspace and API key names) and the feature map (which feature each organization, workspace
and API key pair belongs to) are built lazily, the first time a query of the batch needs them,
and then ONCE for the batch, however many queries follow; the batches :func:`read` opens share
them across a process while the warehouse does not change (:meth:`Batch.shared`).

Commands, the worker and the dashboard reach the warehouse through :func:`read`, which opens
``storage.reader(config)``, builds the batch, runs one function on it and closes: nobody holds a
connection past a batch (see ``DESIGN.md``). Code that already holds a connection (a writer in
a transaction, a test) wraps it in ``Batch(conn, config)``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, TypeVar

import duckdb

from spendwatch import storage
from spendwatch.config import Config
from spendwatch.errors import QueryTooLarge
from spendwatch.features import feature_for, is_person, person_label, pseudonym

T = TypeVar("T")

#: The feature map's columns (all but ``feature`` are the keys it is joined on).
_MAP_COLUMNS = ("organization", "workspace_id", "api_key_id", "product", "actor_key", "feature")
#: The feature map's empty form: a table with the map's columns and no row.
_NO_FEATURES = ("SELECT " + ", ".join(f"NULL::VARCHAR AS {c}" for c in _MAP_COLUMNS)
                + " WHERE false")
#: The columns a feature map is keyed on, per the cut features are judged on
#: (spendwatch.config.feature_basis; None: the key cut).
_MAP_KEYS = {None: ("organization", "workspace_id", "api_key_id"),
             "products": ("organization", "workspace_id", "api_key_id", "product"),
             "people": ("organization", "product", "actor_key")}
#: The distinct keys stored in each basis cut: (organization, workspace_id, api_key_id,
#: product, actor_key, actor_type).
_MAP_PAIRS = {
    None: """SELECT DISTINCT organization, workspace_id, api_key_id, NULL, NULL, NULL
             FROM fact_keys WHERE cut = 'key'""",
    "products": """SELECT DISTINCT organization, workspace_id, api_key_id, product, NULL, NULL
                   FROM fact_keys WHERE cut = 'products'""",
    "people": """SELECT DISTINCT organization, NULL, NULL, product, actor_key, actor_type
                 FROM fact_keys WHERE cut = 'people'""",
}


@dataclass(frozen=True)
class NameBook:
    """Names of workspaces and API keys, per organization, from the warehouse."""

    workspaces: dict[tuple[str, str], str]
    api_keys: dict[tuple[str, str], str]
    #: (organization, actor_key) -> (actor_type, email, name, deleted)
    people: dict[tuple[str, str], tuple[str, str | None, str | None, bool]] = \
        field(default_factory=dict)
    salt: str | None = None  # set when people are shown as pseudonyms

    @cached_property
    def _reported_by(self) -> dict[str, str]:
        """actor_key -> the organization that reported it (the first, in key order)."""
        out: dict[str, str] = {}
        for org, key in sorted(self.people):
            out.setdefault(key, org)
        return out

    @cached_property
    def _by_id(self) -> tuple[dict[str, str], dict[str, str]]:
        """Workspace and API key names by ID alone (the first organization's, in key order)."""
        out: tuple[dict[str, str], dict[str, str]] = ({}, {})
        for book, index in ((self.workspaces, out[0]), (self.api_keys, out[1])):
            for (_, item_id), name in sorted(book.items()):
                index.setdefault(item_id, name)
        return out

    def any_workspace(self, workspace_id: str | None) -> str | None:
        """A workspace's name in any organization (a query not grouped by organization)."""
        return self._by_id[0].get(workspace_id) if workspace_id else None

    def any_api_key(self, api_key_id: str | None) -> str | None:
        """An API key's name in any organization (a query not grouped by organization)."""
        return self._by_id[1].get(api_key_id) if api_key_id else None

    @classmethod
    def load(cls, conn: duckdb.DuckDBPyConnection, pseudonyms: bool = False) -> "NameBook":
        ws = {(o, i): n for o, i, n in conn.execute(
            "SELECT organization, workspace_id, name FROM workspaces").fetchall()}
        keys = {(o, i): n for o, i, n in conn.execute(
            "SELECT organization, api_key_id, name FROM api_keys").fetchall()}
        people = {(o, k): (t, e, n, bool(d)) for o, k, t, e, n, d in conn.execute(
            "SELECT organization, actor_key, actor_type, email, name, deleted FROM people"
        ).fetchall()}
        salt = None
        if pseudonyms:
            row = conn.execute("SELECT value FROM meta WHERE key = 'people_salt'").fetchone()
            salt = row[0] if row else "spendwatch"
        return cls(ws, keys, people, salt)

    def person(self, organization: str | None, actor_key: str | None,
               actor_type: str | None = None) -> str:
        """An actor's label (spendwatch.features.person_label), pseudonym when asked for."""
        if actor_key is None:
            return person_label(None, None, None, None, False, None)
        organization = organization or self._organization_of(actor_key)
        known = self.people.get((organization, actor_key)) if organization else None
        kind, email, name, deleted = known or (actor_type, None, None, False)
        kind = kind or actor_type
        key_name = (self.api_key(organization, actor_key) if organization
                    else self.any_api_key(actor_key)
                    ) if kind == "api_actor" else None
        alias = (pseudonym(self.salt, organization or "", actor_key)
                 if self.salt is not None else None)
        return person_label(actor_key, kind, email, name, deleted, key_name, alias)

    def person_id(self, organization: str | None, actor_key: str | None,
                  actor_type: str | None = None) -> str | None:
        """The ID shown beside the label: the actor key, or the pseudonym for a person."""
        if actor_key is None or self.salt is None or not is_person(actor_type):
            return actor_key
        return pseudonym(self.salt, organization or self._organization_of(actor_key) or "",
                         actor_key)

    def _organization_of(self, actor_key: str) -> str | None:
        """The organization that reported an actor (a query not grouped by organization):
        its pseudonym is the same whatever the query groups by."""
        return self._reported_by.get(actor_key)

    def workspace(self, organization: str, workspace_id: str | None) -> str | None:
        return self.workspaces.get((organization, workspace_id)) if workspace_id else None

    def api_key(self, organization: str, api_key_id: str | None) -> str | None:
        return self.api_keys.get((organization, api_key_id)) if api_key_id else None

    def workspace_ids(self, name: str) -> list[str]:
        """IDs of the workspaces called ``name`` (in any organization)."""
        return [i for (_, i), n in self.workspaces.items() if n == name]

    def api_key_ids(self, name: str) -> list[str]:
        """IDs of the API keys called ``name`` (in any organization)."""
        return [i for (_, i), n in self.api_keys.items() if n == name]


@dataclass(frozen=True)
class FeatureMap:
    """The feature of every key stored in the cut features are judged on (``basis``: None for
    the key cut's (organization, workspace_id, api_key_id); ``products`` adds the product;
    ``people`` is (organization, product, actor_key)).

    ``sql`` is a relation with (at least) the columns it is joined on (:attr:`keys`) and
    ``feature``, whose bound parameters are ``params``: a query puts ``feature_map AS (sql)``
    in its WITH clause, joins it ``ON`` :meth:`join` and passes ``params`` along.
    """

    sql: str
    params: dict[str, Any]
    features: dict[tuple[str | None, ...], str]
    basis: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns the map is joined on."""
        return _MAP_KEYS[self.basis]

    def join(self, alias: str, map_alias: str = "f") -> str:
        """The ON condition joining facts ``alias`` to the map."""
        keys = _MAP_KEYS[self.basis]
        return " AND ".join(
            f"{map_alias}.{k} = {alias}.{k}" if k == "organization"
            else f"{map_alias}.{k} IS NOT DISTINCT FROM {alias}.{k}" for k in keys)


#: The warehouse's state as a reader sees it, in one small query: what the shared values are
#: built from, each table's rows hashed whole (a listing that renames a key at the instant of
#: the last one still changes it): the sync state (a window write moves it; the daily sums'
#: freshness and the cuts stored are read from it), the names, the people, the daily sums'
#: record, the number of stored keys (keys are only ever added) and the pseudonym salt.
_STATE_SQL = "SELECT " + ", ".join(
    [f"(SELECT count(*) || ':' || coalesce(sum(hash(t)), 0) FROM {table} t)"
     for table in ("sync_state", "workspaces", "api_keys", "people")]
    + ["(SELECT count(*) || ':' || coalesce(sum(hash(t)), 0) FROM daily_state t)",
       "(SELECT count(*) FROM fact_keys)",
       "(SELECT max(value) FROM meta WHERE key = 'people_salt')"])
#: What the reader batches of one process share while their warehouse's state is the same:
#: (warehouse, feature rules, privacy, state) -> key -> value. The few most recent states.
_SHARED: OrderedDict[tuple[Any, ...], dict[Any, Any]] = OrderedDict()
_SHARED_STATES = 8
_SHARED_LOCK = threading.Lock()


class Batch:
    """One reader batch: ``conn`` (open for the batch), ``config``, and the lazily built, once
    per batch, :attr:`names` and feature maps (:meth:`feature_map_for`).

    A batch :func:`read` opened (``shared``) takes them, and whatever else goes through
    :meth:`shared`, from the process's earlier batches while the warehouse's state
    (``_STATE_SQL``, one query) is the same: a dashboard's page runs, one after another, read
    them once per change of the warehouse. A batch over a connection its caller holds (a
    writer in a transaction, a test) builds its own.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, config: Config, shared: bool = False):
        self.conn = conn
        self.config = config
        self._sharing = shared
        self._shared_values: dict[Any, Any] | None = None
        self._feature_maps: dict[str | None, FeatureMap] = {}
        #: Small answers every query of the batch shares (which cuts are stored), by key.
        self.memo: dict[Any, Any] = {}

    def _values(self) -> dict[Any, Any]:
        """This batch's shared values: its own, or the process's for the warehouse's state
        (an attribute, not a cached_property: Python 3.11's holds one lock for every
        instance, so concurrent sessions' batches would wait on each other's state query)."""
        if self._shared_values is None:
            self._shared_values = self._state_values() if self._sharing else {}
        return self._shared_values

    def _state_values(self) -> dict[Any, Any]:
        state = (self.config.database_label, self.config.features, self.config.privacy,
                 *(self.conn.execute(_STATE_SQL).fetchone() or ()))
        with _SHARED_LOCK:
            values = _SHARED.get(state)
            if values is None:
                values = _SHARED[state] = {}
                while len(_SHARED) > _SHARED_STATES:
                    _SHARED.popitem(last=False)
            _SHARED.move_to_end(state)
        return values

    def shared(self, key: Any, build: Callable[[], T]) -> T:
        """``build()``, once per batch, and on a shared batch once per process and warehouse
        state. What it returns is shared: never change it."""
        values = self._values()
        if key not in values:
            values[key] = build()
        return values[key]

    @property
    def names(self) -> NameBook:
        """Workspace and API key names, read once per batch (or warehouse state)."""
        return self.shared("names", lambda: NameBook.load(
            self.conn, self.config.privacy.pseudonymize_people))

    @property
    def feature_map(self) -> FeatureMap:
        """The key cut's feature map (see :meth:`feature_map_for`)."""
        return self.feature_map_for(None)

    @cached_property
    def memberships(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """(organization, actor_key) -> the RBAC groups the ``members`` cut saw them in."""
        out: dict[tuple[str, str], list[str]] = {}
        for org, actor, group in self.conn.execute("""
                SELECT DISTINCT organization, actor_key, rbac_group_id FROM fact_keys
                WHERE cut = 'members' AND actor_key IS NOT NULL AND rbac_group_id IS NOT NULL
                ORDER BY 1, 2, 3""").fetchall():
            out.setdefault((org, actor), []).append(group)
        return {k: tuple(v) for k, v in out.items()}

    def feature_map_for(self, basis: str | None) -> FeatureMap:
        """The feature of every key stored in the ``basis`` cut (config ``[[features]]`` rules,
        else the API key's, else the workspace's name; on the people cut the person's label),
        built once per batch (or warehouse state) and basis, and made a temporary table of the
        batch's connection once."""
        if basis not in self._feature_maps:
            features = self.shared(("features", basis), lambda: self._features(basis))
            if not features:
                self._feature_maps[basis] = FeatureMap(_NO_FEATURES, {}, {}, basis)
            else:
                # A temporary table (a VALUES list of thousands of bound parameters costs
                # more to bind than the query it joins) of the columns it is joined on.
                relation = f"feature_map_{basis or 'key'}"
                columns = dict(zip(_MAP_COLUMNS, zip(*[(*row, feature)
                                                       for row, feature in features.items()])))
                storage.temp_table(self.conn, relation, {
                    name: ("VARCHAR", values) for name, values in columns.items()
                    if name in _MAP_KEYS[basis] or name == "feature"})
                self._feature_maps[basis] = FeatureMap(f"SELECT * FROM {relation}", {},
                                                       features, basis)
        return self._feature_maps[basis]

    def _features(self, basis: str | None) -> dict[tuple[str | None, ...], str]:
        """(organization, workspace, key, product, actor) -> feature, for every stored key."""
        pairs = self.conn.execute(_MAP_PAIRS[basis]).fetchall()
        names, rules = self.names, self.config.features
        members = self.memberships if basis == "people" and pairs else {}
        features: dict[tuple[str | None, ...], str] = {}
        for org, ws, key, product, actor, kind in pairs:
            email, fallback = None, None
            if basis == "people":
                # An API key is an actor on the people cut: key rules match it by its ID.
                key = actor if kind == "api_actor" else None
                person = names.people.get((org, actor)) if actor else None
                email = person[1] if person else None
                fallback = None if key else names.person(org, actor, kind)
            feature = feature_for(rules, org, ws, names.workspace(org, ws), key,
                                  names.api_key(org, key), product=product, email=email,
                                  rbac_groups=members.get((org, actor), ()) if actor else (),
                                  fallback=fallback)
            row = (org, ws if basis != "people" else None, key if basis != "people" else None,
                   product, actor)
            features[row] = feature
        return features


def read(config: Config, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(batch, *args, **kwargs)`` on a new reader batch of ``config``'s warehouse.

    Opens ``storage.reader(config)`` (which retries a lock and raises DatabaseBusy /
    DatabaseMissing), builds the :class:`Batch`, returns what ``func`` returns, and closes the
    connection, also when ``func`` raises.
    """
    with storage.reader(config) as conn:
        try:
            return func(Batch(conn, config, shared=True), *args, **kwargs)
        except duckdb.OutOfMemoryException:
            raise QueryTooLarge(
                f"this question needs more memory than a reader may use "
                f"([storage] reader_memory_mb = {config.storage.reader_memory_mb}); ask for a "
                "shorter period or raise reader_memory_mb") from None
