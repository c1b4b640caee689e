"""The checks every setting and argument goes through: one place, one error.

Each refuses a bad value with :class:`~celery_singleton_beat.errors.ConfigurationError`
naming the setting (or argument), the value and the accepted form, so that beat, a
worker or a lock backend fails at start-up with a sentence that says what to write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery_singleton_beat.errors import ConfigurationError


def positive_seconds(name: str, value: Any) -> float:
    """``value`` as seconds when it is a positive number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(name, value, "a positive number of seconds")
    return float(value)


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ConfigurationError(name, value, "one of " + ", ".join(repr(c) for c in allowed))
    return str(value)


def port(name: str, value: Any) -> int | None:
    """``value`` when it is a TCP port number (0 to 65535) or None."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535
    ):
        raise ConfigurationError(
            name, value, "a TCP port number from 0 to 65535, or None to disable"
        )
    return value


def min_replicas(name: str, value: Any) -> int | None:
    """``value`` as a number of replicas (an integer >= 0), or None for ``"auto"``."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            name,
            value,
            "'auto' (as many replicas as each primary reports; the default) or a number of "
            "replicas >= 0 (0: a write counts without any replica's acknowledgement)",
        )
    return value
