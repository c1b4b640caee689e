"""Each slot is sent through Celery's ``Scheduler.apply_entry``, and logged as Celery logs it.

Integrations hook ``celery.beat.Scheduler.apply_entry``: Sentry Crons wraps it to put its
monitor headers into the entry's options before the message is sent. So the scheduler
sends each slot through it::

    Scheduler._publish(plan, slot)
      └ self.apply_entry(entry)          Celery's, maybe wrapped (Sentry adds its headers)
          ├ "Scheduler: Sending due task …" on the ``celery.beat`` logger
          └ self.apply_async(entry)      this library's: the slot's task id and headers

While a slot is being sent, :class:`SlotContext` (a filter on the ``celery.beat`` logger)
puts the slot into Celery's "Sending due task" line and adds the fields ``entry``,
``slot``, ``task_id`` and ``replica`` to every record of that logger, for structured logs.

An error that stops beat is logged by Celery (``celery.apps.beat.Beat.start_scheduler``)
as a CRITICAL record with its traceback, then raised again; the interpreter prints the
traceback once more to ``sys.stderr``, which beat's logging has turned into a WARNING per
write (hundreds of fragments). :class:`StartFailure` makes that one record::

    Beat.start_scheduler: logger.critical("beat raised exception …", exc_info=True)
      └ StartFailure: a ConfigurationError ── one line, "singleton beat cannot start: …"
                      anything else        ── kept as Celery logs it, traceback included
    interpreter: sys.excepthook(the same error) ── nothing printed; the traceback of a
                      ConfigurationError logged at DEBUG
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from celery_singleton_beat.errors import ConfigurationError

#: Celery's own scheduler logger, where "Sending due task" lines are expected.
BEAT_LOGGER = "celery.beat"
SENDING_LINE = "Scheduler: Sending due task %s (%s)"
START_FAILED = "singleton beat cannot start: %s"

_sending: ContextVar[dict[str, Any] | None] = ContextVar("singleton_beat_sending", default=None)


class SlotContext(logging.Filter):
    """Adds the slot being sent to the records of the ``celery.beat`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _sending.get()
        if fields is None:
            return True
        for name, value in fields.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if record.msg == SENDING_LINE and isinstance(record.args, tuple):
            record.msg = f"{SENDING_LINE} for slot %s"
            record.args = (*record.args, fields["slot"])
        return True


class StartFailure(logging.Filter):
    """Makes the error that stops beat one record: one line for a ``ConfigurationError``
    (its message names the setting or entry, the bad value and the accepted form), its
    traceback at DEBUG; and no second copy on stderr for any error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.CRITICAL or not record.exc_info:
            return True
        error = record.exc_info[1]
        if error is None:
            return True
        ours = isinstance(error, ConfigurationError)
        if ours:
            record.msg, record.args = START_FAILED, (error,)
            record.exc_info, record.exc_text = None, None
        _logged_at_exit(error, traceback_at_debug=ours)
        return True


def _logged_at_exit(error: BaseException, traceback_at_debug: bool) -> None:
    """When ``error`` ends the process, the interpreter prints nothing more about it (it
    was logged); its traceback goes to the DEBUG log when ``traceback_at_debug``."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if value is not error:
            previous(kind, value, tb)
        elif traceback_at_debug:
            logging.getLogger(BEAT_LOGGER).debug(
                "singleton beat: where the error above was raised", exc_info=(kind, value, tb)
            )

    sys.excepthook = hook


def install() -> None:
    """Put the filters on the ``celery.beat`` logger, once per process."""
    beat_logger = logging.getLogger(BEAT_LOGGER)
    for kind in (SlotContext, StartFailure):
        if not any(isinstance(f, kind) for f in beat_logger.filters):
            beat_logger.addFilter(kind())


@contextlib.contextmanager
def sending(**fields: Any) -> Iterator[None]:
    """Records of the ``celery.beat`` logger inside carry ``fields``."""
    token = _sending.set(fields)
    try:
        yield
    finally:
        _sending.reset(token)
