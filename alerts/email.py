"""The email channel: a multipart text and HTML message sent over SMTP.

Transport security is STARTTLS (``security="starttls"``) or implicit TLS (``"tls"``), with
certificate verification against the system's CAs or ``ca_file``; plain SMTP only when
``security="none"`` is asked for. Every connection has a timeout: without one smtplib can wait
forever on a silent server.

smtplib reports refusals in two ways: ``SMTPRecipientsRefused`` (with the codes in
``e.recipients``, not ``smtp_code``) when every recipient was refused, and a returned dict of
the refused ones when at least one was accepted. Both count here: the mail goes again only to
the recipients that got a 4xx, so the ones who have it don't get it twice.

The password is never put into an answer, a log line or an exception's text.
"""

from __future__ import annotations

from dataclasses import replace

import hashlib
import html
import io
import logging
import smtplib
import ssl
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime
from functools import partial
from typing import Any

from alerts.model import DeliveryResult, Letter, Message, Notification
from alerts.words import headline, notification_facts
from spendwatch.retry import GaveUp, RetryPolicy, TryAgain, call_with_retries
from spendwatch.text import clean, header_text

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
SETTINGS = frozenset({"host", "port", "sender", "recipients", "security", "username", "ca_file",
                      "timeout", "max_attempts"})
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH

Refusals = dict[str, tuple[int, bytes]]


# ---- the message -----------------------------------------------------------------------------

def email_message(n: Notification, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The message for ``n``: multipart/alternative, text then HTML, subject ``n.title``.

    The Message-ID is derived from the notification, so sending it again (a retry, a restart)
    gives the same ID, which lets mail clients show it once. Names come from the API: the
    Subject is one cleaned line (:func:`spendwatch.text.header_text`), so a name with CR/LF
    can neither break the header nor add one, and the bodies hold no control character.
    """
    message = EmailMessage()
    message["Subject"] = header_text(n.title)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(n.at)
    message["Message-ID"] = _message_id(n, sender)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to alerts
    message.set_content(_text_body(n))
    message.add_alternative(_html_body(n), subtype="html")
    return message


def letter_message(letter: Letter, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """A letter's message (the weekly report): its text and HTML, its file attached (zipped
    above the letter's threshold). Date is ``letter.at`` (the outbox sets it to when it goes
    out); the Message-ID is the letter's ``key``'s, so a retry or a resend shows as one message.
    Raises ValueError when the letter has a file that was not loaded."""
    attachment = letter.attachment
    if attachment is not None and attachment.content is None:
        raise ValueError(f"the file {attachment.path} of the letter was not loaded")
    message = EmailMessage()
    message["Subject"] = header_text(letter.subject)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(letter.at)
    message["Message-ID"] = stable_message_id(letter.key, sender)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_clean_lines(letter.text))
    message.add_alternative(_clean_lines(letter.html), subtype="html")
    if attachment is not None and attachment.content is not None:
        if attachment.zipped:
            message.add_attachment(zipped(attachment.name, attachment.content),
                                   maintype="application", subtype="zip",
                                   filename=f"{attachment.name}.zip")
        else:
            maintype, _, subtype = attachment.mime.partition("/")
            message.add_attachment(attachment.content, maintype=maintype, subtype=subtype,
                                   filename=attachment.name,
                                   params={"charset": "utf-8"} if maintype == "text" else {})
    return message


def zipped(name: str, data: bytes) -> bytes:
    """``data`` as the one file ``name`` of a zip archive (a CSV shrinks about tenfold)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same bytes each time
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, data)
    return buffer.getvalue()


