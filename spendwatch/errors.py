"""Errors a user can act on. Each carries one line that names the problem and the fix.

The CLI prints ``str(error)`` and exits with ``exit_code``; nothing here ever holds a secret.
"""

from __future__ import annotations


class SpendwatchError(Exception):
    """A problem the user can fix; its message is one line, safe to print and log."""

    exit_code = 1


class ConfigError(SpendwatchError):
    """The config file is missing, malformed, or names a secret that cannot be found."""

    exit_code = 2


class DatabaseBusy(SpendwatchError):
    """The DuckDB file stayed locked by another process past the retry deadline."""


class ConflictingWriters(SpendwatchError):
    """A write kept conflicting with other writers' transactions past its retries."""


class QueryTooLarge(SpendwatchError):
    """A query needed more memory than a reader may use ([storage] reader_memory_mb)."""


class DatabaseOutdated(SpendwatchError):
    """A reader found a warehouse an older spendwatch wrote, not migrated yet."""


class DatabaseTooNew(SpendwatchError):
    """A writer found a warehouse a newer spendwatch migrated: writing it with this version's
    code would leave what the newer one keeps (its daily sums) out of step."""


class DatabaseMissing(SpendwatchError):
    """A reader found no database file: nothing has been collected yet."""


class CollectionError(SpendwatchError):
    """Collecting one organization failed; nothing of the failed window was written."""


class AuthError(CollectionError):
    """The API refused the admin key (401/403): retrying cannot help."""


class CutUnreadable(CollectionError):
    """The key may not group by a cut's dimensions (people and products need Claude
    Enterprise): the cut is skipped, the run is not failed."""


class MalformedResponse(CollectionError):
    """The API answered with a page that does not have the documented shape."""


class ReportError(SpendwatchError):
    """A weekly report could not be written where it was asked to go."""
