"""The Django app's settings (``SINGLETON_BEAT_*`` in ``settings.py``), checked at start-up."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from typing import Any, NoReturn

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_FORM = "a duration such as '30d', '12h', '90m', '45s', '2w', or a number of seconds"


@dataclasses.dataclass(frozen=True)
class AppSettings:
    record: bool = True
    database: str = "default"
    recorder_buffer: int = 10_000
    result_max_chars: int = 2_000
    args_preview: Callable[[str, tuple[Any, ...], dict[str, Any]], str] | None = None
    retention: dt.timedelta | None = None
    ttl_warning: float = 0.8
    celery_app: str | None = None


def parse_duration(name: str, value: Any) -> dt.timedelta:
    """``'30d'``, ``'12h'``, ``3600`` or a timedelta; a clear error naming ``name`` otherwise."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION.match(value)):
        seconds = float(match[1]) * UNITS[match[2]]
    else:
        raise ImproperlyConfigured(f"{name} = {value!r} is not valid; expected {DURATION_FORM}")
    if seconds <= 0:
        raise ImproperlyConfigured(f"{name} = {value!r} must be longer than zero ({DURATION_FORM})")
    return dt.timedelta(seconds=seconds)


def load() -> AppSettings:
    """Read and check every ``SINGLETON_BEAT_*`` setting of this app."""
    defaults = AppSettings()
    record = _get("RECORD", defaults.record)
    if not isinstance(record, bool):
        _refuse("RECORD", record, "True or False")
    database = _get("DATABASE", defaults.database)
    if database not in django_settings.DATABASES:
        _refuse(
            "DATABASE",
            database,
            f"one of the DATABASES aliases {sorted(django_settings.DATABASES)}",
        )
    buffer = _get("RECORDER_BUFFER", defaults.recorder_buffer)
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 100:
        _refuse("RECORDER_BUFFER", buffer, "a whole number of records, at least 100")
    result_max = _get("RESULT_MAX_CHARS", defaults.result_max_chars)
    if isinstance(result_max, bool) or not isinstance(result_max, int) or result_max < 0:
        _refuse("RESULT_MAX_CHARS", result_max, "a whole number of characters >= 0")
    preview = _get("ARGS_PREVIEW", None)
    if isinstance(preview, str):
        try:
            preview = import_string(preview)
        except ImportError as exc:
            _refuse("ARGS_PREVIEW", preview, f"a dotted path to a function ({exc})")
    if preview is not None and not callable(preview):
        _refuse("ARGS_PREVIEW", preview, "a function (task_name, args, kwargs) -> str, or its path")
    retention = _get("RETENTION", None)
    warning = _get("TTL_WARNING", defaults.ttl_warning)
    if isinstance(warning, bool) or not isinstance(warning, (int, float)) or not 0 < warning <= 1:
        _refuse("TTL_WARNING", warning, "a fraction of the lock TTL between 0 and 1, such as 0.8")
    app_path = _get("CELERY_APP", None)
    if app_path is not None and (not isinstance(app_path, str) or not app_path.strip()):
        _refuse(
            "CELERY_APP",
            app_path,
            "the dotted path of the project's Celery app, such as 'proj.celery:app'",
        )
    return AppSettings(
        celery_app=app_path,
        record=record,
        database=database,
        recorder_buffer=buffer,
        result_max_chars=result_max,
        args_preview=preview,
        retention=None
        if retention is None
        else parse_duration("SINGLETON_BEAT_RETENTION", retention),
        ttl_warning=float(warning),
    )


def _get(name: str, default: Any) -> Any:
    """``SINGLETON_BEAT_<name>`` from the project's settings, or ``default``."""
    return getattr(django_settings, f"SINGLETON_BEAT_{name}", default)


def _refuse(name: str, value: Any, accepted: str) -> NoReturn:
    raise ImproperlyConfigured(
        f"SINGLETON_BEAT_{name} = {value!r} is not valid; expected {accepted}"
    )
