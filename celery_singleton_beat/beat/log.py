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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

#: Celery's own scheduler logger, where "Sending due task" lines are expected.
BEAT_LOGGER = "celery.beat"
SENDING_LINE = "Scheduler: Sending due task %s (%s)"

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


def install() -> None:
    """Put the filter on the ``celery.beat`` logger, once per process."""
    beat_logger = logging.getLogger(BEAT_LOGGER)
    if not any(isinstance(f, SlotContext) for f in beat_logger.filters):
        beat_logger.addFilter(SlotContext())


@contextlib.contextmanager
def sending(**fields: Any) -> Iterator[None]:
    """Records of the ``celery.beat`` logger inside carry ``fields``."""
    token = _sending.set(fields)
    try:
        yield
    finally:
        _sending.reset(token)
