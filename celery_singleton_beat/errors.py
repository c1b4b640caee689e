"""Every error the library raises, under one root.

Each subclass carries the data a caller needs (the key, the nodes, their errors) and
builds a full sentence that says what went wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SingletonBeatError(Exception):
    """Root of every error raised by celery-singleton-beat."""


class ConfigurationError(SingletonBeatError, ValueError):
    """A setting or argument has a value the library cannot use.

    Raised at start-up, never later: the message names the setting, the bad value and
    the accepted form.
    """

    def __init__(self, name: str, value: object, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        super().__init__(f"{name} = {value!r} is not valid: {accepted}.")


class UnknownSetting(ConfigurationError):
    """A setting named like the library's (``singleton_beat_*``) that nothing reads.

    A misspelt name would leave the setting meant at its default without a word, so it
    is refused at start-up; ``meant`` is the setting it most probably stands for.
    """

    def __init__(self, name: str, value: object, meant: str | None, why: str = "") -> None:
        super().__init__(name, value, f"the name of a setting, such as {meant!r}" if meant
                         else "the name of a setting")  # fmt: skip
        self.meant = meant
        hint = (
            f"did you mean {meant!r}?"
            if meant
            else "the settings are listed on the configuration page"
        )
        self.args = (
            f"{name} is not a celery-singleton-beat setting (nothing reads it): {hint}"
            + (f" {why}" if why else ""),
        )


class SourceUnavailable(SingletonBeatError):
    """A schedule source (django-celery-beat's tables, the runtime schedule) did not answer
    a command or API call that must read it."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(
            f"the schedule source {source!r} cannot be read ({detail}). Check that it is "
            f"reachable from this host, then try again."
        )


class LockError(SingletonBeatError):
    """A lock operation could not be carried out."""


class StoreUnavailable(LockError):
    """The slot store (a majority of Redis masters, or the database) did not answer.

    Beat publishes nothing while it lasts, reports not ready, and retries by itself.
    """

    def __init__(self, store: str, what: str, detail: str) -> None:
        self.store = store
        self.what = what
        self.detail = detail
        super().__init__(
            f"{store} could not {what}: {detail}. Beat publishes nothing until it answers "
            f"again; check that it is running and reachable from this host."
        )


class QuorumUnavailable(StoreUnavailable):
    """Fewer than a majority of the lock's Redis masters answered.

    ``errors`` maps each unreachable node (``host:port``) to the error it gave. Nothing
    is left locked by the failed attempt: the attempt is released on every node.
    """

    def __init__(self, key: str, needed: int, total: int, errors: Mapping[str, str]) -> None:
        self.key = key
        self.needed = needed
        self.total = total
        self.errors = dict(errors)
        detail = "; ".join(f"{node}: {error}" for node, error in self.errors.items())
        self.store, self.what, self.detail = "Redis masters", key, detail
        LockError.__init__(
            self,
            f"lock {key!r}: only {total - len(self.errors)} of {total} Redis masters "
            f"answered, {needed} are needed for a majority ({detail}). Check that the "
            f"masters are running and reachable from this host.",
        )

    @property
    def nodes(self) -> list[str]:
        """The nodes that did not answer, as ``host:port``."""
        return list(self.errors)


class LockHeld(LockError):
    """The key is held by someone else (raised where ``None`` cannot be returned)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"lock {key!r} is held by another owner.")


class SchemaError(SingletonBeatError):
    """The library's tables in a database are missing, lack a column, or are at another
    version than this release's (the SQLAlchemy store and lock backend).

    Raised when the store or lock is made, before anything is scheduled: beat stops with
    it, naming the command that creates or upgrades the tables.
    """

    def __init__(
        self,
        database: str,
        found: int | None,
        wanted: int,
        command: str,
        lacking: Sequence[str] = (),
    ) -> None:
        self.database = database
        self.found = found
        self.wanted = wanted
        self.command = command
        self.lacking = list(lacking)
        if found is not None and found > wanted:
            what = (
                f"are at schema version {found}, newer than this release of "
                f"celery-singleton-beat knows (version {wanted}): install the release that "
                f"upgraded them on this host too"
            )
            super().__init__(f"The celery-singleton-beat tables in {database} {what}.")
            return
        if found is None and self.lacking:
            what = f"are missing ({', '.join(self.lacking[:4])}{', …' if len(lacking) > 4 else ''})"
        elif found is None:
            what = "have no version row"
        else:
            lacks = f", lacking {', '.join(self.lacking[:4])}" if self.lacking else ""
            what = f"are at schema version {found}{lacks}; this release needs version {wanted}"
        super().__init__(
            f"The celery-singleton-beat tables in {database} {what}. Run `{command}` to "
            f"create or upgrade them (or add celery_singleton_beat.connections.sqlalchemy."
            f"metadata to your project's Alembic migrations)."
        )
