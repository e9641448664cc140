"""What every command shares: the config of ``--config``, day options, JSON output, and the
one way to fail.

A command fails by raising: a :class:`click.ClickException` (``BadParameter`` and the other
usage errors included) or a :class:`~spendwatch.errors.SpendwatchError`. :class:`Shell`, the
``spendwatch`` group, turns either into ONE line on stderr, ``error: <what>; <the fix>``, and
its exit code: 2 for a usage or config problem, 1 otherwise. No traceback reaches the user for
a mistake of theirs. A command whose work partly failed (one organization of several, one
channel) prints what happened to each and then exits 1 with :func:`exit_failed`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

import click
from click.exceptions import NoArgsIsHelpError

from alerts import settings as alert_settings
from spendwatch.config import Config
from spendwatch.errors import SpendwatchError
from spendwatch.numbers import money_str
from spendwatch.secrets import RedactingFilter
from spendwatch.text import clean, clean_log_handlers

#: Third-party loggers that say too much at INFO (httpx-style clients log full URLs).
NOISY_LOGGERS = ("httpx", "httpx2", "anthropic", "urllib3", "apscheduler.executors.default")


class Shell(click.Group):
    """The ``spendwatch`` group: runs a command, and turns its failure into one line."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # `spendwatch`, `spendwatch alerts`: the help
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C or end of input at a prompt, as click says it
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except (click.ClickException, SpendwatchError) as exc:
            click.echo(f"error: {failure_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def failure_line(exc: click.ClickException | SpendwatchError) -> str:
    """The one line a failure is shown as (without ``error:``): ``--week: not a week``."""
    if isinstance(exc, click.BadParameter):
        hint = exc.param_hint
        if hint is None and exc.param is not None:
            hint = exc.param.get_error_hint(exc.ctx) if exc.ctx else exc.param.name
        if isinstance(hint, (list, tuple)):
            hint = " / ".join(hint)
        text = f"{str(hint).replace(chr(39), '')}: {exc.message}" if hint else exc.message
    elif isinstance(exc, click.UsageError):
        text = exc.format_message()
        if exc.ctx is not None:
            text = f"{text.rstrip('.')} (see `{exc.ctx.command_path} --help`)"
    elif isinstance(exc, click.ClickException):
        text = exc.format_message()
    else:
        text = str(exc)
    return " ".join(clean(text).split())  # a name in the message never reaches the terminal raw


def exit_failed() -> NoReturn:
    """End a command whose outcome lines (already printed) say that something failed."""
    sys.exit(1)


def setup_logging(verbose: int) -> None:
    """Warnings by default, ``-v`` info, ``-vv`` debug; third-party chatter stays at warning
    unless ``-vvv``. Whatever the level, every secret resolved is taken out of every record
    (:class:`spendwatch.secrets.RedactingFilter`)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clean_log_handlers()  # log lines hold API names: no raw control character on a terminal
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(level if verbose >= 3 else max(level, logging.WARNING))


def worker_logging(ctx: click.Context) -> None:
    """A process that keeps running (the worker) logs what it does at INFO by default: its
    start and stop, each collection, alerts changing state, reports written. Warnings stay
    for what needs a person; third-party chatter stays at warning."""
    if not ctx.find_root().obj.get("verbose"):
        logging.getLogger().setLevel(logging.INFO)


def config_of(ctx: click.Context) -> Config:
    """The config the command runs with: ``--config``, else ``$SPENDWATCH_CONFIG``, else
    ``./config.toml``. Raises ConfigError (exit 2)."""
    return alert_settings.load(ctx.find_root().obj["config_path"])  # alerts/ checks its own


#: The days a date option may name: a day outside them is a typo (and near year 1 or 9999 a
#: local day's start overflows the calendar).
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9000, 12, 31)


def parse_day(value: str | None, option: str) -> date | None:
    """A ``YYYY-MM-DD`` option as a date (None when not given). Raises BadParameter."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD",
                                 param_hint=option) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise click.BadParameter(f"{value} is not a day spendwatch can hold; use a day "
                                 f"between {FIRST_DAY} and {LAST_DAY}", param_hint=option)
    return day


def check_range(since: date, until: date) -> None:
    """``--since`` .. ``--until`` (both included) runs forward. Raises BadParameter (exit 2):
    a reversed range is a mistake, not an empty answer ($0.00)."""
    if since > until:
        raise click.BadParameter(f"{since} is after --until {until}; swap them (both days "
                                 "are included)", param_hint="--since")


def check_organizations(config: Config, names: Sequence[str]) -> None:
    """Every ``--org`` names an organization of the config. Raises BadParameter (exit 2): an
    unknown name is a typo, not an organization that spent $0."""
    known = [org.name for org in config.organizations]
    for name in names:
        if name not in known:
            raise click.BadParameter(f"no organization named {name!r} in {config.path}; use "
                                     "one of: " + ", ".join(known), param_hint="--org")


def json_default(value: Any) -> Any:
    """JSON of what figures hold: money as exact decimal strings, dates in ISO form."""
    if isinstance(value, Decimal):
        return money_str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (see :func:`json_default`)."""
    click.echo(json.dumps(data, default=json_default, indent=2))
