"""Each shim of ``celery_singleton_beat._compat`` works on the Celery, kombu and redis-py
this interpreter runs (the version matrix runs this file on every supported set)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

import kombu
import pytest
import redis
from celery import Celery
from celery.beat import BeatLazyFunc
from celery.concurrency.solo import TaskPool as SoloPool
from celery.schedules import crontab
from celery.worker.request import Request, create_request_cls
from redis.connection import Connection

from celery_singleton_beat import _compat
from celery_singleton_beat.locks import MemoryLock
from celery_singleton_beat.ops.cluster import cron_expression
from celery_singleton_beat.tasks import copies
from celery_singleton_beat.tasks.singleton import override_lock_backend
from celery_singleton_beat.testing import RedisClusterServers, RedisServer

KOMBU_HAS_BATCH = tuple(int(p) for p in kombu.__version__.split(".")[:2]) >= (5, 7)


@pytest.fixture
def server(redis_cluster: Callable[[int], list[RedisServer]]) -> RedisServer:
    return redis_cluster(1)[0]


def test_entry_arguments_have_their_lazy_functions_called() -> None:
    args = _compat.evaluate_entry_args([1, BeatLazyFunc(lambda: 2 + 3), "x"])
    kwargs = _compat.evaluate_entry_kwargs({"n": BeatLazyFunc(len, "abcd"), "plain": None})
    assert args == [1, 5, "x"]
    assert kwargs == {"n": 4, "plain": None}
    assert _compat.evaluate_entry_args(None) == []
    assert _compat.evaluate_entry_kwargs(None) == {}


def test_a_crontab_gives_back_its_five_fields_as_written() -> None:
    cron = crontab(minute="*/15", hour="9-17", day_of_month="1-7", day_of_week="mon-fri")
    assert _compat.cron_fields(cron) == ("*/15", "9-17", "1-7", "*", "mon-fri")
    assert cron_expression(crontab(minute=30, hour=2)) == "30 2 * * *"


def test_the_apps_made_in_the_process_and_the_current_one_are_found() -> None:
    app = Celery("compat-apps", broker="memory://", set_as_current=False)
    assert app in _compat.created_apps()
    app.set_current()
    assert _compat.current_app() is app


def test_a_producer_batch_publishes_at_its_end_where_kombu_has_batches(
    server: RedisServer,
) -> None:
    broker = f"redis://127.0.0.1:{server.port}/1"
    app = Celery("compat-batch", broker=broker, set_as_current=False)
    queue = redis.Redis.from_url(broker)
    try:
        with app.producer_or_acquire() as producer:
            with _compat.producer_batch(producer, max_size=10):
                for n in range(3):
                    app.send_task("t", args=(n,), producer=producer)
                inside = queue.llen("celery")
            after = queue.llen("celery")
    finally:
        queue.close()
    if KOMBU_HAS_BATCH:
        assert (inside, after) == (0, 3), "kombu >= 5.7: sent together at the end"
    else:
        assert (inside, after) == (3, 3), "older kombu: each message published at once"


def test_a_redis_url_gives_the_connection_options() -> None:
    options = _compat.parse_redis_url("redis://:secret@127.0.0.1:6390/2")
    assert (options["host"], options["port"], options["db"]) == ("127.0.0.1", 6390, 2)
    assert options["password"] == "secret"


def test_a_connections_socket_is_found_while_connected(server: RedisServer) -> None:
    connection = Connection(host="127.0.0.1", port=server.port, **_compat.quiet_handshake())
    assert _compat.connection_socket(connection) is None
    connection.connect()
    sock = _compat.connection_socket(connection)
    assert sock is not None
    assert sock.getpeername() == ("127.0.0.1", server.port)
    connection.disconnect()
    assert _compat.connection_socket(connection) is None


def test_the_quiet_handshake_options_connect_with_resp2(server: RedisServer) -> None:
    connection = Connection(host="127.0.0.1", port=server.port, **_compat.quiet_handshake())
    try:
        connection.send_command("CLIENT", "INFO")
        info = connection.read_response()
    finally:
        connection.disconnect()
    text = info.decode() if isinstance(info, bytes) else str(info)
    assert "resp=2" in text.split()


def test_solar_slots_need_no_private_celery_api() -> None:
    from celery.schedules import solar

    from celery_singleton_beat.core.slots import SolarSlots

    start = round(dt.datetime(2026, 3, 20, tzinfo=dt.timezone.utc).timestamp() * 1000)
    noon = SolarSlots(solar("solar_noon", 0.0, 0.0)).next_after(start)
    assert noon == round(
        dt.datetime(2026, 3, 20, 12, 7, 27, tzinfo=dt.timezone.utc).timestamp() * 1000
    )


def test_a_pools_connections_are_listed_idle_and_in_use(server: RedisServer) -> None:
    pool = redis.ConnectionPool(host="127.0.0.1", port=server.port)
    busy = pool.get_connection("PING") if redis.VERSION < (6,) else pool.get_connection()
    idle = pool.get_connection("PING") if redis.VERSION < (6,) else pool.get_connection()
    pool.release(idle)
    assert set(map(id, _compat.pool_connections(pool))) == {id(busy), id(idle)}
    assert _compat.pool_connections(None) == []
    pool.disconnect()


def received(app: Celery, task_id: str, headers: dict[str, str]) -> Any:
    """A message of ``compat.count`` as a worker receives it, through the in-memory broker."""
    app.send_task("compat.count", task_id=task_id, headers=headers, queue="compat")
    with app.connection() as conn:
        return conn.SimpleQueue("compat").get(timeout=5)


def test_a_worker_requests_context_gives_the_message_to_send_again() -> None:
    app = Celery("compat-context", broker="memory://", set_as_current=False)

    @app.task(name="compat.count", shared=False)
    def count() -> None: ...

    headers = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-06-21T02:00Z"}
    request = Request(received(app, "slot-1", headers), app=app, task=count)
    again = count.signature_from_request(
        _compat.request_context(request), request.args, request.kwargs, countdown=2
    )
    assert (again.options["task_id"], again.options["retries"]) == ("slot-1", 0)
    assert {k: again.options["headers"][k] for k in headers} == headers
    assert again.options["countdown"] == 2


def test_the_request_class_a_worker_makes_for_a_task_checks_its_slot_before_the_pool() -> None:
    """Celery's strategy subclasses a task's request class (``create_request_cls``) with an
    ``execute_using_pool`` of its own: the slot check wraps that one too."""
    app = Celery("compat-request", broker="memory://", set_as_current=False)
    runs: list[str] = []

    @app.task(name="compat.count", shared=False, bind=True)
    def task(self: Any) -> None:
        runs.append(self.request.id)

    pool = SoloPool()
    made = create_request_cls(copies.checking(Request), task, pool, "compat@host", None, app=app)
    headers = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-06-21T02:00Z"}
    previous = _compat.current_app()
    app.set_current()  # the pool process traces the task of the current app, as a worker's
    with override_lock_backend(MemoryLock()), contextlib.ExitStack() as restore:
        restore.callback(previous.set_current)
        made(received(app, "plain", {}), app=app, task=task).execute_using_pool(pool)
        made(received(app, "slot", headers), app=app, task=task).execute_using_pool(pool)
        copy = made(received(app, "slot", headers), app=app, task=task)
        with pytest.raises(copies.CopyDropped):
            copy.execute_using_pool(pool)
    assert runs == ["plain", "slot"]
    assert copy.acknowledged


def test_a_cluster_redirect_is_read_as_redis_py_s_cluster_errors() -> None:
    moved = _compat.redis_error("MOVED 3999 127.0.0.1:6381")
    assert isinstance(moved, redis.exceptions.MovedError)
    assert (moved.slot_id, moved.host, moved.port) == (3999, "127.0.0.1", 6381)
    ask = _compat.redis_error("ASK 12 10.0.0.2:7000")
    assert type(ask) is redis.exceptions.AskError
    assert (ask.slot_id, ask.host, ask.port) == (12, "10.0.0.2", 7000)
    assert isinstance(_compat.redis_error("CLUSTERDOWN The cluster is down"),
                      redis.exceptions.ClusterDownError)  # fmt: skip
    assert isinstance(_compat.redis_error("TRYAGAIN Multiple keys"), redis.exceptions.TryAgainError)


def test_a_clusters_slot_map_is_read_through_redis_py(
    shared_sharded_cluster: RedisClusterServers,
) -> None:
    seed = shared_sharded_cluster.nodes[0]
    manager = _compat.cluster_nodes_manager("127.0.0.1", seed.port, _compat.quiet_handshake())
    try:
        primaries = _compat.cluster_slot_primaries(manager, 16384)
    finally:
        manager.close()
    expected = {
        ("127.0.0.1", int(name.rpartition(":")[2])) for name in shared_sharded_cluster.topology()
    }
    assert set(primaries) == expected
    assert primaries[12182] == ("127.0.0.1", shared_sharded_cluster.primary_of("foo").port)
