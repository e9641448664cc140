"""The progress bar of long collections (a backfill), on a terminal only."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """A tqdm progress bar over one organization's windows (only on a terminal)."""

    def __init__(self, organization: str, total: int):
        from tqdm import tqdm
        self._bar = tqdm(total=total, desc=organization, unit="window",
                         disable=not sys.stderr.isatty() or total < 2, file=sys.stderr)

    def advance(self, window: Any) -> None:
        self._bar.set_postfix_str(f"{window.stream} {window.start:%Y-%m-%d}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
