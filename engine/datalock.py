"""Who holds a data folder: the engine keeps DATA/engine.lock (an flock) for its lifetime.

An flock ends with the process that holds it, so a killed engine leaves no
stale lock behind; readers (an auditor's replay) can ask whether an engine is
writing the folder without taking the lock from it.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

LOCK_FILE = "engine.lock"


def try_lock(path: Path) -> IO[str] | int:
    """The locked file, or the pid its holder wrote into it (0: unknown)."""
    # "a+": opening must not truncate the holder's pid before we know we hold it.
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        text = f.read().strip()
        f.close()
        return int(text) if text.isdigit() else 0
    return f


def engine_in_use(data_dir: Path) -> bool:
    """Whether an engine holds ``data_dir`` now (creates nothing, takes nothing)."""
    path = data_dir / LOCK_FILE
    try:
        f = open(path)
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
