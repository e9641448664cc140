"""Configuration: one TOML file, validated strictly, with secrets kept out of it.

Where the file comes from: ``--config PATH``, else ``$SPENDWATCH_CONFIG``, else
``./config.toml``. Every problem (a missing file, bad TOML, an unknown key, a wrong type, a
secret that cannot be found) raises :class:`ConfigError` with one line naming the file, the key
and the fix. ``config.example.toml`` documents every option.

Secrets (the admin key) never live in the file: an organization names the environment
variable (``admin_key_env``, default ``ANTHROPIC_ADMIN_KEY``) or a file (``admin_key_file``)
that holds it, and :func:`resolve_admin_key` reads it when a collector needs it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time as dt_time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spendwatch.errors import ConfigError
from spendwatch.pricing import PriceRow, parse_price_row

DEFAULT_CONFIG = "config.toml"
SOURCES = ("analytics", "legacy")


class Secret:
    """A secret string whose repr and str never show it (safe in logs and tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it only to the client that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class FeatureRule:
    """A feature: a name for a group of API keys and/or workspaces (IDs or name globs)."""

    name: str
    api_key_ids: tuple[str, ...] = ()
    api_key_names: tuple[str, ...] = ()
    workspace_ids: tuple[str, ...] = ()
    workspace_names: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    batch_eligible: bool = False


@dataclass(frozen=True)
class OrganizationConfig:
    """One organization to collect."""

    name: str
    source: str = "analytics"
    base_url: str = "https://api.anthropic.com"
    admin_key_env: str = "ANTHROPIC_ADMIN_KEY"
    admin_key_file: str | None = None


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
    job_deadline_seconds: float = 1800.0


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
    ``secret_file`` (the webhook URL, the SMTP password), never from this file."""

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
    dashboard_url: str | None = None
    channels: tuple[ChannelConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()

    def channel(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.name == name), None)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class ReportsConfig:
    """The weekly report the worker writes (one CSV per organization and week) and sends.

    ``weekday`` and ``time`` (local, in the configured time zone) say when last week's report
    is due; the worker writes it at its first collection from then on. ``folder`` is relative
    to the config file. ``channels`` name ``[[alerts.channels]]``: email gets the CSV attached,
    Slack a summary.
    """

    enabled: bool = True
    weekday: str = "monday"
    time: dt_time = dt_time(7, 0)
    folder: str = "reports"
    channels: tuple[str, ...] = ()
    configured: bool = False     # the file has a [reports] table (else these are defaults)


@dataclass(frozen=True)
class DashboardConfig:
    """Where ``spendwatch dashboard`` listens (only on this machine unless told otherwise)."""

    host: str = "127.0.0.1"
    port: int = 8501


@dataclass(frozen=True)
class StorageConfig:
    database: str = "data/spendwatch.duckdb"
    lock_timeout_seconds: float = 10.0


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

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def database_path(self) -> Path:
        """The DuckDB file; a relative path is relative to the config file's folder."""
        db = Path(self.storage.database).expanduser()
        return db if db.is_absolute() else (self.path.parent / db)

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
                      f"{_preview(value)}; fix the value (see config.example.toml)")


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _section(path: Path, raw: Any, where: str, schema: Mapping[str, type],
             required: tuple[str, ...] = ()) -> dict[str, Any]:
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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{path}: {where}.{key} must be greater than 0, not {value}")


_ORG_SCHEMA = {"name": str, "source": str, "base_url": str, "admin_key_env": str,
               "admin_key_file": str}
_FEATURE_SCHEMA = {"name": str, "api_key_ids": list, "api_key_names": list,
                   "workspace_ids": list, "workspace_names": list, "organizations": list,
                   "batch_eligible": bool}
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
_STORAGE_SCHEMA: dict[str, type] = {"database": str, "lock_timeout_seconds": float}
# Sections (object) are checked by their own parsers.
_TOP_SCHEMA: dict[str, type] = {"timezone": str, "storage": object, "collection": object,
                                "organizations": object, "features": object,
                                "pricing": object, "savings": object, "models": object,
                                "alerts": object, "dashboard": object, "reports": object}
