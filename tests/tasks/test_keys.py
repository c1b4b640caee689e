"""Lock keys: the same call gets the same key however its arguments are written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import inspect
import uuid
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.core.task_keys import bound_arguments, canonical_key
from celery_singleton_beat.errors import ConfigurationError


def charge(account: int, amount: float = 1.0, *, currency: str = "EUR", **extra: Any) -> None:
    """A stand-in task body."""


def key(*args: Any, **kwargs: Any) -> str:
    return canonical_key("billing.charge", charge, args, kwargs)


def test_positional_keyword_and_defaults_give_one_key() -> None:
    assert key(7) == key(account=7) == key(7, 1.0) == key(7, amount=1.0, currency="EUR")


def test_keyword_order_does_not_matter() -> None:
    assert key(7, currency="USD", note="x", ref=3) == key(7, ref=3, note="x", currency="USD")


def test_different_arguments_give_different_keys() -> None:
    assert len({key(7), key(8), key(7, 2.0), key(7, currency="USD"), key(7, note="x")}) == 5


def test_the_key_is_the_task_name_and_a_sha256() -> None:
    name, digest = key(7).split(":")
    assert name == "billing.charge"
    assert len(digest) == 64


def test_non_json_values_have_fixed_forms() -> None:
    @dataclasses.dataclass
    class Period:
        start: str

    when = dt.datetime(2026, 11, 24, 23, 0, tzinfo=dt.timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    values = [when, ident, decimal.Decimal("1.50"), b"\x00\xff", {3, 1, 2}, Period("q4")]
    assert key(values) == key(list(values))
    assert key(decimal.Decimal("1.5")) == key(decimal.Decimal("1.50"))
    assert key({1, 2, 3}) == key({3, 2, 1})
    assert key(when) != key(when.isoformat())


def test_an_argument_without_a_fixed_form_asks_for_a_key_of_ones_own() -> None:
    with pytest.raises(TypeError, match=r"cannot build a singleton key from a object argument"):
        key(object())


def test_arguments_that_do_not_fit_the_signature_are_named() -> None:
    with pytest.raises(TypeError, match=r"billing.charge: the arguments do not fit"):
        key()


def test_keys_stay_the_same_across_versions() -> None:
    """Workers of two versions side by side (a rolling deploy) must lock the same call
    on the same key: these are the keys every earlier version wrote."""
    assert key(7) == (
        "billing.charge:dc2ed03d6fbbe5f3b253b9bdc4016c86a4f2c27cc7a5df4bd341bba9b6993cf1"
    )
    assert key(7, 2.5, currency="USD") == (
        "billing.charge:6f92eb6fc1d4a73d0993d0c73cd1f8fa4f8716f955e84d4326f92eb9d84bcb6c"
    )
    assert canonical_key("billing.charge", named, (7,), {}) == (
        "billing.charge:dd65c10368f1809d7f23e4c6a5a673ab04cf53f05e12183662a9c5eb1d08b7f3"
    )
    assert canonical_key("billing.charge", named, ([dt.date(2026, 11, 29), {1, 2}],), {}) == (
        "billing.charge:6731d584fece72167a392bb66229af796928d303b1dc413b01b929458c6fffaf"
    )


def named(account: int, amount: float = 1.0, *, currency: str = "EUR") -> None:
    """A task body with named parameters only (bound without ``Signature.bind``)."""


def required(a: int, b: int, *, c: int, d: int = 4) -> None:
    """Named parameters, some of them required keywords."""


CALLS = [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1, 2), {"c": 3}),
    ((1,), {"b": 2, "c": 3}), ((), {"a": 1, "b": 2, "c": 3, "d": 5}), ((1, 2), {"a": 1, "c": 3}),
    ((1, 2), {"c": 3, "e": 5}), ((1,), {"c": 3}), ((1, 2), {"c": 3, "d": None}),
]  # fmt: skip


@pytest.mark.parametrize("func", [named, required, charge])
@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_arguments_bind_as_the_signature_binds_them(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Named-only signatures bind without ``Signature.bind``: same arguments, same errors."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        with pytest.raises(TypeError) as raised:
            bound_arguments(func, args, kwargs)
        assert str(raised.value) == str(exc)
        return
    bound.apply_defaults()
    assert bound_arguments(func, args, kwargs) == dict(bound.arguments)


@pytest.fixture
def app() -> Celery:
    app = Celery("keys", broker="memory://")
    app.conf.singleton_beat_redis_urls = ["redis://127.0.0.1:1/0"]
    return app


def test_template_and_callable_keys(app: Celery) -> None:
    @app.task(base=SingletonTask, singleton_key="sync:{account_id}", shared=False)
    def sync_account(account_id: int, full: bool = False) -> None: ...

    @app.task(base=SingletonTask, singleton_key=lambda args, kwargs: "nightly", shared=False)
    def nightly() -> None: ...

    assert sync_account.lock_key((42,), {}) == "task:sync:42"
    assert sync_account.lock_key((), {"account_id": 42, "full": True}) == "task:sync:42"
    assert nightly.lock_key((), {}) == "task:nightly"

    @app.task(base=SingletonTask, singleton_key="day:{day:%Y-%m-%d}", shared=False)
    def daily(day: dt.date) -> None: ...

    assert daily.lock_key((dt.date(2026, 11, 29),), {}) == "task:day:2026-11-29"


def test_a_template_naming_an_unknown_argument_fails_at_registration(app: Celery) -> None:
    with pytest.raises(ConfigurationError, match=r"singleton_key = 'sync:\{acount\}' is not valid: "
                       r"a template over the task's arguments \['account_id', 'full'\]; "
                       r"'acount' is not one of them"):  # fmt: skip

        @app.task(base=SingletonTask, singleton_key="sync:{acount}", shared=False, lazy=False)
        def sync_account(account_id: int, full: bool = False) -> None: ...


def test_a_bad_conflict_policy_fails_at_registration(app: Celery) -> None:
    with pytest.raises(ConfigurationError, match=r"singleton_on_conflict = 'wait' is not valid: "
                       r"one of 'skip', 'retry', 'raise'"):  # fmt: skip

        @app.task(base=SingletonTask, singleton_on_conflict="wait", shared=False, lazy=False)
        def job() -> None: ...


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("{account.__class__}", "{account.__class__}"),
        ("{account.__init__.__globals__[API_KEY]}", "{account.__init__.__globals__[API_KEY]}"),
        ("{account[0]}", "{account[0]}"),
        ("{account!r}", "{account!r}"),
        ("{}", "{}"),
        ("{0}", "{0}"),
    ],
)
def test_a_template_reaching_past_an_argument_fails_at_registration_naming_the_task(
    app: Celery, template: str, field: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:

        @app.task(base=SingletonTask, singleton_key=template, name="billing.sync", shared=False,
                  lazy=False)  # fmt: skip
        def sync(account: Any) -> None: ...

    assert raised.value.name == "billing.sync.singleton_key"
    assert raised.value.value == template
    assert str(raised.value) == (
        f"billing.sync.singleton_key = {template!r} is not valid: a template naming the task's "
        f"arguments as plain fields, such as 'sync:{{account_id}}' or 'day:{{day:%Y-%m-%d}}' "
        f"(no attribute or index access, no !r/!s/!a, no positional {{}}), or a callable "
        f"(args, kwargs) -> str for anything else; {field} is not a plain field."
    )
