"""Configuration: one TOML file, validated strictly, with secrets kept out of it.

Where the file comes from: ``--config PATH``, else ``$SPENDWATCH_CONFIG``, else
``./config.toml``. Every problem (a missing file, bad TOML, an unknown key, a wrong type, a
secret that cannot be found) raises :class:`ConfigError` with one line naming the file, the key
and the fix. ``config.example.toml`` documents every option.

Secrets (the admin key, a channel's webhook URL or password) never live in the file: it names
the environment variable (``admin_key_env``, default ``ANTHROPIC_ADMIN_KEY``) or the file
(``admin_key_file``) that holds each, and :func:`spendwatch.secrets.resolve_secret` reads it
when it is needed (:func:`resolve_admin_key`, :func:`resolve_channel_secret`).

``[alerts]`` is read here in its generic shape only (channels: name, kind, settings; rules:
name, kind, channels, scope, timing, params); what a channel or rule kind takes is checked by
``alerts.settings.validate``, which every entry point runs after :func:`load_config`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import time as dt_time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spendwatch.cuts import CUT_BY_NAME, CUTS, Cut
from spendwatch.errors import ConfigError
from spendwatch.files import check_private
from spendwatch.secrets import Secret, resolve_secret
from spendwatch.pricing import PriceRow, parse_price_row

DEFAULT_CONFIG = "config.toml"
SOURCES = ("analytics", "legacy")


@dataclass(frozen=True)
class FeatureRule:
    """A feature: a name for a group of API keys and/or workspaces (IDs or name globs),
    products, people (e-mail globs) or RBAC groups (IDs); any one criterion matching is enough."""

    name: str
    api_key_ids: tuple[str, ...] = ()
    api_key_names: tuple[str, ...] = ()
    workspace_ids: tuple[str, ...] = ()
    workspace_names: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    people: tuple[str, ...] = ()
    rbac_groups: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    batch_eligible: bool = False

    @property
    def by_workspace(self) -> bool:
        return bool(self.workspace_ids or self.workspace_names)

    @property
    def by_person(self) -> bool:
        return bool(self.people or self.rbac_groups)


def feature_basis(rules: Sequence[FeatureRule]) -> str | None:
    """The cut every feature is judged on (spendwatch.cuts): ``people`` when a rule names
    people or RBAC groups, ``products`` when one names products, else None (the key cut)."""
    if any(r.by_person for r in rules):
        return "people"
    if any(r.products for r in rules):
        return "products"
    return None


@dataclass(frozen=True)
class OrganizationConfig:
    """One organization to collect."""

    name: str
    source: str = "analytics"
    base_url: str = "https://api.anthropic.com"
    admin_key_env: str = "ANTHROPIC_ADMIN_KEY"
    admin_key_file: str | None = None
    #: The cuts to collect besides the key cut (spendwatch.cuts); None: the default cuts its
    #: source has (analytics: price, people, groups, products; legacy: price).
    cuts: tuple[str, ...] | None = None
    #: Read the legacy usage_report/claude_code (per developer per day); None: legacy only.
    claude_code: bool | None = None
    #: Read the people cut's cost by token type too (cost by cache status per person): set
    #: when features are judged on the people cut (feature_basis), whose every figure then
    #: needs the cache status.
    people_cost_by_token_type: bool = False

    def cut_names(self) -> tuple[str, ...]:
        """The cuts collected for this organization, in collection order."""
        available = [c for c in CUTS if self.source in c.sources]
        if self.cuts is None:
            return tuple(c.name for c in available if c.default)
        return tuple(c.name for c in available if c.name in self.cuts)

    def cut(self, name: str) -> Cut:
        """The cut ``name`` as this organization collects it."""
        cut = CUT_BY_NAME[name]
        if name == "people" and self.people_cost_by_token_type:
            return replace(cut, cost_fanout=("cost_type", "token_type"))
        return cut

    def reads_claude_code(self) -> bool:
        return self.source == "legacy" if self.claude_code is None else self.claude_code


@dataclass(frozen=True)
class CollectionConfig:
    """How and how often the collectors run."""

    interval_minutes: int = 5
    initial_backfill_days: int = 7
    usage_lookback_hours: int = 24
    cost_lookback_hours: int = 72
    page_limit: int = 1000
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    max_retry_after_seconds: float = 60.0
    job_deadline_seconds: float = 240.0


LINES = ("haiku", "sonnet", "opus")


@dataclass(frozen=True)
class SavingsConfig:
    """Targets of the savings ledger (see spendwatch.savings for the formulas)."""

    cache_hit_target: Decimal = Decimal("0.5")
    target_mix: Mapping[str, Decimal] = field(default_factory=lambda: {
        "haiku": Decimal("0.70"), "sonnet": Decimal("0.20"), "opus": Decimal("0.10")})
    line_models: Mapping[str, str] = field(default_factory=lambda: {
        "haiku": "claude-haiku-5-5", "sonnet": "claude-sonnet-5-5", "opus": "claude-opus-5-5"})


@dataclass(frozen=True)
class ModelsConfig:
    """The Models API (model lines for routing); it needs a normal API key, not an admin key."""

    api_key_env: str | None = None
    base_url: str = "https://api.anthropic.com"


@dataclass(frozen=True)
class ChannelConfig:
    """A notifier: ``kind`` slack or email; its secret is read from ``secret_env`` or
    ``secret_file`` (the webhook URL, the SMTP password), never from this file. Which settings
    name the secret depends on the kind: ``alerts.settings.validate`` takes them out of
    ``settings`` into ``secret_env`` and ``secret_file``."""

    name: str
    kind: str
    settings: Mapping[str, Any]
    secret_env: str | None = None
    secret_file: str | None = None


@dataclass(frozen=True)
class RuleConfig:
    """An alert rule: a kind with its parameters, a scope, channels and timing."""

    name: str
    kind: str
    channels: tuple[str, ...]
    scope: Mapping[str, str]
    params: Mapping[str, Any]
    repeat_interval: timedelta
    pending_for: timedelta


@dataclass(frozen=True)
class AlertsConfig:
    """``[alerts]`` in its generic shape. Channel settings and rule params are as written
    until ``alerts.settings.validate`` has checked them for their kind (``checked``) and
    turned them into values (dollars as Decimal, durations, ...)."""

    dashboard_url: str | None = None
    channels: tuple[ChannelConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    checked: bool = False

    def channel(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.name == name), None)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class ReportsConfig:
    """The weekly report the worker writes (one CSV per organization and week) and sends.

    ``weekday`` and ``time`` (local, in the configured time zone) say when last week's report
    is due; the worker writes it at its first collection from then on. ``daily`` adds the daily
