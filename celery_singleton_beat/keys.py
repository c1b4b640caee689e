"""Canonical lock keys from a task's arguments.

``f(1)``, ``f(a=1)`` and ``f(1, b=<default>)`` are the same call, so they get the same
key: the arguments are bound to the function's signature with defaults applied, written
as deterministic JSON (sorted keys; UUIDs, datetimes, Decimals, bytes and sets in fixed
forms) and hashed with SHA-256.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import json
import uuid
from collections.abc import Callable
from typing import Any


def canonical_key(name: str, func: Callable[..., Any], args: Any, kwargs: Any) -> str:
    """``name:sha256`` of the call's arguments, bound to ``func``'s signature."""
    try:
        bound = _signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}: the arguments do not fit the task's signature: {exc}") from None
    bound.apply_defaults()
    text = json.dumps(bound.arguments, sort_keys=True, separators=(",", ":"), default=_plain)
    return f"{name}:{hashlib.sha256(text.encode()).hexdigest()}"


@functools.lru_cache(maxsize=1024)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


def _plain(value: Any) -> Any:
    """A JSON-ready, deterministic stand-in for values JSON does not know."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return {"$dt": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value.normalize())}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(json.dumps(v, sort_keys=True, default=_plain) for v in value)}
    if isinstance(value, enum.Enum):
        return {"$enum": f"{type(value).__qualname__}.{value.name}"}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dataclass": type(value).__qualname__, **dataclasses.asdict(value)}
    raise TypeError(
        f"cannot build a singleton key from a {type(value).__qualname__} argument; "
        f"give the task a singleton_key template or callable"
    )