def message_of(message: Message, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The email of an alert notification or a letter."""
    if isinstance(message, Letter):
        return letter_message(message, sender, recipients)
    return email_message(message, sender, recipients)


def _clean_lines(text: str) -> str:
    """``text`` with no control character in any line (a name in a report's movers)."""
    return "\n".join(clean(line) for line in text.split("\n"))


def _text_body(n: Notification) -> str:
    lines = [headline(n), ""]
    lines += [f"{label}: {text}" for label, text in notification_facts(n)]
    if n.dashboard_url:
        lines += ["", f"Open in spendwatch: {n.dashboard_url}"]
    return "\n".join(clean(line) for line in lines) + "\n"


def _html_body(n: Notification) -> str:
    def e(text: str) -> str:
        return html.escape(clean(text))

    rows = "".join(f'<tr><th align="left">{e(label)}</th><td>{e(text)}</td></tr>'
                   for label, text in notification_facts(n))
    link = (f'<p><a href="{e(n.dashboard_url)}">Open in spendwatch</a></p>'
            if n.dashboard_url else "")
    return (f"<!DOCTYPE html><html><body><p><strong>{e(headline(n))}</strong></p>"
            f"<table>{rows}</table>{link}</body></html>\n")


def _message_id(n: Notification, sender: str) -> str:
    key = "|".join([n.kind, n.rule, n.level, ",".join(f"{k}={v}" for k, v in
                                                     sorted(n.scope.items())), n.at.isoformat()])
    return stable_message_id(key, sender)


def stable_message_id(key: str, sender: str) -> str:
    """``<spendwatch.<hash of key>@<sender's domain>>``: the same key, the same Message-ID."""
    domain = sender.rpartition("@")[2].strip(" >") or "spendwatch.invalid"
    return f"<spendwatch.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


# ---- the channel -----------------------------------------------------------------------------

class _Failure(Exception):
    """One attempt failed; ``answer`` is safe to show."""

    def __init__(self, answer: str, permanent: bool, about_message: bool = False) -> None:
        super().__init__(answer)
        self.answer = answer
        self.permanent = permanent
        self.about_message = about_message


def about_message(code: int, text: bytes | str) -> bool:
    """Whether a 5xx reply refuses this message (too big, its content) rather than the
    channel: 552, or the enhanced codes 5.3.4 (too big) and 5.6.x (content) of RFC 3463."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return code == 552 or text.strip().startswith(("5.3.4", "5.6."))


class EmailChannel:
    """Sends notifications by SMTP to fixed recipients.

    ``deliver`` never raises for a failure of the server or the network; it returns a
    ``DeliveryResult`` whose answer is the SMTP reply (``"SMTP 550 5.1.1 ..."``) or a sentence
    of ours. The constructor raises ``ValueError`` for settings that cannot work, and
    ``OSError`` when ``ca_file`` cannot be read.
    """

    takes_attachments = True  # a letter's file goes with it

    def __init__(self, name: str, host: str, port: int, sender: str, recipients: Sequence[str],
                 security: str = "starttls", username: str | None = None,
                 password: str | None = None, ca_file: str | None = None, timeout: float = 30,
                 max_attempts: int = 3, sleep: Callable[[float], None] = time.sleep) -> None:
        if security not in SECURITY_MODES:
            raise ValueError(f"email channel {name!r}: security must be one of "
                             f"{', '.join(SECURITY_MODES)}, not {security!r}")
        if not recipients:
            raise ValueError(f"email channel {name!r}: no recipients")
        if username and security == "none":
            raise ValueError(f"email channel {name!r}: logging in without TLS would send the "
                             f"password in the clear; use security 'starttls' or 'tls'")
        if max_attempts < 1:
            raise ValueError(f"email channel {name!r}: max_attempts must be at least 1")
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.security = security
        self.username = username
        self._password = password
        self.ca_file = ca_file
        self.timeout = timeout
        self.max_attempts = max_attempts
        self._sleep = sleep
        self._tls = ssl.create_default_context(cafile=ca_file) if security != "none" else None

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], secret: str | None, *,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> EmailChannel:
        """A channel from config: ``secret`` is the SMTP password (or ``None``); ``settings``
        hold ``host``, ``sender``, ``recipients`` (a list, or one comma-separated string) and
        optionally ``port`` (default by security: 587, 465, 25), ``security``, ``username``,
        ``ca_file``, ``timeout``, ``max_attempts``. Raises ``ValueError``."""
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise ValueError(f"email channel {name!r}: unknown settings {', '.join(unknown)}"
                             f" (known: {', '.join(sorted(SETTINGS))})")
        missing = sorted({"host", "sender", "recipients"} - set(settings))
        if missing:
            raise ValueError(f"email channel {name!r}: missing settings {', '.join(missing)}")
        options = dict(settings)
        if isinstance(options["recipients"], str):
            options["recipients"] = [r.strip() for r in options["recipients"].split(",")
                                     if r.strip()]
        options.setdefault("port", DEFAULT_PORTS.get(options.get("security", "starttls"), 587))
        return cls(name, password=secret, sleep=sleep, **options)

    def __repr__(self) -> str:
        return f"EmailChannel({self.name!r}, {self.host}:{self.port}, {self.security})"

    def deliver(self, notification: Message) -> DeliveryResult:
        """Send ``notification`` to every recipient: up to ``max_attempts`` connections,
        retrying 4xx replies, timeouts and connection errors with a growing wait; 5xx replies,
        an untrusted certificate and a refused login are permanent."""
        message = message_of(notification, self.sender, self.recipients)
        pending = list(self.recipients)
        rejected: Refusals = {}
        answers: list[str] = []
        give_up: list[Callable[[], DeliveryResult]] = []  # the last attempt's result, if last

        def send(attempt: int) -> DeliveryResult:
            nonlocal pending
            earlier = tuple(answers)
            try:
                refused = self._send_once(message, pending)
            except _Failure as failure:
                give_up.append(partial(self._failure_result, failure, attempt, rejected, earlier))
                if failure.permanent:
                    return give_up[-1]()
                answer = failure.answer
            else:
                rejected.update({a: reply for a, reply in refused.items() if reply[0] >= 500})
                pending = [a for a, reply in refused.items() if reply[0] < 500]
                give_up.append(partial(self._refusals_result, refused, rejected, attempt, earlier))
                if not pending:
                    return give_up[-1]()
                answer = _refusal_answer({a: refused[a] for a in pending})
            answers.append(self._redact(answer))
            raise TryAgain(self._redact(answer))

        # Exact waits (no jitter), and no Retry-After in SMTP.
        policy = RetryPolicy(max_attempts=self.max_attempts, base_delay=1.0, max_delay=30.0,
                             jitter=0, sleep=self._sleep)
        try:
            return call_with_retries(send, policy, f"email channel {self.name}")
        except GaveUp:
            return give_up[-1]()

    def _failure_result(self, failure: _Failure, attempt: int, rejected: Refusals,
                        earlier: tuple[str, ...]) -> DeliveryResult:
        result = self._failed(failure.answer, failure.permanent, attempt, rejected)
        about = failure.about_message and all(about_message(*reply) for reply in rejected.values())
        return replace(result, attempts=(*earlier, result.answer),
                       about_message=about and result.permanent)

    def _refusals_result(self, refused: Refusals, rejected: Refusals, attempt: int,
                         earlier: tuple[str, ...]) -> DeliveryResult:
        result = self._outcome(refused, rejected, attempt)
        return replace(result, attempts=(*earlier, result.answer))

    def _outcome(self, refused: Refusals, rejected: Refusals, attempt: int) -> DeliveryResult:
        deferred = {a: reply for a, reply in refused.items() if reply[0] < 500}
        if not rejected and not deferred:
            return DeliveryResult(ok=True, answer=f"SMTP 250 accepted for "
                                                  f"{len(self.recipients)} recipient(s)")
        answer = _refusal_answer(rejected | deferred)
        got_it = len(self.recipients) - len(rejected) - len(deferred)
        answer += f"; {got_it} of {len(self.recipients)} recipient(s) got it"
        if deferred and attempt > 1:
            answer += f" (after {attempt} attempts)"
        if got_it:
            # Delivered to someone: the notification went out and the channel works; the
            # refused addresses are in the answer (and the log) for someone to fix.
            log.warning("email channel %s: %s", self.name, self._redact(answer))
            return DeliveryResult(ok=True, answer=self._redact(answer))
        return DeliveryResult(ok=False, answer=self._redact(answer), permanent=bool(rejected),
                              about_message=bool(rejected) and all(
                                  about_message(*reply) for reply in rejected.values()))

    def _failed(self, answer: str, permanent: bool, attempt: int,
                rejected: Refusals) -> DeliveryResult:
        if rejected:
            answer = f"{_refusal_answer(rejected)}; then {answer}"
        if not permanent and attempt > 1:
            answer += f" (after {attempt} attempts)"
        return DeliveryResult(ok=False, answer=self._redact(answer),
                              permanent=permanent or bool(rejected))

    def _send_once(self, message: EmailMessage, recipients: list[str]) -> Refusals:
        """One connection: returns the refused recipients; raises ``_Failure``."""
        where = f"{self.host}:{self.port}"
        try:
            smtp = self._connect()
            try:
                if self.username:
                    smtp.login(self.username, self._password or "")
                return smtp.send_message(message, to_addrs=recipients)
            finally:
                _close(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            return exc.recipients
        except ssl.SSLCertVerificationError as exc:
            raise _certificate_failure(exc, self.host) from None
        except TimeoutError:
            raise _Failure(f"no answer from {where} within {self.timeout:g} s", False) from None
        except ssl.SSLError as exc:
            raise _Failure(f"TLS with {where} failed ({exc.reason or 'handshake'}); is "
                           f"security {self.security!r} right for this port?", True) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise _Failure(f"{where}: {exc}", True) from None
        except smtplib.SMTPServerDisconnected as exc:
            if isinstance(exc.__context__, TimeoutError):
                raise _Failure(f"no answer from {where} within {self.timeout:g} s",
                               False) from None
            raise _Failure(f"{where} closed the connection", False) from None
        except smtplib.SMTPResponseException as exc:
            raise _Failure(_reply(exc.smtp_code, exc.smtp_error), exc.smtp_code >= 500,
                           exc.smtp_code >= 500 and about_message(exc.smtp_code, exc.smtp_error)
                           ) from None
        except smtplib.SMTPException as exc:
            raise _Failure(f"SMTP error with {where} ({type(exc).__name__})", False) from None
        except OSError as exc:
            raise _Failure(f"could not connect to {where}: {exc.strerror or type(exc).__name__}",
                           False) from None

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self._tls)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            try:
                smtp.starttls(context=self._tls)
            except BaseException:
                smtp.close()  # mid-handshake: no QUIT to send
                raise
        return smtp

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "[password]") if self._password else text


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT politely; the mail is already taken or not, so a failing QUIT changes nothing."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _certificate_failure(exc: ssl.SSLCertVerificationError, host: str) -> _Failure:
    if exc.verify_code == _HOSTNAME_MISMATCH:
        return _Failure(f"certificate not valid for {host}: {exc.verify_message}", True)
    return _Failure(f"certificate not trusted: set ca_file ({exc.verify_message})", True)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(f"SMTP {code} {text}".split())


def _refusal_answer(refused: Refusals) -> str:
    """``SMTP 550 5.1.1 no such user, refused: bob@example.com``, one group per reply."""
    by_reply: dict[str, list[str]] = {}
    for address, (code, text) in refused.items():
        by_reply.setdefault(_reply(code, text), []).append(address)
    return "; ".join(f"{reply}, refused: {', '.join(addresses)}"
                     for reply, addresses in by_reply.items())
