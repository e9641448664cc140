"""A local SMTP server for tests: aiosmtpd on a free port, a mailbox that keeps what it gets
and can script RCPT answers, and a throwaway CA for STARTTLS and implicit TLS."""

from __future__ import annotations

import email.policy
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any, Callable, Iterator

import pytest
import trustme
from aiosmtpd.controller import Controller


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class Mailbox:
    """An aiosmtpd handler that keeps what it gets; ``rcpt_replies`` scripts RCPT answers
    per address (consumed in order, then the address is accepted)."""

    def __init__(self, rcpt_replies: dict[str, list[str]] | None = None) -> None:
        self.rcpt_replies = {a: deque(r) for a, r in (rcpt_replies or {}).items()}
        self.delivered: list[Delivered] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        replies = self.rcpt_replies.get(address)
        if replies:
            return replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def inbox(self, address: str) -> list[EmailMessage]:
        return [d.message for d in self.delivered if address in d.rcpt_tos]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., int]]:
    """Starts aiosmtpd servers on free ports: ``port = smtp_server(mailbox, **options)``."""
    controllers: list[Controller] = []

    def start(mailbox: Mailbox, **options: Any) -> int:
        controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        controllers.append(controller)
        return int(controller.port)

    yield start
    for controller in controllers:
        controller.stop()


@dataclass
class TLSFiles:
    server_context: ssl.SSLContext
    ca_file: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TLSFiles(server_context, str(ca_file))
