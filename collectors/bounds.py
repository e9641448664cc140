"""The bounds of one organization's run: its deadline and the stop request, checked at every
page and enforced around every HTTP call.

An organization's routine run has ``collection.job_deadline_seconds`` in all (names, every
window, every page, every retry; an explicit backfill has no whole-run deadline, see
:func:`collectors.sync.collect`). :meth:`RunBounds.check` is called before each page and each window;
:meth:`RunBounds.timeout` caps an HTTP call's timeout by the time left; and
:meth:`RunBounds.call` runs the HTTP call itself in a daemon thread while this thread waits,
so that neither the deadline nor a stop (SIGTERM to the worker, Ctrl-C to ``collect``) waits
for a server that answers slowly or drips its answer: the run ends at once and the abandoned
call (an HTTP request and its JSON parse, nothing that writes) ends on its own timeout.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from spendwatch.errors import CollectionError

T = TypeVar("T")

#: How often a waiting run looks at the stop flag and the clock.
POLL_SECONDS = 0.1
#: The setting that holds the deadline, named in its message.
DEADLINE_SETTING = "collection.job_deadline_seconds"


class Stopped(Exception):
    """The run was asked to stop (SIGTERM to the worker); stored windows are kept."""


class DeadlineExceeded(CollectionError):
    """The organization's run used up ``collection.job_deadline_seconds``; it stops at once,
    recorded as a failed run (windows stored before are kept, the next run continues)."""


class RunBounds:
    """The deadline (a ``clock()`` value) and stop event of one organization's run.

    ``what`` names the run in messages (``organization 'acme'``); ``seconds`` is the
    configured deadline, for the message.
    """

    def __init__(self, what: str, seconds: float, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.seconds = seconds
        self.stop = stop
        self.clock = clock
        self.deadline = clock() + seconds

    def left(self) -> float:
        """Seconds until the deadline (negative once passed)."""
        return self.deadline - self.clock()

    def check(self, where: str) -> None:
        """Raise :class:`Stopped` when a stop was asked, :class:`DeadlineExceeded` when the
        deadline has passed; ``where`` says what was about to happen."""
        if self.stop is not None and self.stop.is_set():
            raise Stopped(f"{self.what}: stopped at {where}; the next run resumes")
        if self.left() <= 0:
            raise DeadlineExceeded(
                f"{where}: the run passed its deadline of {self.seconds:g} s "
                f"({DEADLINE_SETTING}) and was stopped; windows stored before are kept and "
                "the next run continues (a slow or endless API answer?)")

    def timeout(self, configured: float) -> float:
        """The configured HTTP timeout, cut to the time left (at least a tenth of a second)."""
        return max(0.1, min(configured, self.left()))

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a retry's backoff), waking at once on a stop."""
        if self.stop is not None:
            self.stop.wait(max(0.0, seconds))
        else:
            time.sleep(max(0.0, seconds))

    def call(self, function: Callable[[], T], where: str) -> T:
        """``function()`` in a daemon thread; returns its result or raises its exception.

        Raises Stopped or DeadlineExceeded (see :meth:`check`) as soon as either happens
        while waiting, leaving the thread to end on its own: ``function`` must not write.
        """
        self.check(where)
        done = threading.Event()
        outcome: dict[str, object] = {}

        def target() -> None:
            try:
                outcome["value"] = function()
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="spendwatch-http", daemon=True).start()
        while not done.wait(max(0.0, min(POLL_SECONDS, self.left()))):
            self.check(where)
        if "error" in outcome:
            # A call that failed once the deadline had passed (its HTTP timeout is cut to the
            # time left, so it times out as the deadline passes) was ended by the deadline:
            # said so, as when the wait itself is cut, not as a timeout to retry.
            if self.left() <= 0:
                self.check(where)
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]


def unbounded(what: str = "the run") -> RunBounds:
    """Bounds that never stop a call (for callers outside a collection run)."""
    return RunBounds(what, float("inf"))
