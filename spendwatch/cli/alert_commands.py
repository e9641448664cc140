"""``spendwatch alerts``: evaluate the rules now, test the channels, silence alerts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import click

from spendwatch.cli.shell import config_of, exit_failed
from spendwatch.config import Config
from spendwatch.errors import SpendwatchError
from spendwatch.text import clean  # rule scopes and summaries hold API names
from spendwatch.timeutil import utcnow
from spendwatch.warehouse.batch import read


@click.group()
def alerts() -> None:
    """Evaluate alert rules, test channels, silence alerts."""


@alerts.command("check")
@click.pass_context
def alerts_check(ctx: click.Context) -> None:
    """Evaluate every rule now and send what is due. Exits 1 when a notification due now
    was not sent (it waits for the next check) or a channel is broken."""
    from alerts.check import check
    from alerts.outbox import has_pending
    from alerts.states import Kind

    config = config_of(ctx)
    now = utcnow()
    report = check(config, now)
    for ev in report.evaluations:
        click.echo(clean(f"{ev.state.upper().replace('_', ' '):8} {ev.rule} [{ev.scope_key}] "
                         f"{ev.level}: {ev.summary}"))
    if not report.evaluations:
        click.echo("no alert rules configured ([[alerts.rules]] in the config)")
    for line in report.transitions:
        click.echo(clean(f"changed: {line}"))
    for channel, title, result in report.deliveries:
        click.echo(clean(f"{'sent' if result.ok else 'NOT SENT'} to {channel}: {title} "
                         f"({result.answer})"))
    if has_pending(config, now, (Kind.REPORT,)):
        click.echo("weekly reports wait to be sent: the worker sends them, or run "
                   "`spendwatch report send`")
    for channel, reason in report.broken_channels.items():
        click.echo(clean(f"error: channel {channel!r} is broken: {reason}; fix it, then run "
                         "`spendwatch alerts test`"), err=True)
    for channel, error in report.config_errors.items():
        click.echo(clean(f"error: channel {channel!r} cannot send: {error}"), err=True)
    if report.failed or any(not result.ok for _, _, result in report.deliveries):
        exit_failed()  # a NOT SENT line is never an exit 0


@alerts.command("test")
@click.option("--channel", "names", multiple=True, metavar="NAME",
              help="Only this channel (default: every channel).")
@click.pass_context
def alerts_test(ctx: click.Context, names: Sequence[str]) -> None:
    """Send a clearly marked test message and show each channel's answer."""
    from alerts.outbox import send_test

    config = config_of(ctx)
    names = names or tuple(c.name for c in config.alerts.channels)
    if not names:
        raise click.ClickException("no channels configured ([[alerts.channels]] in the config)")
    for name in names:
        if config.alerts.channel(name) is None:
            raise click.BadParameter(f"no channel named {name!r}", param_hint="--channel")
    failed = False
    for name in names:
        result = send_test(config, name, utcnow())
        click.echo(clean(f"{name}: {'ok' if result.ok else 'FAILED'} ({result.answer})"))
        failed = failed or not result.ok
    if failed:
        exit_failed()


@alerts.command("silence")
@click.argument("rule")
@click.option("--scope", "scope_key", metavar="KEY",
              help="Only this scope, as `alerts check` shows it in brackets, e.g. "
                   "organization=acme (default: every scope).")
@click.option("--for", "duration", required=True, metavar="DURATION",
              help="How long, e.g. 30m, 4h, 2d.")
@click.option("--comment", help="Why (shown with the silence).")
@click.pass_context
def alerts_silence(ctx: click.Context, rule: str, scope_key: str | None, duration: str,
                   comment: str | None) -> None:
    """Stop notifications of RULE for a while; its episodes are still recorded."""
    from alerts.silences import add_silence

    config = config_of(ctx)
    now = utcnow()
    length = silence_length(duration)
    if rule in {r.name for r in config.alerts.rules} and scope_key is not None:
        check_scope(config, rule, scope_key)
    silence_id = add_silence(config, rule, scope_key, now + length, now, comment)
    click.echo(f"silence {silence_id}: {rule} ({scope_key or 'every scope'}) until "
               f"{(now + length).astimezone(config.tz):%Y-%m-%d %H:%M %Z}")