digest of yesterday (:mod:`reports.daily`), due each day at ``time``. ``folder`` is relative
    to the config file. ``channels`` name ``[[alerts.channels]]``: email gets the CSV attached,
    Slack a summary.
    """

    enabled: bool = True
    weekday: str = "monday"
    time: dt_time = dt_time(7, 0)
    daily: bool = False          # the daily digest (reports.daily), each day at ``time``
    folder: str = "reports"
    channels: tuple[str, ...] = ()
    configured: bool = False     # the file has a [reports] table (else these are defaults)


@dataclass(frozen=True)
class DashboardConfig:
    """Where ``spendwatch dashboard`` listens (only on this machine unless told otherwise), and
    who may log in (docs/dashboard-login.md).

    ``auth_secrets_file`` (absolute once loaded; relative paths are relative to the config
    file's folder) is a Streamlit secrets file holding ``[auth]`` for ``st.login``; with it, a
    visitor must log in with an address in ``allowed_emails`` or a domain in
    ``allowed_domains`` (both lower-cased), and ``email_verified`` must be true unless
    ``require_verified_email = false``.
    """

    host: str = "127.0.0.1"
    port: int = 8501
    auth_secrets_file: str | None = None
    allowed_emails: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    require_verified_email: bool = True

    @property
    def login_required(self) -> bool:
        """Whether visitors must log in (``auth_secrets_file`` is set)."""
        return self.auth_secrets_file is not None

    @property
    def on_loopback(self) -> bool:
        """Whether it listens on this machine only (localhost, 127.0.0.0/8, ::1)."""
        return is_loopback(self.host)

    def admits(self, email: str | None, email_verified: object = None) -> bool:
        """Whether a logged-in user with ``email`` (and the ID token's ``email_verified``)
        may see the dashboard: the address or its domain is on the allow-list."""
        if not email or (self.require_verified_email and email_verified is not True):
            return False
        address = email.strip().lower()
        if not _EMAIL.match(address):  # one "@", no spaces: "a@b@corp.example" is no address
            return False
        return address in self.allowed_emails or address.split("@")[1] in self.allowed_domains


#: How ``[storage] database`` names a DuckLake rather than a DuckDB file.
LAKE_PREFIX = "ducklake:"


@dataclass(frozen=True)
class StorageConfig:
    database: str = "data/spendwatch.duckdb"
    lock_timeout_seconds: float = 10.0
    #: What one reader (a dashboard page's batch, a command) may use: DuckDB's memory limit
    #: (it spills to a temporary folder beside the database past it) and its threads, so a
    #: dashboard serving a year of a large organization stays in flat memory.
    reader_memory_mb: int = 1024
    reader_threads: int = 2
    #: A DuckLake warehouse (``database = "ducklake:postgres:dbname=... host=... user=..."``):
    #: where its Parquet data lives (``s3://bucket/prefix/`` or a shared folder), the
    #: catalog's schema in PostgreSQL ("" = DuckLake's default), and where the catalog's
    #: password and the object store's keys are (a file, else the environment; never here).
    data_path: str = ""
    metadata_schema: str = ""
    password_env: str = "SPENDWATCH_DATABASE_PASSWORD"
    password_file: str = ""
    s3_endpoint: str = ""               # e.g. "http://minio.internal:9000"; "" = AWS
    s3_region: str = "us-east-1"
    s3_key_id_env: str = "AWS_ACCESS_KEY_ID"
    s3_key_id_file: str = ""
    s3_secret_env: str = "AWS_SECRET_ACCESS_KEY"
    s3_secret_file: str = ""

    @property
    def is_lake(self) -> bool:
        """Whether the warehouse is a DuckLake (a catalog and data files), not a DuckDB file."""
        return self.database.strip().startswith(LAKE_PREFIX)


@dataclass(frozen=True)
class PrivacyConfig:
    """How people are shown: by e-mail and name, or as stable pseudonyms ("person-3f9a2c")
    on every surface (CLI, dashboard, alerts, CSV, Slack) for organizations that may not show
    who spent what."""

    pseudonymize_people: bool = False


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. ``path`` is the file it came from."""

    path: Path
    timezone: str
    storage: StorageConfig
    collection: CollectionConfig
    organizations: tuple[OrganizationConfig, ...]
    features: tuple[FeatureRule, ...] = field(default=())
    prices: tuple[PriceRow, ...] = field(default=())
    savings: SavingsConfig = field(default_factory=SavingsConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def database_path(self) -> Path:
        """The DuckDB file; a relative path is relative to the config file's folder. (A
        DuckLake has no file: see :attr:`database_label`.)"""
        if self.storage.is_lake:
            raise ConfigError(f"{self.path}: storage.database is a DuckLake, not a file")
        db = Path(self.storage.database).expanduser()
        return db if db.is_absolute() else (self.path.parent / db)

    @property
    def database_label(self) -> str:
        """The warehouse as the user named it, for messages: the file's path, or the
        DuckLake's catalog and data path (no password is ever in either)."""
        if self.storage.is_lake:
            return f"{self.storage.database.strip()} (data in {self.storage.data_path})"
        return str(self.database_path)

    @property
    def reports_folder(self) -> Path:
        """Where the worker writes weekly reports; relative to the config file's folder."""
        folder = Path(self.reports.folder).expanduser()
        return folder if folder.is_absolute() else (self.path.parent / folder)

    def organization(self, name: str) -> OrganizationConfig:
        for org in self.organizations:
            if org.name == name:
                return org
        raise ConfigError(f"{self.path}: no organization named {name!r}; names in the file: "
                          + ", ".join(o.name for o in self.organizations))


# --- validation -----------------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list of strings"}


def _check_type(path: Path, key: str, value: Any, kind: type) -> Any:
    if kind is object:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{path}: {key} must be {_TYPE_NAMES[kind]}, not {type(value).__name__} "
                      f"{preview(value)}; fix the value (see config.example.toml)")


def preview(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_table(path: Path, raw: Any, where: str, schema: Mapping[str, type],
                required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The table ``raw`` (at ``where``) checked against ``schema`` (key -> type; ``object``:
    any), its values typed, ``required`` keys present. Raises ConfigError (one line)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where} must be a table ([{where}]); see config.example.toml")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{where}.{key}" if where else key
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{path}: unknown key {full!r}; remove it or use one of: {known}")
        out[key] = _check_type(path, full, value, schema[key])
    for key in required:
        if key not in out:
            raise ConfigError(f"{path}: {where + '.' if where else ''}{key} is missing; add it "
                              "(see config.example.toml)")
    return out


def _positive(path: Path, where: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: {where}.{key} must be a finite number, not {value}; "
                              "fix the value (see config.example.toml)")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{path}: {where}.{key} must be greater than 0, not {value}")


#: The most each number of [collection] and [storage] may be, and why: beyond it the code
#: cannot use it (a date before year 1, an hours-long stall) or it silently stops collecting.
LIMITS: dict[str, tuple[float, str]] = {
    "collection.interval_minutes": (7 * 24 * 60, "a week"),
    "collection.initial_backfill_days": (3650, "ten years"),
    "collection.usage_lookback_hours": (90 * 24, "90 days"),
    "collection.cost_lookback_hours": (90 * 24, "90 days"),
    "collection.timeout_seconds": (3600, "an hour"),
    "collection.max_attempts": (100, "attempts per request"),
    "collection.max_retry_after_seconds": (3600, "an hour"),
    "collection.job_deadline_seconds": (7 * 24 * 3600, "a week"),
    "storage.lock_timeout_seconds": (3600, "an hour"),
    "storage.reader_memory_mb": (1024 * 1024, "a terabyte"),
    "storage.reader_threads": (256, "threads"),
}


def _at_most(path: Path, where: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        limit = LIMITS.get(f"{where}.{key}")
        if limit is not None and value > limit[0]:
            raise ConfigError(f"{path}: {where}.{key} must be at most {limit[0]:g} "
                              f"({limit[1]}), not {value}")


def _collection(path: Path, values: dict[str, Any]) -> CollectionConfig:
    """``[collection]`` with its ranges checked; a run's deadline stays below the interval
    (the next run would otherwise find this one still going and be skipped), and when it is
    not set it defaults to the smaller of its default and 80% of the interval."""
    _positive(path, "collection", values)
    _at_most(path, "collection", values)
    if not 1 <= values.get("page_limit", 1000) <= 1000:
        raise ConfigError(f"{path}: collection.page_limit must be between 1 and 1000")
    interval = values.get("interval_minutes", CollectionConfig.interval_minutes) * 60
    if "job_deadline_seconds" not in values:
        values["job_deadline_seconds"] = min(CollectionConfig.job_deadline_seconds,
                                             0.8 * interval)
    elif values["job_deadline_seconds"] >= interval:
        raise ConfigError(f"{path}: collection.job_deadline_seconds must be below "
                          f"collection.interval_minutes x 60 ({interval} s), not "
                          f"{values['job_deadline_seconds']:g}; lower it or raise the interval")
    return CollectionConfig(**values)


def _storage(path: Path, values: dict[str, Any]) -> StorageConfig:
    _positive(path, "storage", values)
    _at_most(path, "storage", values)
    if values.get("reader_memory_mb", 64) < 64:
        raise ConfigError(f"{path}: storage.reader_memory_mb must be at least 64 (DuckDB "
                          f"needs room for a query), not {values['reader_memory_mb']}")
    if "database" in values and not values["database"].strip():
        raise ConfigError(f"{path}: storage.database is empty; name a DuckDB file such as "
                          "\"data/spendwatch.duckdb\"")
    storage = StorageConfig(**values)
    lake_keys = sorted(set(values) & _LAKE_KEYS)
    if not storage.is_lake:
        if lake_keys:
            raise ConfigError(f"{path}: storage.{lake_keys[0]} is for a DuckLake warehouse, "
                              "but storage.database is a DuckDB file; remove it, or name a "
                              "DuckLake (\"ducklake:postgres:dbname=... host=...\")")
        return storage
    target = storage.database.strip()[len(LAKE_PREFIX):]
    if not target:
        raise ConfigError(f"{path}: storage.database names no DuckLake catalog; write "
                          "\"ducklake:postgres:dbname=spendwatch host=... user=...\"")
    if re.search(r"(^|\s)password\s*=|://[^/@]*:[^/@]*@", target, re.IGNORECASE):
        raise ConfigError(f"{path}: storage.database holds a password; take it out and put "
                          "it in the file named by storage.password_file (or the variable "
                          "named by storage.password_env)")
    if not storage.data_path.strip():
        raise ConfigError(f"{path}: storage.data_path is missing; a DuckLake needs a folder "
                          "or bucket for its data, such as \"s3://bucket/spendwatch/\" or "
                          "\"/mnt/lake/spendwatch/\"")
    if storage.metadata_schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}",
                                                    storage.metadata_schema):
        raise ConfigError(f"{path}: storage.metadata_schema {storage.metadata_schema!r} is not "
                          "a plain schema name; use lower-case letters, digits and _")
    return storage


_LAKE_KEYS = {"data_path", "metadata_schema", "password_env", "password_file", "s3_endpoint",
              "s3_region", "s3_key_id_env", "s3_key_id_file", "s3_secret_env",
              "s3_secret_file"}


#: Folders of the kernel and devices: never a place for the database.
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_database_path(config: Config) -> None:
    """The database path is a file that can be (or is) a database: not under /proc, /sys or
    /dev, not a folder, not in a folder that is a file. Raises ConfigError. (An existing file
    that is not DuckDB is found when it is opened: :mod:`spendwatch.storage`.)"""
    if config.storage.is_lake:
        return
    db = config.database_path
    where = f"{config.path}: storage.database {db}"
    resolved = db.resolve()
    for system in SYSTEM_FOLDERS:
        if resolved == system or system in resolved.parents:
            raise ConfigError(f"{where} is under {system}, a system folder; point "
                              "storage.database at a file in a folder of yours")
    if db.is_dir():
        raise ConfigError(f"{where} is a folder; name a file in it, such as "
                          f"{db / 'spendwatch.duckdb'}")
    for parent in db.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{where}: {parent} is a file, not a folder; point "
                                  "storage.database at a file in a folder")
            break


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine only: ``localhost``, 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(path: Path, key: str, url: str) -> str:
    """``url`` without a trailing slash: http(s) with a host, and https unless the host is
    loopback (plain http would send the key in clear text). Raises ConfigError."""
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:  # "http://[::1", "https://host:99999"
        scheme, host = "", None
    if scheme not in ("http", "https") or not host:
        raise ConfigError(f"{path}: {key} must be a URL such as https://api.anthropic.com, "
                          f"not {preview(url)}")
    if scheme == "http" and not is_loopback(host):
        raise ConfigError(f"{path}: {key} must use https:// ({host} is not this machine, and "
                          "http:// would send the key in clear text); plain http is for "
                          "127.0.0.1, localhost or ::1 only")
    return url


_ORG_SCHEMA = {"name": str, "source": str, "base_url": str, "admin_key_env": str,
               "admin_key_file": str, "cuts": list, "claude_code": bool}
_FEATURE_SCHEMA = {"name": str, "api_key_ids": list, "api_key_names": list,
                   "workspace_ids": list, "workspace_names": list, "products": list,
                   "people": list, "rbac_groups": list, "organizations": list,
                   "batch_eligible": bool}
_FEATURE_LISTS = ("api_key_ids", "api_key_names", "workspace_ids", "workspace_names",
                  "products", "people", "rbac_groups", "organizations")
_PRICE_SCHEMA: dict[str, type] = {"model": str, "component": str, "price_usd": object,
                                  "unit": str, "effective_from": object}
_SAVINGS_SCHEMA: dict[str, type] = {"cache_hit_target": object, "target_mix": object,
                                    "line_models": object}
_MODELS_SCHEMA: dict[str, type] = {"api_key_env": str, "base_url": str}
_COLLECTION_SCHEMA: dict[str, type] = {"interval_minutes": int, "initial_backfill_days": int,
                                       "usage_lookback_hours": int, "cost_lookback_hours": int,
                                       "page_limit": int, "timeout_seconds": float,
                                       "max_attempts": int, "max_retry_after_seconds": float,
                                       "job_deadline_seconds": float}
_STORAGE_SCHEMA: dict[str, type] = {"database": str, "lock_timeout_seconds": float,
                                    "reader_memory_mb": int, "reader_threads": int,
                                    "data_path": str, "metadata_schema": str,
                                    "password_env": str, "password_file": str,
                                    "s3_endpoint": str, "s3_region": str,
                                    "s3_key_id_env": str, "s3_key_id_file": str,
                                    "s3_secret_env": str, "s3_secret_file": str}
# Sections (object) are checked by their own parsers.
_TOP_SCHEMA: dict[str, type] = {"timezone": str, "storage": object, "collection": object,
                                "organizations": object, "features": object,
                                "pricing": object, "savings": object, "models": object,
                                "alerts": object, "dashboard": object, "reports": object,
                                "privacy": object}
_PRIVACY_SCHEMA: dict[str, type] = {"pseudonymize_people": bool}
_REPORTS_SCHEMA: dict[str, type] = {"enabled": bool, "weekday": str, "time": str,
                                    "folder": str, "channels": list, "daily": bool}
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _organizations(path: Path, raw: Any) -> tuple[OrganizationConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: no [[organizations]] configured; add at least one "
                          "(see config.example.toml)")
    orgs: list[OrganizationConfig] = []
    for index, item in enumerate(raw):
        where = f"organizations[{index}]"
        values = check_table(path, item, where, _ORG_SCHEMA, required=("name",))
        if not values["name"].strip():
            raise ConfigError(f"{path}: {where}.name is empty; give the organization a name "
                              "such as \"acme\"")
        if values.get("source", "analytics") not in SOURCES:
            raise ConfigError(f"{path}: {where}.source must be \"analytics\" or \"legacy\", "
                              f"not {values['source']!r}")
        if "admin_key_env" in values and "admin_key_file" in values:
            raise ConfigError(f"{path}: {where} sets both admin_key_env and admin_key_file; "
                              "keep one")
        values["base_url"] = check_base_url(path, f"{where}.base_url",
                                            values.get("base_url", OrganizationConfig.base_url))
        if "cuts" in values:
            unknown = [c for c in values["cuts"] if c not in CUT_BY_NAME]
            if unknown:
                raise ConfigError(f"{path}: {where}.cuts has {preview(str(unknown[0]))}; use "
                                  f"any of {', '.join(CUT_BY_NAME)} (or [] for none)")
            values["cuts"] = tuple(values["cuts"])
        if any(o.name == values["name"] for o in orgs):
            raise ConfigError(f"{path}: two organizations are named {values['name']!r}; "
                              "names must be unique")
        orgs.append(OrganizationConfig(**values))
    return tuple(orgs)


def _features(path: Path, raw: Any) -> tuple[FeatureRule, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: features must be an array of tables ([[features]])")
    rules = []
    for index, item in enumerate(raw):
        where = f"features[{index}]"
        values = check_table(path, item, where, _FEATURE_SCHEMA, required=("name",))
        for key in _FEATURE_LISTS:
            if key in values:
                if not all(isinstance(v, str) and v for v in values[key]):
                    raise ConfigError(f"{path}: {where}.{key} must be a list of non-empty "
                                      "strings")
                values[key] = tuple(values[key])
        rules.append(FeatureRule(**values))
    people = next((r for r in rules if r.by_person), None)
    workspaces = next((r for r in rules if r.by_workspace), None)
    if people is not None and workspaces is not None:
        # The people cut (where a person is known) has no workspace: the API groups by at
        # most five dimensions, and no cut has both (spendwatch.cuts).
        raise ConfigError(
            f"{path}: feature {workspaces.name!r} names workspaces and feature {people.name!r} "
            "names people or RBAC groups; the API has no cut with both, so features are "
            "judged on the people cut and cannot name workspaces: name the workspace's API "
            "keys (api_key_ids or api_key_names) instead")
    return tuple(rules)


def _prices(path: Path, raw: Any) -> tuple[PriceRow, ...]:
    section = check_table(path, raw, "pricing", {"prices": object})
    items = section.get("prices", [])
    if not isinstance(items, list):
        raise ConfigError(f"{path}: pricing.prices must be an array of tables ([[pricing.prices]])")
    rows = []
    for index, item in enumerate(items):
        where = f"pricing.prices[{index}]"
        values = check_table(path, item, where, _PRICE_SCHEMA,
                             required=("model", "component", "price_usd", "unit", "effective_from"))
        try:
            rows.append(parse_price_row(values, f"{path}: {where}"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return tuple(rows)


def parse_ratio(path: Path, key: str, value: Any) -> Decimal:
    """A number between 0 and 1. Raises ConfigError."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise ValueError
        ratio = Decimal(str(value))
    except (ValueError, ArithmeticError):
        raise ConfigError(f"{path}: {key} must be a number between 0 and 1, not "
                          f"{preview(value)}") from None
    if not ratio.is_finite() or not Decimal(0) <= ratio <= Decimal(1):
        raise ConfigError(f"{path}: {key} must be between 0 and 1, not {value}")
    return ratio


def _savings(path: Path, raw: Any) -> SavingsConfig:
    values = check_table(path, raw, "savings", _SAVINGS_SCHEMA)
    defaults = SavingsConfig()
    target = parse_ratio(path, "savings.cache_hit_target",
                    values.get("cache_hit_target", defaults.cache_hit_target))
    mix_raw = values.get("target_mix", defaults.target_mix)
    mix = {k: parse_ratio(path, f"savings.target_mix.{k}", v)
           for k, v in check_table(path, mix_raw, "savings.target_mix",
                                   {line: object for line in LINES}).items()}
    if set(mix) != set(LINES) or sum(mix.values()) != 1:
        raise ConfigError(f"{path}: savings.target_mix needs haiku, sonnet and opus shares that "
                          f"add up to 1 (for example 0.70, 0.20, 0.10)")
    line_models = dict(defaults.line_models)
    line_models.update(check_table(path, values.get("line_models", {}), "savings.line_models",
                                   {line: str for line in LINES}))
    return SavingsConfig(cache_hit_target=target, target_mix=mix, line_models=line_models)


# --- alerts ----------------------------------------------------------------------------------

DURATION = re.compile(r"^(\d+)([smhd])$")  # "90s", "30m", "4h", "2d"
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


#: The longest duration a setting may name: past it a moment overflows the calendar.
MAX_DURATION = timedelta(days=3650)


def parse_duration(path: Path, key: str, value: Any,
                   longest: timedelta = MAX_DURATION) -> timedelta:
    """``"90s"``, ``"30m"``, ``"4h"``, ``"2d"`` -> timedelta, at most ``longest``. Raises
    ConfigError."""
    match = DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{path}: {key} must be a duration such as \"30m\", \"4h\" or "
                          f"\"2d\", not {preview(value)}")
    number = int(match[1])
    if number > longest.total_seconds():  # cannot be in range in any unit; keeps timedelta sane
        number = int(longest.total_seconds()) + 1
    length = timedelta(**{_DURATION_UNITS[match[2]]: number})
    if length > longest:
        raise ConfigError(f"{path}: {key} must be at most {longest.days} days, not "
                          f"{preview(value)}")
    return length


def parse_money(path: Path, key: str, value: Any) -> Decimal:
    """Dollars more than 0, from a string or an integer (never a TOML float). Raises
    ConfigError."""
    try:
        if isinstance(value, (bool, float)) or not isinstance(value, (int, str)):
            raise ValueError
        amount = Decimal(str(value))
    except (ValueError, InvalidOperation):
        raise ConfigError(f"{path}: {key} must be dollars as a string or an integer, such as "
                          f"\"250.00\" (a TOML float is not exact), not {preview(value)}"
                          ) from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"{path}: {key} must be more than 0")
    return amount


# The generic shape of [alerts] only: which settings a channel kind takes, which params a rule
# kind takes, and what they mean, is alerts/'s to check (alerts.settings.validate).
_RULE_COMMON: dict[str, type] = {"name": str, "kind": str, "channels": list, "scope": object,
                                 "repeat_interval": str, "for": str}
RULE_COMMON_KEYS = tuple(_RULE_COMMON)


def _channel(path: Path, raw: Any, where: str, names: set[str]) -> ChannelConfig:
    """A channel's name and kind; every other key is a setting of its kind, as written."""
    if not isinstance(raw, dict):
        check_table(path, raw, where, {})  # raises: it must be a table
    values = check_table(path, {k: v for k, v in raw.items() if k in ("name", "kind")}, where,
                         {"name": str, "kind": str}, required=("name",))
    if values["name"] in names:
        raise ConfigError(f"{path}: two channels are named {values['name']!r}")
    settings = {k: v for k, v in raw.items() if k not in ("name", "kind")}
    return ChannelConfig(values["name"], values.get("kind", ""), settings)


def _rule(path: Path, raw: Any, where: str, channels: set[str], names: set[str]) -> RuleConfig:
    """A rule's name, kind, channels, scope and timing; every other key is a param of its
    kind, as written."""
    if not isinstance(raw, dict):
        check_table(path, raw, where, {})  # raises: it must be a table
    values = check_table(path, {k: v for k, v in raw.items() if k in _RULE_COMMON}, where,
                         _RULE_COMMON, required=("name", "channels"))
    if values["name"] in names:
        raise ConfigError(f"{path}: two rules are named {values['name']!r}")
    unknown = [c for c in values["channels"] if c not in channels]
    if unknown:
        raise ConfigError(f"{path}: {where}.channels names {unknown[0]!r}, which no "
                          "[[alerts.channels]] defines")
    repeat_interval = parse_duration(path, f"{where}.repeat_interval",
                                     values.get("repeat_interval", "4h"))
    if not repeat_interval:
        raise ConfigError(f"{path}: {where}.repeat_interval must be more than 0, such as \"4h\"")
    scope_raw = values.get("scope", {})
    scope = check_table(path, scope_raw, f"{where}.scope",
                        {k: str for k in scope_raw} if isinstance(scope_raw, dict) else {})
    return RuleConfig(
        name=values["name"], kind=values.get("kind", ""), channels=tuple(values["channels"]),
        scope=scope, params={k: v for k, v in raw.items() if k not in _RULE_COMMON},
        repeat_interval=repeat_interval,
        pending_for=parse_duration(path, f"{where}.for", values.get("for", "0s")))


def _alerts(path: Path, raw: Any) -> AlertsConfig:
    values = check_table(path, raw, "alerts", {"dashboard_url": str, "channels": object,
                                               "rules": object})
    channels: list[ChannelConfig] = []
    for index, item in enumerate(values.get("channels", [])):
        channels.append(_channel(path, item, f"alerts.channels[{index}]",
                                 {c.name for c in channels}))
    rules: list[RuleConfig] = []
    for index, item in enumerate(values.get("rules", [])):
        rules.append(_rule(path, item, f"alerts.rules[{index}]", {c.name for c in channels},
                           {r.name for r in rules}))
    return AlertsConfig(values.get("dashboard_url"), tuple(channels), tuple(rules))


def _reports(path: Path, raw: Any, alerts: AlertsConfig, present: bool) -> ReportsConfig:
    values = check_table(path, raw, "reports", _REPORTS_SCHEMA)
    weekday = values.get("weekday", "monday").strip().lower()
    if weekday not in WEEKDAYS:
        raise ConfigError(f"{path}: reports.weekday must be a day such as \"monday\", not "
                          f"{preview(values['weekday'])}")
    match = _TIME.match(values.get("time", "07:00"))
    if not match:
        raise ConfigError(f"{path}: reports.time must be a local time such as \"07:00\" "
                          f"(24-hour HH:MM), not {preview(values['time'])}")
    channels = values.get("channels", ())
    for name in channels:
        if alerts.channel(name) is None:
            raise ConfigError(f"{path}: reports.channels names {name!r}, which no "
                              "[[alerts.channels]] defines")
    if len(set(channels)) != len(channels):
        raise ConfigError(f"{path}: reports.channels names a channel twice")
    if not values.get("folder", "reports").strip():
        raise ConfigError(f"{path}: reports.folder is empty; name a folder such as \"reports\"")
    return ReportsConfig(enabled=values.get("enabled", True), weekday=weekday,
                         time=dt_time(int(match[1]), int(match[2])),
                         daily=values.get("daily", False),
                         folder=values.get("folder", "reports"), channels=tuple(channels),
                         configured=present)


#: This machine's names, for the dashboard's Host allow-list (spendwatch.cli.dashboard).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_DASHBOARD_SCHEMA: dict[str, type] = {"host": str, "port": int, "auth_secrets_file": str,
                                      "allowed_emails": list, "allowed_domains": list,
                                      "require_verified_email": bool}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](-*[a-z0-9])*)(\.[a-z0-9](-*[a-z0-9])*)+$")


def _dashboard(path: Path, raw: Any) -> DashboardConfig:
    """``[dashboard]``: where it listens and who may log in. Raises ConfigError (one line)."""
    values = check_table(path, raw, "dashboard", _DASHBOARD_SCHEMA)
    if not values.get("host", "127.0.0.1").strip():
        raise ConfigError(f"{path}: dashboard.host is empty; use \"127.0.0.1\" (this machine)")
    if not 1 <= values.get("port", 8501) <= 65535:
        raise ConfigError(f"{path}: dashboard.port must be between 1 and 65535, not "
                          f"{values['port']}")
    emails = tuple(e.strip().lower() for e in values.get("allowed_emails", ()))
    domains = tuple(d.strip().lower().removeprefix("@") for d in values.get("allowed_domains", ()))
    for email in emails:
        if not _EMAIL.match(email):
            raise ConfigError(f"{path}: dashboard.allowed_emails holds {preview(email)}, which is "
                              "not an e-mail address such as \"ana@example.com\"")
    for domain in domains:
        if not _DOMAIN.match(domain):
            raise ConfigError(f"{path}: dashboard.allowed_domains holds {preview(domain)}, which "
                              "is not a domain such as \"example.com\"")
    secrets = values.get("auth_secrets_file")
    if secrets is not None:
        if not secrets.strip():
            raise ConfigError(f"{path}: dashboard.auth_secrets_file is empty; name the Streamlit "
                              "secrets file holding [auth] (docs/dashboard-login.md) or remove it")
        secrets = str((path.parent / Path(secrets).expanduser()).absolute())
        if not emails and not domains:
            raise ConfigError(f"{path}: dashboard.auth_secrets_file is set but nobody may log in; "
                              "add allowed_emails = [...] or allowed_domains = [...] to [dashboard]")
    elif emails or domains:
        raise ConfigError(f"{path}: dashboard.allowed_emails/allowed_domains need a login; set "
                          "dashboard.auth_secrets_file (docs/dashboard-login.md)")
    return DashboardConfig(host=values.get("host", "127.0.0.1").strip(),
                           port=values.get("port", 8501), auth_secrets_file=secrets,
                           allowed_emails=emails, allowed_domains=domains,
                           require_verified_email=values.get("require_verified_email", True))


def resolve_channel_secret(config: Config, channel: ChannelConfig,
                           environ: Callable[[str], str | None] = os.environ.get) -> str | None:
    """The channel's secret (webhook URL, SMTP password), or None when it names none.

    Raises ConfigError naming where it was looked for, never the secret
    (:func:`spendwatch.secrets.resolve_secret`).
    """
    if not (channel.secret_file or channel.secret_env):
        return None
    noun = {"slack": "webhook URL", "email": "SMTP password"}.get(channel.kind, "secret")
    return resolve_secret(f"{config.path}: channel {channel.name!r}", noun,
                          f"the channel's {noun}", file=channel.secret_file,
                          env=channel.secret_env, environ=environ).reveal()


def parse_config(path: Path, data: dict[str, Any]) -> Config:
    """Validate parsed TOML into a :class:`Config`. Raises ConfigError."""
    top = check_table(path, data, "", _TOP_SCHEMA)
    tz_name = top.get("timezone", "UTC")
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}: timezone {tz_name!r} is not a known IANA time zone; use a "
                          "name such as \"America/Chicago\" or \"UTC\"") from None
    storage = check_table(path, top.get("storage", {}), "storage", _STORAGE_SCHEMA)
    collection = check_table(path, top.get("collection", {}), "collection", _COLLECTION_SCHEMA)
    alerts = _alerts(path, top.get("alerts", {}))
    features = _features(path, top.get("features", []))
    config = Config(
        path=path,
        timezone=tz_name,
        storage=_storage(path, storage),
        collection=_collection(path, collection),
        organizations=_feature_cuts(path, _organizations(path, top.get("organizations")),
                                    features),
        features=features,
        prices=_prices(path, top.get("pricing", {})),
        savings=_savings(path, top.get("savings", {})),
        models=_models(path, top.get("models", {})),
        alerts=alerts,
        dashboard=_dashboard(path, top.get("dashboard", {})),
        reports=_reports(path, top.get("reports", {}), alerts, "reports" in top),
        privacy=PrivacyConfig(**check_table(path, top.get("privacy", {}), "privacy",
                                            _PRIVACY_SCHEMA)),
    )
    check_database_path(config)
    return config


