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
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any


def canonical_key(name: str, func: Callable[..., Any], args: Any, kwargs: Any) -> str:
    """``name:sha256`` of the call's arguments, bound to ``func``'s signature."""
    try:
        arguments = _binder(func)(args, kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}: the arguments do not fit the task's signature: {exc}") from None
    text = _encode(arguments)
    return f"{name}:{hashlib.sha256(text.encode()).hexdigest()}"


def bound_arguments(func: Callable[..., Any], args: Any, kwargs: Any) -> dict[str, Any]:
    """Every parameter of ``func`` by name, as ``Signature.bind`` and ``apply_defaults``
    give them for this call; raises ``TypeError`` when the call does not fit."""
    return _binder(func)(args, kwargs)


@functools.lru_cache(maxsize=1024)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


_Binder = Callable[[Any, Any], dict[str, Any]]
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@functools.lru_cache(maxsize=1024)
def _binder(func: Callable[..., Any]) -> _Binder:
    """What ``Signature.bind`` and ``apply_defaults`` give, for one function.

    A signature of named parameters only (no ``*args``, ``**kwargs`` or positional-only
    ones), as most tasks have, binds with a few dict operations; a call that does not fit
    it (a missing, unknown or repeated argument) and every other signature go through
    ``Signature.bind``, which also words the error.
    """
    signature = _signature(func)
    parameters = signature.parameters.values()

    def bind(args: Any, kwargs: Any) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    if any(parameter.kind not in _NAMED for parameter in parameters):
        return bind
    positional = tuple(
        p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    names = frozenset(signature.parameters)
    count = len(names)

    def named(args: Any, kwargs: Any) -> dict[str, Any]:
        given = len(args)
        if given > len(positional) or not names.issuperset(kwargs):
            return bind(args, kwargs)  # too many, or unknown names: bind words the error
        if kwargs and given and not kwargs.keys().isdisjoint(positional[:given]):
            return bind(args, kwargs)  # one argument given twice
        arguments = {**defaults, **dict(zip(positional, args, strict=False)), **kwargs}
        return arguments if len(arguments) == count else bind(args, kwargs)  # one missing

    return named


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


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_plain)
"""What ``json.dumps(..., sort_keys=True, separators=(",", ":"), default=_plain)`` uses,
made once rather than per call."""


def _encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode`` as one call to CPython's C encoder, made once: the same text,
    without the Python layers that make a new C encoder for every call. Where there is
    no C encoder (another Python), ``_ENCODER.encode`` itself."""
    if c_make_encoder is None:  # pragma: no cover  (CPython has it)
        return _ENCODER.encode
    encoder = c_make_encoder(
        None,  # no circular check: no state kept between calls, so safe across threads
        _plain, encode_basestring_ascii, None, ":", ",", True, False, True,
    )  # fmt: skip

    def encode(value: Any) -> str:
        return "".join(encoder(value, 0))

    return encode


_encode = _encoder()
