"""``celery -A proj singleton-beat db …``: the SQLAlchemy store's tables, made or upgraded.

For a project without Alembic; with Alembic, its autogenerate takes them from
:data:`celery_singleton_beat.connections.sqlalchemy.metadata`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from celery_singleton_beat.errors import ConfigurationError, SchemaError
from celery_singleton_beat.settings.config import sqlalchemy_url

if TYPE_CHECKING:
    from celery import Celery


def _urls(app: Celery) -> list[str]:
    """The databases the library keeps tables in: the store's (``singleton_beat_sqlalchemy_url``,
    default ``beat_dburi``) and, when sqlalchemy-celery-beat's tables are the schedule source
    elsewhere, theirs (``beat_dburi``: its run counts are kept beside them)."""
    try:
        urls = [sqlalchemy_url(app.conf)]
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    source = app.conf.get("singleton_beat_schedule_source") or ()
    sources = [source] if isinstance(source, str) else list(source)
    dburi = app.conf.get("beat_dburi")
    if "sqlalchemy_celery_beat" in sources and dburi and dburi not in urls:
        urls.append(dburi)
    return urls


NO_EXTRA = (
    "the tables are the SQLAlchemy store's, which needs the [sqlalchemy] extra: "
    "pip install 'celery-singleton-beat[sqlalchemy]' (the Redis store needs no tables)"
)


@click.group(name="db")
def db() -> None:
    """The tables of the SQLAlchemy store, lock and schedule source."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create the tables, or upgrade them to this release's schema version."""
    try:
        import sqlalchemy as sa  # noqa: PLC0415  (the [sqlalchemy] extra)
    except ImportError:
        raise click.ClickException(NO_EXTRA) from None

    from celery_singleton_beat.connections.sqlalchemy import (  # noqa: PLC0415
        engine_for,
        url_text,
    )
    from celery_singleton_beat.connections.sqlalchemy import upgrade as upgraded  # noqa: PLC0415

    for url in _urls(ctx.obj.app):
        engine = engine_for(url)
        try:
            before, after, created = upgraded(engine)
        except SchemaError as exc:
            raise click.ClickException(str(exc)) from None
        except sa.exc.SQLAlchemyError as exc:
            raise click.ClickException(
                f"database {url_text(engine)}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            engine.dispose()
        if before is None and created:
            done = f"tables created at schema version {after}"
        elif before is None:
            done = f"tables found complete, stamped at schema version {after}"
        elif before < after:
            done = f"tables upgraded from schema version {before} to {after}"
        else:
            done = f"tables already at schema version {after}"
        click.echo(f"database {url_text(engine)}: {done}")