_NAMING = {"people": "people or RBAC groups", "products": "products", "members": "RBAC groups"}


def _feature_cuts(path: Path, orgs: tuple[OrganizationConfig, ...],
                  rules: tuple[FeatureRule, ...]) -> tuple[OrganizationConfig, ...]:
    """Organizations with the cuts their features are judged on: the basis cut (and, for RBAC
    groups, ``members``: who is in which group) must be collected. Default cuts gain
    ``members`` when a rule names RBAC groups; named cuts that lack one are an error."""
    basis = feature_basis(rules)
    needed = ([basis] if basis else []) + (["members"] if any(r.rbac_groups for r in rules)
                                           else [])
    out = []
    for index, org in enumerate(orgs):
        if org.source != "analytics" or not needed:
            out.append(org)
            continue
        if basis == "people":
            org = replace(org, people_cost_by_token_type=True)
        if org.cuts is None:
            if "members" in needed:
                org = replace(org, cuts=(*org.cut_names(), "members"))
        else:
            missing = [c for c in needed if c not in org.cuts]
            if missing:
                raise ConfigError(
                    f"{path}: organizations[{index}].cuts lacks {missing[0]!r}, which the "
                    f"[[features]] rules need (features naming {_NAMING[missing[0]]} are "
                    f"judged on it); add {missing[0]!r} to cuts")
        out.append(org)
    return tuple(out)


