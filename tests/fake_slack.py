"""A local stand-in for Slack's incoming webhooks: a real HTTP server in a thread.

It records every request and answers from a script, with Slack's documented answers (200
``ok``, 400 ``invalid_payload``, 403 ``invalid_token``, 404 ``no_service``, 410
``channel_is_archived``, 429 with ``Retry-After``, 500 ``rollup_error``)::

    from fake_slack import fake_slack, FakeSlack   # the fixture, and the class

    def test_it_waits_out_429(fake_slack):
        fake_slack.script((429, "rate_limited", {"Retry-After": "7"}), (200, "ok"))
        ... post to fake_slack.url() ...
        assert len(fake_slack.received) == 2
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Mapping, NamedTuple

import pytest

DEFAULT_PATH = "/services/T000/B000/XXXX"


class Answer(NamedTuple):
    """One scripted answer; ``delay`` seconds pass before it is sent (to test timeouts)."""

    status: int
    body: str = "ok"
    headers: Mapping[str, str] = {}
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the server saw it; ``at`` is ``time.monotonic()`` on arrival."""

    method: str
    path: str
    headers: Mapping[str, str]
    raw: bytes
    at: float
    json: Any = field(default=None)


class FakeSlack:
    """Answers each request with the next scripted answer, then with 200 ``ok``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval: close() waits for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-slack")
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = DEFAULT_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *answers: Answer | tuple[Any, ...]) -> None:
        """Queue answers, each ``(status, body)``, ``(status, body, headers)`` or an ``Answer``."""
        with self._lock:
            self._answers.extend(Answer(*answer) for answer in answers)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take(self, request: Received) -> Answer:
        with self._lock:
            self.received.append(request)
            return self._answers.popleft() if self._answers else Answer(200, "ok")


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            answer = fake._take(Received(self.command, self.path, dict(self.headers), raw,
                                         time.monotonic(), body))
            time.sleep(answer.delay)
            payload = answer.body.encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the path is the (fake) credential

    return Handler


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A running ``FakeSlack``, closed after the test."""
    with FakeSlack() as server:
        yield server
