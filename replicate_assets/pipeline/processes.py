"""Which process holds a claim or a pool slot, and whether it is still alive.

An identity is `host:pid:start`, where `start` is the process's start time in clock ticks (Linux), so a pid
reused by another process is not taken for the one that died. Liveness is only known on the same host.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> str:
    """Field 22 of /proc/PID/stat (the start time), or "" where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


@functools.lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def process_identity() -> str:
    """This process, as `host:pid:start`."""
    pid = os.getpid()
    return f"{_host()}:{pid}:{_start_ticks(pid)}"


def process_alive(identity: str | None) -> bool | None:
    """True or False for a process of this host; None when that cannot be told (another host, no identity)."""
    if not identity:
        return None
    parts = identity.rsplit(":", 2)
    if len(parts) != 3:
        return None
    host, pid_text, start = parts
    if host != _host() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if Path("/proc").is_dir():
        now = _start_ticks(pid)
        return bool(now) and (not start or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
