"""Where notifications go: the contract every channel keeps, and building channels from config.

A channel is one small module (``alerts/slack.py``, ``alerts/email.py``) with a class that has a
``name`` and a ``deliver`` method, and a ``from_settings`` class method that reads its config.
``CHANNEL_KINDS`` maps a config ``kind`` to that class.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Protocol

from alerts.email import EmailChannel
from alerts.model import DeliveryResult, Message
from alerts.slack import SlackChannel


class Channel(Protocol):
    """Somewhere notifications go: alert notifications and letters (the weekly report).

    ``deliver`` makes one delivery, including its own bounded retries, and returns when the
    channel has acknowledged it or given up. It never raises for a failure of the channel (a
    refusal, a timeout, a lost connection): that is a ``DeliveryResult`` with ``ok=False``,
    ``permanent=True`` when trying again cannot help (the channel is broken until its config
    changes), and ``answer`` one line with the channel's answer, never a secret.

    A channel may deliver an alert's :class:`~alerts.model.Notification` or a
    :class:`~alerts.model.Letter`; one whose class sets ``takes_attachments = True`` (email)
    gets a letter's file loaded by the outbox just before sending.
    """

    name: str

    def deliver(self, notification: Message) -> DeliveryResult: ...


class ChannelKind(Protocol):
    """A channel class, as ``build_channel`` uses it."""

    def from_settings(self, name: str, settings: Mapping[str, Any], secret: str | None, *,
                      sleep: Callable[[float], None],
                      clock: Callable[[], float]) -> Channel: ...


CHANNEL_KINDS: dict[str, ChannelKind] = {"slack": SlackChannel, "email": EmailChannel}


def build_channel(name: str, kind: str, settings: Mapping[str, Any], secret: str | None,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Channel:
    """The channel ``name`` of ``kind`` from its config ``settings`` and its ``secret`` (the
    Slack webhook URL, the SMTP password or ``None``).

    Raises ``ValueError`` for an unknown kind, an unknown or missing setting or a value that
    cannot work; the message names the channel and the setting, never the secret.
    """
    try:
        channel_kind = CHANNEL_KINDS[kind]
    except KeyError:
        raise ValueError(f"channel {name!r}: unknown kind {kind!r} "
                         f"(known: {', '.join(sorted(CHANNEL_KINDS))})") from None
    return channel_kind.from_settings(name, settings, secret, sleep=sleep, clock=clock)