#: The longest silence: an alert kept quiet for longer is a rule to change, not to silence.
LONGEST_SILENCE = timedelta(days=90)


def silence_length(duration: str) -> timedelta:
    """``--for`` as a timedelta, more than 0 and at most LONGEST_SILENCE. Raises
    BadParameter."""
    from spendwatch.config import DURATION, parse_duration

    if not DURATION.match(duration):
        raise click.BadParameter(f"{duration!r} is not a duration; use e.g. 30m, 4h or 2d",
                                 param_hint="--for")
    try:
        length = parse_duration(Path("--for"), "--for", duration, longest=LONGEST_SILENCE)
    except SpendwatchError:  # longer than the longest
        length = LONGEST_SILENCE + timedelta(seconds=1)
    if not timedelta(0) < length <= LONGEST_SILENCE:
        raise click.BadParameter(f"{duration} is not between 1s and {LONGEST_SILENCE.days}d; "
                                 "a longer silence is a rule to change (or remove)",
                                 param_hint="--for")
    return length


def check_scope(config: Config, rule: str, scope_key: str) -> None:
    """``--scope`` names a scope of ``rule``: one it has been evaluated for (alert_states,
    alert_episodes), or one its evaluations can have (``alerts.settings.scope_fits``: the
    kind's dimensions, the configured scope's values, an organization of the config). Raises
    BadParameter (exit 2) listing the scopes seen: a silence of a scope that does not exist
    silences nothing."""
    from alerts.settings import scope_fits
    from spendwatch import storage
    from spendwatch.errors import DatabaseMissing

    (configured,) = [r for r in config.alerts.rules if r.name == rule]
    parts = [part.partition("=") for part in scope_key.split(",")]
    scope = {k: v for k, _, v in parts}
    if all(sep and k and v for k, sep, v in parts) and len(scope) == len(parts) \
            and scope_key == ",".join(f"{k}={v}" for k, v in sorted(scope.items())) \
            and scope_fits(configured, scope, [o.name for o in config.organizations]):
        return
    known: set[str] = set()
    try:
        with storage.reader(config) as conn:
            known |= {key for (key,) in conn.execute(
                "SELECT scope_key FROM alert_states WHERE rule = ? UNION "
                "SELECT scope_key FROM alert_episodes WHERE rule = ?", [rule, rule]).fetchall()}
    except DatabaseMissing:
        pass
    if scope_key not in known:
        shown = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
        raise click.BadParameter(f"rule {rule!r} has no scope {scope_key!r}; its scopes so "
                                 f"far: {shown or 'none'} (as `spendwatch alerts check` shows "
                                 "them, dimensions in alphabetical order)", param_hint="--scope")


@alerts.command("silences")
@click.pass_context
def alerts_silences(ctx: click.Context) -> None:
    """List the silences in force, and those that ended in the last day."""
    from alerts.history import silences

    config = config_of(ctx)
    now = utcnow()
    rows = read(config, lambda batch: silences(batch.conn, now))
    if not rows:
        click.echo("no silences (add one with `spendwatch alerts silence RULE --for 4h`)")
    for row in rows:
        state = "active" if row["active"] else "ended"
        until = row["expires_at"].astimezone(config.tz)
        comment = f" - {row['comment']}" if row["comment"] else ""
        maker = f" by {row['created_by']}" if row.get("created_by") else ""
        click.echo(clean(f"{row['id']:>4} {state:6} {row['rule']} "
                         f"({row['scope_key'] or 'every scope'}) until "
                         f"{until:%Y-%m-%d %H:%M %Z}{maker}{comment}"))


@alerts.command("unsilence")
@click.argument("silence_id", type=int)
@click.pass_context
def alerts_unsilence(ctx: click.Context, silence_id: int) -> None:
    """End silence SILENCE_ID now (its number in `alerts silences`)."""
    from alerts.silences import expire_silence

    config = config_of(ctx)
    if not expire_silence(config, silence_id, utcnow()):
        raise click.ClickException(f"no silence {silence_id} in force; `spendwatch alerts "
                                   "silences` lists them")
    click.echo(f"silence {silence_id} ended")
