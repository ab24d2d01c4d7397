"""Is a process alive? (The admin's `start`/`stop` and the server's recovery ask.)"""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """Does process `pid` exist and is it not a zombie? (A pid may have been reused: ask
    what the process is, too, before signalling it.)"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