_REPORTS_SCHEMA: dict[str, type] = {"enabled": bool, "weekday": str, "time": str,
                                    "folder": str, "channels": list}
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _organizations(path: Path, raw: Any) -> tuple[OrganizationConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: no [[organizations]] configured; add at least one "
                          "(see config.example.toml)")
    orgs: list[OrganizationConfig] = []
    for index, item in enumerate(raw):
        where = f"organizations[{index}]"
        values = _section(path, item, where, _ORG_SCHEMA, required=("name",))
        if values.get("source", "analytics") not in SOURCES:
            raise ConfigError(f"{path}: {where}.source must be \"analytics\" or \"legacy\", "
                              f"not {values['source']!r}")
        if "admin_key_env" in values and "admin_key_file" in values:
            raise ConfigError(f"{path}: {where} sets both admin_key_env and admin_key_file; "
                              "keep one")
        values["base_url"] = values.get("base_url", OrganizationConfig.base_url).rstrip("/")
        if not values["base_url"].startswith(("http://", "https://")):
            raise ConfigError(f"{path}: {where}.base_url must start with http:// or https://")
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
        values = _section(path, item, f"features[{index}]", _FEATURE_SCHEMA, required=("name",))
        rules.append(FeatureRule(**values))
    return tuple(rules)


