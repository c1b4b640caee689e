"""A Redis Cluster as one member: redis-py finds its nodes and keeps its slot map, and each
shard's primary is spoken to like a master, on dedicated connections.

:class:`~celery_singleton_beat.connections.masters.Masters` splits a member's batch by the
hash slot of each command's key (:meth:`ClusterMember.route`), writes every shard's part
with the other members' batches, and reads all the replies in one round trip. Discovery
and the slot map come from redis-py's ``NodesManager`` (the part of
:class:`redis.cluster.RedisCluster` that asks a node for ``CLUSTER SLOTS`` and keeps the
answer); nothing here parses the cluster's topology.

The map follows the cluster:

- a ``MOVED`` reply moves its slot to the node it names at once, and the whole map is
  asked for again before the next round trip (a failover moves every slot of a shard);
- an ``ASK`` reply (a slot being migrated) sends the command to the node it names after
  ``ASKING``, without changing the map;
- a shard that cannot be reached, or a cluster that answers ``CLUSTERDOWN`` or
  ``TRYAGAIN``, fails the member's part of this round trip (the callers fail closed and
  try again) and has the map asked for again before the next one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from celery_singleton_beat._compat import (
    cluster_nodes_manager,
    cluster_slot_primaries,
    quiet_handshake,
)
from celery_singleton_beat.connections.resp import Command, command_key
from celery_singleton_beat.settings.urls import MasterURL, safe_url

Route = tuple[Any, list[int] | None]
"""A shard's primary (a ``Node``) and the positions in a batch of the commands it gets
(None: all of them)."""


class ClusterMember:
    """One Redis Cluster, named by the URL of any of its nodes with ``?cluster=true``.

    Each shard's primary is a ``Node`` made by ``make_node`` (``Node(master, timeout)``):
    the same dedicated connections, timeouts and replies as a standalone master.
    Thread-safe: the map is replaced whole, and one thread at a time asks for a new one.
    """

    def __init__(self, member: MasterURL, timeout: float, make_node: Any) -> None:
        self.master = member
        self.name = member.name
        self.url = member.url
        self.safe_url = member.safe_url
        self.label = f"Redis Cluster {member.safe_url}"
        """How the member is shown (the beat banner, ``repr``)."""
        self.timeout = timeout
        self._make_node = make_node
        options = member.options
        self._seed = (str(options.get("host", "localhost")), int(options.get("port", 6379)))
        self._options = {k: v for k, v in options.items() if k not in ("host", "port")}
        self._scheme = urlsplit(member.url).scheme
        self._nodes_manager: Any = None  # redis-py's NodesManager, once made
        self._shards: dict[str, Any] = {}  # "host:port" -> Node
        self._primaries: list[Any] = []  # hash slot -> Node (empty: never asked)
        self._stale = True
        self._refreshing = threading.Lock()

    # -- routing --------------------------------------------------------------------------

    def route(self, batch: Sequence[Command]) -> list[Route]:
        """Each shard's primary with the positions of its commands in ``batch``, in order
        (None: the whole batch, all on one shard).

        A command without a key (``TIME``) goes with the next command that has one (the
        master's clock beside the record it is compared with). Raises ``RedisError`` when
        the cluster's map cannot be had, or a slot has no primary.
        """
        primaries = self._map()
        if len(batch) == 1:  # a lock's command
            key = command_key(batch[0])
            node = primaries[key_slot(key)] if key is not None else None
            if node is not None:
                return [(node, None)]
        groups: dict[int, tuple[Any, list[int]]] = {}  # id(node) -> node, positions
        waiting: list[int] = []
        last: tuple[Any, list[int]] | None = None
        for position, command in enumerate(batch):
            key = command_key(command)
            if key is None:
                waiting.append(position)
                continue
            slot = key_slot(key)
            node = primaries[slot]
            if node is None:
                raise RedisConnectionError(f"no primary serves hash slot {slot} of {self.name}")
            last = groups.get(id(node))
            if last is None:
                last = groups[id(node)] = (node, [])
            last[1].extend(waiting)
            last[1].append(position)
            waiting = []
        if waiting:  # keyless commands at the end go with the last shard (any, if alone)
            if last is None:
                node = next(n for n in primaries if n is not None)
                last = groups[id(node)] = (node, [])
            last[1].extend(waiting)
        if len(groups) == 1:
            return [(next(iter(groups.values()))[0], None)]
        return list(groups.values())

    def shard(self, host: str, port: int) -> Any:
        """The ``Node`` of the primary at ``host:port`` (made on first use)."""
        name = f"{host}:{port}"
        node = self._shards.get(name)
        if node is None:
            url = f"{self._scheme}://{name}"
            node = self._make_node(
                MasterURL(url, name, {**self._options, "host": host, "port": port}), self.timeout
            )
            node.shard = True
            node = self._shards.setdefault(name, node)
        return node

    def moved(self, slot: int, host: str, port: int) -> None:
        """A ``MOVED`` reply: ``slot`` is served by ``host:port`` now; the rest of the map
        is asked for again before the next round trip."""
        primaries = list(self._primaries)
        if primaries:
            primaries[slot] = self.shard(host, port)
            self._primaries = primaries
        self._stale = True

    def ready(self) -> None:
        """Read the slot map now if it is due; an error is left for the next round trip."""
        with contextlib.suppress(RedisError):
            self._map()

    def stale(self) -> None:
        """The map may be out of date (a shard unreachable, the cluster down): ask again."""
        self._stale = True

    def _map(self) -> list[Any]:
        """The slot map, asked for first when stale (by this thread; another one uses the
        map as it is meanwhile, unless there is none yet)."""
        if (self._stale or not self._primaries) and self._refreshing.acquire(
            blocking=not self._primaries
        ):
            try:
                if self._stale or not self._primaries:
                    self._refresh()
            finally:
                self._refreshing.release()
        return self._primaries

    def _refresh(self) -> None:
        """Ask the cluster for its map (``CLUSTER SLOTS``, through redis-py)."""
        try:
            if self._nodes_manager is None:
                self._nodes_manager = cluster_nodes_manager(
                    *self._seed,
                    {
                        **self._options,
                        **quiet_handshake(),
                        "socket_timeout": self.timeout,
                        "socket_connect_timeout": self.timeout,
                        "retry": Retry(NoBackoff(), 0),
                    },
                )
            else:
                self._nodes_manager.initialize()
            found = cluster_slot_primaries(self._nodes_manager, REDIS_CLUSTER_HASH_SLOTS)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise RedisConnectionError(
                f"cannot read the slot map of {safe_url(self.url)}: {type(exc).__name__}: {exc}"
            ) from None
        shards = {address: self.shard(*address) for address in set(found) if address}
        self._primaries = [address and shards[address] for address in found]
        for name in set(self._shards) - {node.name for node in shards.values()}:
            self._shards.pop(name).close()
        self._stale = False

    def close(self) -> None:
        for node in list(self._shards.values()):
            node.close()
        self._shards.clear()
        self._primaries = []
        self._stale = True
        nodes_manager, self._nodes_manager = self._nodes_manager, None
        if nodes_manager is not None:
            nodes_manager.close()

    def __repr__(self) -> str:
        return f"<ClusterMember {self.safe_url}>"
