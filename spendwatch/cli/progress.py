"""The progress of long collections (a backfill): a bar on a terminal, else a line every few
seconds (a log file, a CI job, the demo's output piped somewhere), so a long run is never
silent for long."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

#: Seconds between two progress lines when the output is not a terminal.
LINE_EVERY_SECONDS = 10.0


class ProgressBar:
    """A tqdm progress bar over one organization's windows on a terminal; elsewhere a line
    ``acme: 40 of 180 windows (usage 2026-10-12)`` every LINE_EVERY_SECONDS while it runs."""

    def __init__(self, organization: str, total: int, stream: TextIO | None = None,
                 every: float = LINE_EVERY_SECONDS):
        from tqdm import tqdm
        self._out = stream or sys.stderr
        self._organization, self._total, self._done, self._at = organization, total, 0, ""
        terminal = self._out.isatty()
        self._bar = tqdm(total=total, desc=organization, unit="window",
                         disable=not terminal or total < 2, file=self._out)
        self._stop = threading.Event()
        self._said = False  # a line was printed: the run is long enough to say where it ended
        self._lines: threading.Thread | None = None
        if not terminal and total >= 2:
            self._lines = threading.Thread(target=self._heartbeat, args=(every,),
                                           name="progress", daemon=True)
            self._lines.start()

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            self._line()
            self._said = True

    def _line(self) -> None:
        at = f" ({self._at})" if self._at else ""
        self._out.write(f"{self._organization}: {self._done} of {self._total} windows{at}\n")
        self._out.flush()

    def advance(self, window: Any) -> None:
        self._at = f"{window.stream} {window.start:%Y-%m-%d}"
        self._done += 1
        self._bar.set_postfix_str(self._at, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
        if self._lines is not None:
            self._stop.set()
            self._lines.join()
            if self._said:
                self._line()  # where it ended (a short run says nothing)
