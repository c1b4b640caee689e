"""Choosing the database slot store from the app's settings."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.runtime import Runtime
from django_celery_singleton_beat.stores import DatabaseSlotStore


def app_with(**settings: object) -> Celery:
    app = Celery("database-store", broker="memory://")
    app.conf.update(singleton_beat_store="database", **settings)
    return app


def test_the_database_store_needs_no_redis_url_and_uses_the_alias_given() -> None:
    runtime = Runtime.of(app_with(singleton_beat_database="postgres"))
    store = runtime.store
    assert isinstance(store, DatabaseSlotStore)
    assert (store.using, runtime.config.redis_urls) == ("postgres", ())


def test_an_unknown_database_alias_is_refused_naming_the_setting() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"singleton_beat_database = 'nope' is not valid: an alias of settings.DATABASES",
    ):
        Runtime.of(app_with(singleton_beat_database="nope")).store  # noqa: B018


@pytest.mark.django_db(transaction=True)
def test_the_store_refuses_to_run_inside_a_transaction_on_its_own_alias() -> None:
    from django.db import transaction

    from celery_singleton_beat.errors import StoreUnavailable

    store = DatabaseSlotStore("default")
    with (
        transaction.atomic(using="default"),
        pytest.raises(StoreUnavailable, match=r"called inside a transaction on alias 'default'"),
    ):
        store.init([("e", None)], now=1_000)
