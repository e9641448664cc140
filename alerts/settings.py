"""What the alerts take from the config: the settings of each channel kind and the params of
each rule kind, checked and turned into values here, not in the core.

``spendwatch.config`` reads ``[alerts]`` in its generic shape (channels with a name, a kind
and settings; rules with a name, a kind, channels, a scope, timing and params, all as
written). :func:`validate` checks them for their kind, with the same one-line ConfigError as
the rest of the config, and returns the config with the values the rules and channels use
(dollars as Decimal, durations as timedelta, the channel's secret names apart). Every entry
point runs it: :func:`load` (the CLI, tests), the dashboard's config, and the alert check
itself (a no-op on a config already checked).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from spendwatch.config import RULE_COMMON_KEYS, ChannelConfig, Config, RuleConfig, \
    check_table, load_config, parse_duration, parse_money, parse_ratio, preview
from spendwatch.errors import ConfigError
from spendwatch.files import check_private
from spendwatch.warehouse.spend import check_dimensions

CHANNEL_SCHEMAS: dict[str, dict[str, type]] = {
    "slack": {"webhook_url_env": str, "webhook_url_file": str,
              "min_interval_seconds": float, "timeout_seconds": float},
    "email": {"host": str, "port": int, "security": str, "username": str,
              "password_env": str, "password_file": str, "from": str, "to": list,
              "ca_file": str, "timeout_seconds": float},
}
#: The settings that name where a channel kind's secret is: (environment variable, file).
SECRET_KEYS = {"slack": ("webhook_url_env", "webhook_url_file"),
               "email": ("password_env", "password_file")}
#: The kinds that judge spend through THE spend query (person and product scopes work there).
SPEND_KINDS = ("daily_spend", "monthly_budget", "spend_spike")
RULE_KINDS = ("daily_spend", "monthly_budget", "cache_hit_ratio", "spend_spike", "data_stale",
              "cost_drift")
SCOPE_DIMENSIONS = ("organization", "workspace", "feature", "api_key", "model", "person",
                    "product")
RULE_PARAMS: dict[str, dict[str, type]] = {
    "daily_spend": {"threshold_usd": object, "levels": object, "per": str},
    "monthly_budget": {"budget_usd": object},
    "cache_hit_ratio": {"floor": object, "window_hours": int, "min_input_tokens": int,
                        "per": str},
    "spend_spike": {"mode": str, "multiplier": object, "min_usd": object, "weeks": int},
    "data_stale": {"max_age": str, "max_failures": int},
    "cost_drift": {"threshold_percent": object, "days": int},
}
REQUIRED_PARAMS = {"daily_spend": ("threshold_usd",), "monthly_budget": ("budget_usd",),
                   "cache_hit_ratio": ("floor",)}
SECURITY_MODES = ("starttls", "tls", "none")
#: The numbers a channel or rule takes: (lowest, highest, whether the lowest is allowed). Out
#: of range, a setting silently stops alerting (a negative window evaluates nothing, a
#: negative timeout never sends) or ends in a traceback.
NUMBER_RANGES: dict[str, tuple[float, float, bool]] = {
    "timeout_seconds": (0, 600, False),
    "min_interval_seconds": (0, 3600, True),
    "port": (1, 65535, True),
    "window_hours": (1, 90 * 24, True),
    "min_input_tokens": (0, 10 ** 15, True),
    "weeks": (1, 52, True),
    "max_failures": (1, 1000, True),
    "days": (1, 365, True),
}


def check_number(path: Path, key: str, value: Any) -> None:
    """``value`` of setting ``key`` (its last part names the range in NUMBER_RANGES) is a
    finite number within its range. Raises ConfigError naming the key and the range."""
    name = key.rsplit(".", 1)[-1]
    if name not in NUMBER_RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high, low_allowed = NUMBER_RANGES[name]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: {key} must be a finite number, not {value}")
    if value < low or (value == low and not low_allowed) or value > high:
        bound = f"at least {low:g}" if low_allowed else f"more than {low:g}"
        raise ConfigError(f"{path}: {key} must be {bound} and at most {high:g}, not {value}")


#: What each rule kind's evaluations add to the rule's scope (alerts.rules): a silence's scope
#: must have these dimensions to match any of them. ``per`` stands for the rule's ``per``.
SCOPE_ADDED = {"cache_hit_ratio": ("organization", "per"), "data_stale": ("organization",),
               "cost_drift": ("organization", "model")}
#: The configured scope's dimensions a kind keeps (None: all of them).
SCOPE_KEPT: dict[str, tuple[str, ...] | None] = {"data_stale": ("organization",),
                                                 "cost_drift": ("organization", "model")}


def scope_fits(rule: RuleConfig, scope: Mapping[str, str],
               organizations: Sequence[str]) -> bool:
    """Whether ``scope`` (a silence's ``--scope``) can be the scope of one of ``rule``'s
    evaluations: the dimensions its kind evaluates per, the values its configured scope fixes,
    an organization of the config."""
    kept = SCOPE_KEPT.get(rule.kind)
    fixed = {k: v for k, v in rule.scope.items() if kept is None or k in kept}
    added = {str(rule.params.get("per", "model")) if d == "per" else d
             for d in SCOPE_ADDED.get(rule.kind, ())}
    if rule.kind == "daily_spend" and "per" in rule.params:
        added |= {str(rule.params["per"]), "organization"}
    if set(scope) != set(fixed) | added:
        return False
    if any(scope[k] != v for k, v in fixed.items()):
        return False
    return "organization" not in scope or scope["organization"] in organizations


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    """``spendwatch.config.load_config`` and :func:`validate`: the config every entry point
    uses. Raises ConfigError with a one-line message."""
    return validate(load_config(explicit))


def validate(config: Config) -> Config:
    """``config`` with its channels and rules checked for their kind and their values parsed.
    Raises ConfigError (one line naming the file, the key and the fix). A config already
    checked comes back as it is."""
    if config.alerts.checked:
        return config
    path = config.path
    channels = tuple(_channel(path, c, f"alerts.channels[{i}]")
                     for i, c in enumerate(config.alerts.channels))
    rules = tuple(_rule(config, r, f"alerts.rules[{i}]")
                  for i, r in enumerate(config.alerts.rules))
    return replace(config, alerts=replace(config.alerts, channels=channels, rules=rules,
                                          checked=True))


def _channel(path: Path, channel: ChannelConfig, where: str) -> ChannelConfig:
    kind = channel.kind or None
    if kind not in CHANNEL_SCHEMAS:
        raise ConfigError(f"{path}: {where}.kind must be \"slack\" or \"email\", not "
                          f"{preview(kind)}")
    values = check_table(path, dict(channel.settings), where,
                         {"name": str, "kind": str, **CHANNEL_SCHEMAS[kind]})
    env_key, file_key = SECRET_KEYS[kind]
    if env_key in values and file_key in values:
        raise ConfigError(f"{path}: {where} sets both {env_key} and {file_key}; keep one")
    if kind == "slack" and env_key not in values and file_key not in values:
        raise ConfigError(f"{path}: {where} needs webhook_url_env or webhook_url_file (the "
                          "webhook URL is a secret: it never goes in this file)")
    if kind == "email":
        for key in ("host", "from", "to"):
            if key not in values:
                raise ConfigError(f"{path}: {where}.{key} is missing; add it")
        if values.get("security", "starttls") not in SECURITY_MODES:
            raise ConfigError(f"{path}: {where}.security must be \"starttls\", \"tls\" or "
                              "\"none\" (plain text, only when you mean it)")
    for key, value in values.items():
        check_number(path, f"{where}.{key}", value)
    if file_key in values:
        check_private(Path(values[file_key]).expanduser(), f"{path}: {where}.{file_key}: the "
                      + ("webhook URL" if kind == "slack" else "SMTP password") + " file")
    settings = {k: v for k, v in values.items() if k not in (env_key, file_key)}
    return replace(channel, settings=settings, secret_env=values.get(env_key),
                   secret_file=values.get(file_key))


def _rule(config: Config, rule: RuleConfig, where: str) -> RuleConfig:
    path = config.path
    kind = rule.kind or None
    if kind not in RULE_PARAMS:
        raise ConfigError(f"{path}: {where}.kind must be one of {', '.join(RULE_KINDS)}, not "
                          f"{preview(kind)}")
    schema = {**{k: object for k in RULE_COMMON_KEYS}, **RULE_PARAMS[kind]}
    values = check_table(path, dict(rule.params), where, schema)
    scope = check_table(path, dict(rule.scope), f"{where}.scope",
                        {d: str for d in SCOPE_DIMENSIONS})
    params: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{where}.{key}"
        if key in ("threshold_usd", "budget_usd", "min_usd", "multiplier", "threshold_percent"):
            params[key] = parse_money(path, full, value)
        elif key == "floor":
            params[key] = parse_ratio(path, full, value)
        elif key == "levels":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: {full} must be a list of fractions such as "
                                  "[0.5, 0.8, 1.0]")
            params[key] = tuple(sorted(parse_money(path, full, str(v)) for v in value))
        elif key == "max_age":
            params[key] = parse_duration(path, full, value)
            if not params[key]:
                raise ConfigError(f"{path}: {full} must be more than 0, such as \"2h\"")
        else:
            check_number(path, full, value)
            params[key] = value
    for required in REQUIRED_PARAMS.get(kind, ()):
        if required not in params:
            raise ConfigError(f"{path}: {where}.{required} is missing; add it")
    if kind == "daily_spend" and params.get("per", "person") not in ("person", "product"):
        raise ConfigError(f"{path}: {where}.per must be \"person\" or \"product\" (or left "
                          "out for one total)")
    people = sorted(set(scope) & {"person", "product"})
    if people and kind not in SPEND_KINDS:
        raise ConfigError(f"{path}: {where}.scope has {people[0]}, which a {kind} rule cannot "
                          f"judge; scope by {people[0]} only rules of kind "
                          + ", ".join(SPEND_KINDS))
    try:  # features judged where this config judges them, as spend() will
        check_dimensions(config, [*scope, *([params["per"]] if "per" in params else [])])
    except ValueError as exc:
        raise ConfigError(f"{path}: {where}.scope: {exc}") from None
    if kind == "cache_hit_ratio" and params.get("per", "model") not in ("model", "feature"):
        raise ConfigError(f"{path}: {where}.per must be \"model\" or \"feature\"")
    if kind == "spend_spike" and params.get("mode", "daily") not in ("daily", "hourly"):
        raise ConfigError(f"{path}: {where}.mode must be \"daily\" or \"hourly\"")
    return replace(rule, scope=scope, params=params)
