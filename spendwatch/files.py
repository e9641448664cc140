"""Files spendwatch keeps private: the checks on what it reads, the modes of what it writes.

What it reads: the config file and every secret file (an admin key, a webhook URL, an SMTP
password, the dashboard's login secrets) must not be open to group or others, the way ssh
treats a private key: :func:`check_private` refuses such a file with one line ending in the
fix, ``chmod 600 PATH``.

What it writes: the database, its folder, report files and their folder are owner-only
(0600 files, 0700 folders) whatever the process's umask: :func:`private_folder` creates a
folder (and the parents it has to create) 0700, :func:`make_private` sets a file to 0600. A
folder that already existed keeps its mode: it is the user's.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from spendwatch.errors import ConfigError

#: Permission bits that open a file to its group or to others.
OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


def check_private(path: Path, what: str) -> None:
    """Raise ConfigError when ``path`` (``what`` it is, e.g. ``the admin key file``) can be
    read or written by its group or by others. A file that cannot be stat'ed is left to the
    reader that opens it next (its error says why)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and mode & OPEN_BITS:
        raise ConfigError(f"{what} {path} is open to group or others (mode "
                          f"{stat.S_IMODE(mode):04o}): it must be private; chmod 600 {path}")


def private_folder(folder: Path) -> Path:
    """``folder``, created with the parents it lacks, each new one 0700 (umask aside).
    Raises OSError as ``Path.mkdir`` does."""
    missing = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile: it is not ours to set
            continue
        os.chmod(new, 0o700)
    return folder


def is_private(path: Path) -> bool:
    """Whether ``path`` exists and is open to neither its group nor others."""
    try:
        return not path.stat().st_mode & OPEN_BITS
    except OSError:
        return False


def make_private(path: Path) -> None:
    """Take group and others' bits off ``path`` (0644 becomes 0600), when it exists."""
    try:
        mode = path.stat().st_mode
        if mode & OPEN_BITS:
            os.chmod(path, stat.S_IMODE(mode) & ~OPEN_BITS)
    except FileNotFoundError:
        pass
