"""A Sentinel-managed primary over TLS (the Sentinels too), as Celery's broker takes it:
``broker_use_ssl``'s form for the primary, ``sentinel_kwargs`` for the Sentinels."""

from __future__ import annotations

from pathlib import Path

from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.ops import cluster as overview
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.testing import RedisServer, TlsFiles, sentinel_group


def test_a_lock_on_a_sentinel_managed_primary_over_tls_follows_its_failover(
    tmp_path: Path,
) -> None:
    tls = TlsFiles.make(str(tmp_path))
    with sentinel_group(tls=tls) as group:
        lock = Redlock.from_urls(
            [group.url], transport_options=group.transport_options,
            use_ssl={"ssl_cert_reqs": "required", "ssl_ca_certs": tls.ca},
        )  # fmt: skip
        first = lock.acquire("report", ttl=30)
        primary = group.primary()
        primary.kill()
        promoted = group.wait_for_failover(primary)
        again = lock.acquire("report", ttl=30, wait=5)
        other = lock.acquire("invoice", ttl=30, wait=5)
        held = promoted.client().get("singleton-beat:lock:report")
    assert first is not None and other is not None
    assert again is None, "the lock the replica acknowledged is still held after the failover"
    assert held == first.token.encode()


def test_the_operators_probe_reaches_a_tls_master_with_the_tls_setting(tmp_path: Path) -> None:
    """``singleton-beat status`` and ``check`` probe each member with the TLS options of
    ``singleton_beat_redis_use_ssl`` (here: the certificate authority to trust)."""
    tls = TlsFiles.make(str(tmp_path))
    server = RedisServer(tls=tls).start()
    try:
        config = Config.from_conf(
            {
                "singleton_beat_redis_urls": [server.url],
                "singleton_beat_redis_use_ssl": {"ssl_ca_certs": tls.ca},
            }
        )
        (state,) = overview.master_states(config.members())
    finally:
        server.stop()
    assert (state.name, state.reachable, state.error) == (server.name, True, None)
