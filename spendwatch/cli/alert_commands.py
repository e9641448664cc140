"""``spendwatch alerts``: evaluate the rules now, test the channels, silence alerts."""

from __future__ import annotations

from collections.abc import Sequence

import click

from spendwatch.cli.shell import config_of, exit_failed
from spendwatch.errors import SpendwatchError
from spendwatch.timeutil import utcnow
from spendwatch.warehouse.batch import read


@click.group()
def alerts() -> None:
    """Evaluate alert rules, test channels, silence alerts."""


@alerts.command("check")
@click.pass_context
def alerts_check(ctx: click.Context) -> None:
    """Evaluate every rule now and send what is due. Exits 1 when a channel is broken."""
    from alerts.check import check
    from alerts.outbox import has_pending
    from alerts.states import Kind

    config = config_of(ctx)
    now = utcnow()
    report = check(config, now)
    for ev in report.evaluations:
        click.echo(f"{ev.state.upper().replace('_', ' '):8} {ev.rule} [{ev.scope_key}] "
                   f"{ev.level}: {ev.summary}")
    if not report.evaluations:
        click.echo("no alert rules configured ([[alerts.rules]] in the config)")
    for line in report.transitions:
        click.echo(f"changed: {line}")
    for channel, title, result in report.deliveries:
        click.echo(f"{'sent' if result.ok else 'NOT SENT'} to {channel}: {title} "
                   f"({result.answer})")
    if has_pending(config, now, (Kind.REPORT,)):
        click.echo("weekly reports wait to be sent: the worker sends them, or run "
                   "`spendwatch report send`")
    for channel, reason in report.broken_channels.items():
        click.echo(f"error: channel {channel!r} is broken: {reason}; fix it, then run "
                   "`spendwatch alerts test`", err=True)
    for channel, error in report.config_errors.items():
        click.echo(f"error: channel {channel!r} cannot send: {error}", err=True)
    if report.failed:
        exit_failed()


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
        click.echo(f"{name}: {'ok' if result.ok else 'FAILED'} ({result.answer})")
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
    from spendwatch.config import parse_duration

    config = config_of(ctx)
    now = utcnow()
    try:
        length = parse_duration(config.path, "--for", duration)
    except SpendwatchError:
        raise click.BadParameter(f"{duration!r} is not a duration; use e.g. 30m, 4h or 2d",
                                 param_hint="--for") from None
    silence_id = add_silence(config, rule, scope_key, now + length, now, comment)
    click.echo(f"silence {silence_id}: {rule} ({scope_key or 'every scope'}) until "
               f"{(now + length).astimezone(config.tz):%Y-%m-%d %H:%M %Z}")


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
        click.echo(f"{row['id']:>4} {state:6} {row['rule']} ({row['scope_key'] or 'every scope'})"
                   f" until {until:%Y-%m-%d %H:%M %Z}{comment}")


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
