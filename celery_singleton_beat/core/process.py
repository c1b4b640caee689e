"""This process's id and owner name, read once and again in a forked child.

Hot paths (every task run, every lock) ask for them; reading them from the system each
time costs two system calls. A prefork worker's children are made with ``os.fork()``, whose
hook renews them in the child before any task runs.
"""

from __future__ import annotations

import os
import socket

_pid = 0
_owner = ""


def pid() -> int:
    """This process's id."""
    return _pid


def owner() -> str:
    """``host/pid`` of this process, as lock tokens name their owner."""
    return _owner


def _renew() -> None:
    global _pid, _owner  # noqa: PLW0603  (the process's own identity, renewed after a fork)
    _pid = os.getpid()
    _owner = f"{socket.gethostname()}/{_pid}"


_renew()
os.register_at_fork(after_in_child=_renew)