def _prices(path: Path, raw: Any) -> tuple[PriceRow, ...]:
    section = _section(path, raw, "pricing", {"prices": object})
    items = section.get("prices", [])
    if not isinstance(items, list):
        raise ConfigError(f"{path}: pricing.prices must be an array of tables ([[pricing.prices]])")
    rows = []
    for index, item in enumerate(items):
        where = f"pricing.prices[{index}]"
        values = _section(path, item, where, _PRICE_SCHEMA,
                          required=("model", "component", "price_usd", "unit", "effective_from"))
        try:
            rows.append(parse_price_row(values, f"{path}: {where}"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return tuple(rows)


def _ratio(path: Path, key: str, value: Any) -> Decimal:
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise ValueError
        ratio = Decimal(str(value))
    except (ValueError, ArithmeticError):
        raise ConfigError(f"{path}: {key} must be a number between 0 and 1, not "
                          f"{_preview(value)}") from None
    if not Decimal(0) <= ratio <= Decimal(1):
        raise ConfigError(f"{path}: {key} must be between 0 and 1, not {value}")
    return ratio


def _savings(path: Path, raw: Any) -> SavingsConfig:
    values = _section(path, raw, "savings", _SAVINGS_SCHEMA)
    defaults = SavingsConfig()
    target = _ratio(path, "savings.cache_hit_target",
                    values.get("cache_hit_target", defaults.cache_hit_target))
    mix_raw = values.get("target_mix", defaults.target_mix)
    mix = {k: _ratio(path, f"savings.target_mix.{k}", v)
           for k, v in _section(path, mix_raw, "savings.target_mix",
                                {line: object for line in LINES}).items()}
    if set(mix) != set(LINES) or sum(mix.values()) != 1:
        raise ConfigError(f"{path}: savings.target_mix needs haiku, sonnet and opus shares that "
                          f"add up to 1 (for example 0.70, 0.20, 0.10)")
    line_models = dict(defaults.line_models)
    line_models.update(_section(path, values.get("line_models", {}), "savings.line_models",
                                {line: str for line in LINES}))
    return SavingsConfig(cache_hit_target=target, target_mix=mix, line_models=line_models)


# --- alerts ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)([smhd])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(path: Path, key: str, value: Any) -> timedelta:
    """``"90s"``, ``"30m"``, ``"4h"``, ``"2d"`` -> timedelta. Raises ConfigError."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{path}: {key} must be a duration such as \"30m\", \"4h\" or "
                          f"\"2d\", not {_preview(value)}")
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def _money(path: Path, key: str, value: Any) -> Decimal:
    try:
        if isinstance(value, (bool, float)) or not isinstance(value, (int, str)):
            raise ValueError
        amount = Decimal(str(value))
    except (ValueError, InvalidOperation):
        raise ConfigError(f"{path}: {key} must be dollars as a string or an integer, such as "
                          f"\"250.00\" (a TOML float is not exact), not {_preview(value)}"
                          ) from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"{path}: {key} must be more than 0")
    return amount


_CHANNEL_SCHEMAS: dict[str, dict[str, type]] = {
    "slack": {"name": str, "kind": str, "webhook_url_env": str, "webhook_url_file": str,
              "min_interval_seconds": float, "timeout_seconds": float},
    "email": {"name": str, "kind": str, "host": str, "port": int, "security": str,
              "username": str, "password_env": str, "password_file": str, "from": str,
              "to": list, "ca_file": str, "timeout_seconds": float},
}
_SECRET_KEYS = {"slack": ("webhook_url_env", "webhook_url_file"),
                "email": ("password_env", "password_file")}
RULE_KINDS = ("daily_spend", "monthly_budget", "cache_hit_ratio", "spend_spike", "data_stale",
              "cost_drift")
SCOPE_DIMENSIONS = ("organization", "workspace", "feature", "api_key", "model")
_RULE_COMMON: dict[str, type] = {"name": str, "kind": str, "channels": list, "scope": object,
                                 "repeat_interval": str, "for": str}
_RULE_PARAMS: dict[str, dict[str, type]] = {
    "daily_spend": {"threshold_usd": object, "levels": object},
    "monthly_budget": {"budget_usd": object},
    "cache_hit_ratio": {"floor": object, "window_hours": int, "min_input_tokens": int,
                        "per": str},
    "spend_spike": {"mode": str, "multiplier": object, "min_usd": object, "weeks": int},
    "data_stale": {"max_age": str, "max_failures": int},
    "cost_drift": {"threshold_percent": object, "days": int},
}


def _channel(path: Path, raw: Any, where: str, names: set[str]) -> ChannelConfig:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in _CHANNEL_SCHEMAS:
        raise ConfigError(f"{path}: {where}.kind must be \"slack\" or \"email\", not "
                          f"{_preview(kind)}")
    values = _section(path, raw, where, _CHANNEL_SCHEMAS[kind], required=("name", "kind"))
    if values["name"] in names:
        raise ConfigError(f"{path}: two channels are named {values['name']!r}")
    env_key, file_key = _SECRET_KEYS[kind]
    if env_key in values and file_key in values:
        raise ConfigError(f"{path}: {where} sets both {env_key} and {file_key}; keep one")
    if kind == "slack" and env_key not in values and file_key not in values:
        raise ConfigError(f"{path}: {where} needs webhook_url_env or webhook_url_file (the "
                          "webhook URL is a secret: it never goes in this file)")
    if kind == "email":
        for key in ("host", "from", "to"):
            if key not in values:
                raise ConfigError(f"{path}: {where}.{key} is missing; add it")
        if values.get("security", "starttls") not in ("starttls", "tls", "none"):
            raise ConfigError(f"{path}: {where}.security must be \"starttls\", \"tls\" or "
                              "\"none\" (plain text, only when you mean it)")
    settings = {k: v for k, v in values.items() if k not in ("name", "kind", env_key, file_key)}
    return ChannelConfig(values["name"], kind, settings, values.get(env_key),
                         values.get(file_key))


def _rule(path: Path, raw: Any, where: str, channels: set[str], names: set[str]) -> RuleConfig:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in _RULE_PARAMS:
        raise ConfigError(f"{path}: {where}.kind must be one of {', '.join(RULE_KINDS)}, not "
                          f"{_preview(kind)}")
    values = _section(path, raw, where, {**_RULE_COMMON, **_RULE_PARAMS[kind]},
                      required=("name", "kind", "channels"))
    if values["name"] in names:
        raise ConfigError(f"{path}: two rules are named {values['name']!r}")
    unknown = [c for c in values["channels"] if c not in channels]
    if unknown:
        raise ConfigError(f"{path}: {where}.channels names {unknown[0]!r}, which no "
                          "[[alerts.channels]] defines")
    scope = _section(path, values.get("scope", {}), f"{where}.scope",
                     {d: str for d in SCOPE_DIMENSIONS})
    params: dict[str, Any] = {}
    for key, value in values.items():
        if key in _RULE_COMMON:
            continue
        full = f"{where}.{key}"
        if key in ("threshold_usd", "budget_usd", "min_usd"):
            params[key] = _money(path, full, value)
        elif key in ("floor",):
            params[key] = _ratio(path, full, value)
        elif key in ("multiplier", "threshold_percent"):
            params[key] = _money(path, full, value)
        elif key == "levels":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: {full} must be a list of fractions such as "
                                  "[0.5, 0.8, 1.0]")
            params[key] = tuple(sorted(_money(path, full, str(v)) for v in value))
        elif key == "max_age":
            params[key] = parse_duration(path, full, value)
        else:
            params[key] = value
    for required in {"daily_spend": ("threshold_usd",), "monthly_budget": ("budget_usd",),
                     "cache_hit_ratio": ("floor",)}.get(kind, ()):
        if required not in params:
            raise ConfigError(f"{path}: {where}.{required} is missing; add it")
    if kind == "cache_hit_ratio" and params.get("per", "model") not in ("model", "feature"):
        raise ConfigError(f"{path}: {where}.per must be \"model\" or \"feature\"")
    if kind == "spend_spike" and params.get("mode", "daily") not in ("daily", "hourly"):
        raise ConfigError(f"{path}: {where}.mode must be \"daily\" or \"hourly\"")
    return RuleConfig(
        name=values["name"], kind=kind, channels=tuple(values["channels"]), scope=scope,
        params=params,
        repeat_interval=parse_duration(path, f"{where}.repeat_interval",
                                       values.get("repeat_interval", "4h")),
        pending_for=parse_duration(path, f"{where}.for", values.get("for", "0s")))


def _alerts(path: Path, raw: Any) -> AlertsConfig:
    values = _section(path, raw, "alerts", {"dashboard_url": str, "channels": object,
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
    values = _section(path, raw, "reports", _REPORTS_SCHEMA)
    weekday = values.get("weekday", "monday").strip().lower()
    if weekday not in WEEKDAYS:
        raise ConfigError(f"{path}: reports.weekday must be a day such as \"monday\", not "
                          f"{_preview(values['weekday'])}")
    match = _TIME.match(values.get("time", "07:00"))
    if not match:
        raise ConfigError(f"{path}: reports.time must be a local time such as \"07:00\" "
                          f"(24-hour HH:MM), not {_preview(values['time'])}")
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
                         folder=values.get("folder", "reports"), channels=tuple(channels),
                         configured=present)


def resolve_channel_secret(config: Config, channel: ChannelConfig,
                           environ: Callable[[str], str | None] = os.environ.get) -> str | None:
    """The channel's secret (webhook URL, SMTP password), or None when it has none.

    Raises ConfigError naming where it was looked for, never the secret.
    """
    if channel.secret_file:
        try:
            value = Path(channel.secret_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(f"{config.path}: channel {channel.name!r}: the secret file "
                              f"{channel.secret_file} cannot be read") from None
        where = f"file {channel.secret_file}"
    elif channel.secret_env:
        value = (environ(channel.secret_env) or "").strip()
        where = f"environment variable {channel.secret_env}"
    else:
        return None
    if not value:
        raise ConfigError(f"{config.path}: channel {channel.name!r}: nothing in {where}; set "
                          "it to the channel's secret")
    return value


def parse_config(path: Path, data: dict[str, Any]) -> Config:
    """Validate parsed TOML into a :class:`Config`. Raises ConfigError."""
    top = _section(path, data, "", _TOP_SCHEMA)
    tz_name = top.get("timezone", "UTC")
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}: timezone {tz_name!r} is not a known IANA time zone; use a "
                          "name such as \"America/Chicago\" or \"UTC\"") from None
    storage = _section(path, top.get("storage", {}), "storage", _STORAGE_SCHEMA)
    collection = _section(path, top.get("collection", {}), "collection", _COLLECTION_SCHEMA)
    _positive(path, "storage", storage)
    _positive(path, "collection", collection)
    if not 1 <= collection.get("page_limit", 1000) <= 1000:
        raise ConfigError(f"{path}: collection.page_limit must be between 1 and 1000")
    alerts = _alerts(path, top.get("alerts", {}))
    return Config(
        path=path,
        timezone=tz_name,
        storage=StorageConfig(**storage),
        collection=CollectionConfig(**collection),
        organizations=_organizations(path, top.get("organizations")),
        features=_features(path, top.get("features", [])),
        prices=_prices(path, top.get("pricing", {})),
        savings=_savings(path, top.get("savings", {})),
        models=ModelsConfig(**_section(path, top.get("models", {}), "models", _MODELS_SCHEMA)),
        alerts=alerts,
        dashboard=DashboardConfig(**_section(path, top.get("dashboard", {}), "dashboard",
                                             {"host": str, "port": int})),
        reports=_reports(path, top.get("reports", {}), alerts, "reports" in top),
    )


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$SPENDWATCH_CONFIG``, else ``./config.toml``."""
    return Path(explicit or os.environ.get("SPENDWATCH_CONFIG") or DEFAULT_CONFIG)


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file. Raises ConfigError with a one-line message."""
    path = config_path(explicit)
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
    """The admin key of ``org``: from its key file if set, else its environment variable.

    Raises ConfigError naming where the key was looked for (never the key itself).
    """
    if org.admin_key_file:
        key_path = Path(org.admin_key_file).expanduser()
        try:
            value = key_path.read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(f"{config.path}: organization {org.name!r}: admin_key_file "
                              f"{key_path} cannot be read; create it holding the Admin API key "
                              "(mode 600)") from None
        where = f"admin_key_file {key_path}"
    else:
        value = (environ(org.admin_key_env) or "").strip()
        where = f"environment variable {org.admin_key_env}"
    if not value:
        raise ConfigError(f"{config.path}: organization {org.name!r}: no admin key in {where}; "
                          "set it to the organization's Admin API key (sk-ant-admin01-...)")
    return Secret(value)
