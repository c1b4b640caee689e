"""What users test with too: real servers and Celery processes, a TCP proxy, a fake clock
and the pytest plugin.

Redis servers in :mod:`.servers`, etcd in :mod:`.etcd`, ZooKeeper in :mod:`.zookeeper`,
Celery processes in :mod:`.cluster`, the proxy that delays, black-holes or cuts in
:mod:`.proxy`, the clock in :mod:`.clock`, the plugin in :mod:`.pytest_plugin`.

The names below are imported on first use: the pytest plugin, loaded in every pytest run,
imports nothing it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery_singleton_beat.testing.clock import FakeClock
    from celery_singleton_beat.testing.cluster import CeleryCluster, Process, http_status, wait_for
    from celery_singleton_beat.testing.proxy import TcpProxy
    from celery_singleton_beat.testing.servers import (
        RedisClusterServers,
        RedisSentinel,
        RedisServer,
        SentinelGroup,
        SilentServer,
        TlsFiles,
        free_port,
        redis_cluster_servers,
        redis_server_binary,
        redis_servers,
        sentinel_group,
    )

_EXPORTS = {
    "FakeClock": "clock",
    "CeleryCluster": "cluster",
    "Process": "cluster",
    "wait_for": "cluster",
    "http_status": "cluster",
    "TcpProxy": "proxy",
    "RedisClusterServers": "servers",
    "RedisSentinel": "servers",
    "RedisServer": "servers",
    "SentinelGroup": "servers",
    "sentinel_group": "servers",
    "SilentServer": "servers",
    "TlsFiles": "servers",
    "free_port": "servers",
    "redis_cluster_servers": "servers",
    "redis_server_binary": "servers",
    "redis_servers": "servers",
}

__all__ = [
    "CeleryCluster",
    "FakeClock",
    "Process",
    "RedisClusterServers",
    "RedisSentinel",
    "RedisServer",
    "SentinelGroup",
    "SilentServer",
    "TcpProxy",
    "TlsFiles",
    "free_port",
    "http_status",
    "redis_cluster_servers",
    "redis_server_binary",
    "redis_servers",
    "sentinel_group",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