def _models(path: Path, raw: Any) -> ModelsConfig:
    values = check_table(path, raw, "models", _MODELS_SCHEMA)
    if "base_url" in values:
        values["base_url"] = check_base_url(path, "models.base_url", values["base_url"])
    return ModelsConfig(**values)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$SPENDWATCH_CONFIG``, else ``./config.toml``."""
    return Path(explicit or os.environ.get("SPENDWATCH_CONFIG") or DEFAULT_CONFIG)


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file. Raises ConfigError with a one-line message, also
    when the file is open to group or others (it says where every secret is: ``chmod 600``)."""
    path = config_path(explicit)
    check_private(path, "the config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; copy config.example.toml to {path} "
                          "or pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    return parse_config(path.resolve(), data)


def resolve_admin_key(config: Config, org: OrganizationConfig,
                      environ: Callable[[str], str | None] = os.environ.get) -> Secret:
    """The admin key of ``org``: from its ``admin_key_file`` if set, else its environment
    variable ``admin_key_env``. Raises ConfigError naming where the key was looked for (never
    the key itself)."""
    return resolve_secret(f"{config.path}: organization {org.name!r}", "admin key",
                          "the organization's Admin API key (sk-ant-admin01-...)",
                          file=org.admin_key_file, env=org.admin_key_env, environ=environ)
