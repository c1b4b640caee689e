"""Independent Redis masters, spoken to in one round trip.

:class:`Masters` writes a batch of commands to every master's socket first and only then
reads the replies, all against one deadline. A round trip over N masters therefore costs
about as much as a round trip to the slowest answering one, never N of them, and a master
that does not answer costs at most the per-node timeout (counted from the moment its
command was written).

Each master is a member of the settings: one server, or a Sentinel-managed primary (see
:mod:`.primary`, which checks what each new connection reached). A write the caller's
guarantee rests on is sent with ``durable=True``: ``WAIT`` follows it in the same batch,
and a master's replies count only once its replicas acknowledged them.

A member may be a Redis Cluster (:class:`~.cluster.ClusterMember`): its batch is split by
each command's hash slot to the shards' primaries, written with the others, and its
replies put back in the batch's order, in the same round trip.
"""

from __future__ import annotations

import functools
import hashlib
import select
import ssl
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from celery_singleton_beat._compat import connection_socket, quiet_handshake
from celery_singleton_beat.connections.cluster import ClusterMember
from celery_singleton_beat.connections.primary import NotPrimary, Replication, connection_class
from celery_singleton_beat.connections.resp import Command, only_integers, pack, parse_replies
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings import validate
from celery_singleton_beat.settings.urls import MasterURL, RedisOptions, master_urls

_HANDSHAKE = quiet_handshake()


class Node:
    """One Redis master: its address and a small pool of dedicated connections.

    Connections are made with redis-py's retries switched off and the socket timeouts set
    to the per-node timeout: a failure is reported at once so that the majority decides,
    instead of being retried for seconds. Each new connection's server is checked to be
    the member's primary before it is used (:class:`~.primary.Replication`).
    """

    #: A shard's primary in a Redis Cluster: its replies come back one per command, an
    #: error reply in its place, for the cluster to follow redirects (a master's batch
    #: fails whole at its first error reply).
    shard = False

    def __init__(self, master: MasterURL, timeout: float, min_replicas: int | None = None) -> None:
        options = dict(master.options)
        self.master = master
        self.name = master.name
        self.url = master.url
        self.safe_url = master.safe_url
        self.label = master.safe_url
        """How the master is shown (the beat banner, ``repr``)."""
        self.replication = Replication(master.name, min_replicas, timeout)
        self._connection_class, self._keep = connection_class(master, options, timeout)
        self._options = {
            **options,
            **_HANDSHAKE,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        #: Idle connections. ``list.append`` and ``list.pop`` are atomic (the GIL, or the
        #: list's own lock on a free-threaded build): no mutex on the hot path.
        self._idle: list[Any] = []

    def checkout(self) -> Any:
        """A connection for one round trip: an idle one still open, else a new one.

        An idle connection whose master restarted has its end-of-file waiting; it is
        dropped here rather than failing this round trip. Replies left unread by a
        :meth:`Masters.post` are read with the next round trip's.
        """
        return _checkout([self], _Watch())[0]

    def _take(self) -> Any:
        """An idle connection (not checked yet), else a new one."""
        try:
            return self._idle.pop()
        except IndexError:
            return self._new()

    def _new(self) -> Any:
        connection = self._connection_class(**self._options)
        connection.raw = None  # the socket, once connected (see _send)
        connection.fd = -1
        connection.plain = True  # not TLS: a single recv() empties the socket
        connection.scripts_loaded = 0
        connection.pending_preamble = 0
        connection.checked = False  # INFO replication goes with its first batch
        connection.checking = False  # the first reply of the preamble is that INFO's
        connection.unread = 0
        connection.inbox = bytearray()
        connection.parsed = []
        connection.arrays = []  # arrays being parsed: (items so far, length)
        return connection

    def checkin(self, connection: Any) -> None:
        """Return a connection whose replies were all read (or will be, see ``unread``)."""
        self._idle.append(connection)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()

    def __repr__(self) -> str:
        return f"<Node {self.safe_url}>"


Member = Node | ClusterMember
"""One member of the majority: a master, or a Redis Cluster."""

#: How many redirects (``MOVED``, ``ASK``) one command follows in one call.
MAX_REDIRECTS = 5


def parse_masters(
    urls: Iterable[str] | str,
    timeout: float,
    options: RedisOptions | None = None,
    min_replicas: int | None = None,
) -> list[Member]:
    """Build the members for ``urls``, refusing an empty list, bad URLs and duplicates (see
    :func:`~celery_singleton_beat.settings.urls.master_urls`). A Redis Cluster's shards are
    masters of their own, each with its replicas (``min_replicas``)."""
    return [
        ClusterMember(master, timeout, partial(Node, min_replicas=min_replicas))
        if master.cluster
        else Node(master, timeout, min_replicas)
        for master in master_urls(urls, options)
    ]


class Masters:
    """A fixed set of independent Redis masters (or Redis Clusters) and their majority."""

    def __init__(self, nodes: Sequence[Member], timeout: float) -> None:
        self.nodes = list(nodes)
        self.clustered = any(isinstance(node, ClusterMember) for node in self.nodes)
        """Whether a member is a Redis Cluster: its keys carry hash tags."""
        self._masters = [node for node in self.nodes if isinstance(node, Node)]
        self.timeout = timeout
        self.quorum = len(self.nodes) // 2 + 1
        self._scripts: list[bytes] = []
        self._watches: list[_Watch] = []  # kept between round trips (see _Watch)

    def ready(self) -> None:
        """Read the slot map of each Redis Cluster now if it is due (first use, after a
        failover), so that a caller timing its round trip (a lock's validity) does not
        count it; a cluster that cannot be read fails the round trip that follows."""
        for node in self.nodes:
            if isinstance(node, ClusterMember):
                node.ready()

    def one_slot(self, *keys: str) -> bool:
        """Whether a script may touch ``keys`` together: always on masters; on a Redis
        Cluster only when they are in one hash slot."""
        if not self.clustered:
            return True
        return len({key_slot(key.encode()) for key in keys}) == 1

    def script(self, body: str) -> str:
        """Register a Lua script; returns the SHA1 to call it by with ``EVALSHA``.

        Each connection loads the registered scripts with its first command (pipelined,
        no extra round trip), so ``EVALSHA`` works on masters that restarted empty.
        """
        data = body.encode()
        if data not in self._scripts:
            self._scripts.append(data)
        return hashlib.sha1(data).hexdigest()

    @classmethod
    def from_urls(
        cls,
        urls: Iterable[str] | str,
        timeout: float,
        *,
        options: RedisOptions | None = None,
        min_replicas: Any = None,
    ) -> Masters:
        """Masters for ``urls``; ``options`` say how Sentinel members are reached and TLS,
        ``min_replicas`` how many replicas acknowledge a durable write on each (None or
        ``"auto"``: as many as each primary reports)."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(
                "node_timeout", timeout, "a positive number of seconds, such as 0.05"
            )
        replicas = validate.min_replicas(
            "min_replicas", "auto" if min_replicas is None else min_replicas
        )
        return cls(parse_masters(urls, float(timeout), options, replicas), float(timeout))

    def broadcast(
        self, commands: Sequence[Command], *, durable: bool = False
    ) -> list[list[Any] | Exception]:
        """Send the same ``commands`` (pipelined) to every master in one round trip.

        Returns one entry per node, in order: the list of replies, or the exception that
        node gave (connection refused, timeout, a ``ResponseError`` from a script).

        ``durable``: writes the caller's guarantee rests on. ``WAIT`` for the master's
        replicas follows them in the same batch, and a master whose replicas did not
        acknowledge them in time gives :class:`~.primary.NotReplicated` instead of its
        replies, as a master that did not answer (its writes may be lost on failover).
        """
        if durable and self.clustered:
            return self._scatter_routed([commands] * len(self.nodes), durable=True)
        if durable:
            return self._durable(self._masters, [commands] * len(self._masters))
        return self.scatter([commands] * len(self.nodes))

    def _durable(
        self, nodes: Sequence[Node], batches: Sequence[Sequence[Command]]
    ) -> list[list[Any] | Exception]:
        """One round trip of writes to ``nodes`` (masters, or a Redis Cluster's shard
        primaries) with each one's replicas' acknowledgement (see :meth:`broadcast`).

        A master that no connection reached yet, or that failed last time (its primary
        may have moved), is asked first (``PING``; a new connection's check learns which
        primary it is and how many replicas to wait for), so that the writes ask for the
        right number; one that does not answer is left out, with its error. A master that
        learned a higher number during the round trip did not ask for enough: its writes
        do not count this time.
        """
        unreached: dict[int, Exception] = {}
        unsure = [node.replication.unsure for node in nodes]
        if any(unsure):
            probed = self.exchange(nodes, [[("PING",)] if u else [] for u in unsure])
            unreached = {i: r for i, r in enumerate(probed) if isinstance(r, Exception)}
        needs = [node.replication.need or 0 for node in nodes]
        waited: dict[tuple[int, int], list[Command]] = {}  # one list per batch and count:
        sent: list[Sequence[Command]] = []  # a broadcast is still packed once
        for index, (node, need, batch) in enumerate(zip(nodes, needs, batches)):  # noqa: B905
            if index in unreached:
                sent.append([])
            elif need:
                wait = node_wait(need, node.replication.wait_ms)
                sent.append(waited.setdefault((id(batch), need), [*batch, wait]))
            else:
                sent.append(batch)
        results = self.exchange(nodes, sent)
        for index, (node, need, result) in enumerate(zip(nodes, needs, results)):  # noqa: B905
            if index in unreached:
                results[index] = unreached[index]
            elif isinstance(result, list) and result:
                failure = node.replication.judge(_acknowledged(result.pop()) if need else 0)
                if failure is not None:
                    results[index] = failure
            elif need and isinstance(result, Unanswered) and result.received >= len(batches[index]):
                results[index] = node.replication.judge(None) or result
            node.replication.unsure = isinstance(results[index], Exception)
        return results

    def post(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` to every master without waiting for the replies.

        For writes whose outcome the caller does not need (releasing a lock at the end of
        a task): it saves the wait of a round trip. The replies are read with each
        connection's next round trip; a master that cannot be written to is skipped. A
        master without an open connection is written to with a round trip: its new
        connection's server is checked first (see :meth:`_preamble`).
        """
        if self.clustered:
            routed = _routes(self.nodes, [commands] * len(self.nodes))
            for node, part in zip(routed.targets, routed.parts, strict=True):
                self._post([node], part)
            return
        self._post(self._masters, commands)

    def _post(self, nodes: Sequence[Node], commands: Sequence[Command]) -> None:
        count = len(commands)
        data = commands[0] if count == 1 and type(commands[0]) is bytes else pack(commands)
        scripts = len(self._scripts)
        try:  # self._watch(), without its call
            watch = self._watches.pop()
        except IndexError:
            watch = _Watch()
        connections = _checkout(nodes, watch)
        unconnected = []
        for index, (node, connection) in enumerate(zip(nodes, connections)):  # noqa: B905
            if connection.raw is None:  # a new connection is checked first: a round trip
                node._idle.append(connection)
                unconnected.append(index)
                continue
            preamble = self._preamble(connection) if connection.scripts_loaded != scripts else None
            try:
                _send(connection, preamble, data)
            except (RedisError, OSError):
                watch.drop(connection.fd)
                _discard(connection)
                continue
            connection.unread += connection.pending_preamble + count
            connection.pending_preamble = 0
            node._idle.append(connection)
        self._watches.append(watch)
        if unconnected:
            self.exchange(nodes, [commands if i in unconnected else [] for i in range(len(nodes))])

    def scatter(self, batches: Sequence[Sequence[Command]]) -> list[list[Any] | Exception]:
        """Like :meth:`broadcast` with one batch per node; an empty batch skips its node.

        One ``poll()`` object serves the round trip: it checks the idle connections for a
        hang-up, then waits for the replies.
        """
        if self.clustered:
            return self._scatter_routed(batches)
        return self.exchange(self._masters, batches)

    def exchange(
        self, nodes: Sequence[Node], batches: Sequence[Sequence[Command]]
    ) -> list[list[Any] | Exception]:
        """One round trip: ``batches[i]`` to ``nodes[i]`` (masters, or a Redis Cluster's
        shard primaries), every write before any read; what every other call is made of."""
        watch = self._watch()
        results: list[Any]
        used: Sequence[int]
        if all(batches):
            used, results = range(len(nodes)), [None] * len(nodes)
            checked = _checkout(nodes, watch)
        else:
            used = [index for index, batch in enumerate(batches) if batch]
            results = [[] for _ in nodes]
            checked = _checkout([nodes[index] for index in used], watch)
        waiting: dict[int, tuple[int, Any, int]] = {}  # fd -> node index, connection, replies
        deadlines: dict[int, float] = {}  # fd -> when its master has been silent too long
        # a master's timeout counts from a moment at or before its command was written:
        # the clock is read after each batch is encoded, and again after a write that had
        # to connect first or to wait for room in the socket buffer
        now = 0.0
        scripts = len(self._scripts)
        last: Sequence[Command] | None = None
        data = b""
        for index, connection in zip(used, checked):  # noqa: B905  (same length; zip(strict=) costs a keyword call)
            batch = batches[index]
            if batch is not last:  # a broadcast packs its batch once
                data, last = pack(batch), batch
                now = time.monotonic()  # encoding thousands of commands takes a while
            sock = connection.raw
            fresh = sock is None
            try:
                if fresh or connection.scripts_loaded != scripts:
                    _send(connection, self._preamble(connection), data)
                    now = time.monotonic()
                else:  # _send's common case, without its call
                    try:
                        done = sock.send(data)
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        done = 0
                    if done < len(data):
                        _send(connection, None, data[done:])
                        now = time.monotonic()
            except (RedisError, OSError) as exc:
                if not fresh:
                    watch.drop(connection.fd)
                _discard(connection)
                results[index] = exc if isinstance(exc, RedisError) else _write_error(exc)
                continue
            if fresh:  # the others are registered by the hang-up check
                watch.add(connection.fd)
            waiting[connection.fd] = (index, connection, len(batch))
            deadlines[connection.fd] = now + self.timeout
        if waiting:
            _wait(nodes, watch, waiting, deadlines, results, self.timeout)
        self._watches.append(watch)
        return results

    def _scatter_routed(
        self, batches: Sequence[Sequence[Command]], *, durable: bool = False
    ) -> list[list[Any] | Exception]:
        """:meth:`scatter` with Redis Clusters among the members: each cluster's batch split
        by hash slot over its shards' primaries, all in one round trip; then the redirects
        followed (one more round trip, only after a ``MOVED`` or an ``ASK``). ``durable``
        writes wait for each shard's replicas, as for a master (see :meth:`broadcast`)."""
        routed = _routes(self.nodes, batches)
        exchange = self._durable if durable else self.exchange
        replies = exchange(routed.targets, routed.parts) if routed.targets else []
        results = routed.results
        members = self.nodes
        gathered: dict[int, list[Any]] = {}
        for (index, positions), node, reply in zip(
            routed.places, routed.targets, replies, strict=True
        ):
            if members[index] is node:  # a master
                results[index] = reply
            elif isinstance(reply, Exception):
                cast_member(members[index]).stale()
                if results[index] is None:
                    results[index] = _from_shard(node, reply)
            elif positions is None:  # the cluster's whole batch, on one shard
                gathered[index] = reply
            else:
                into = gathered.setdefault(index, [None] * len(batches[index]))
                for position, value in zip(positions, reply, strict=True):
                    into[position] = value
        for index, answers in gathered.items():
            if results[index] is None:
                member = cast_member(self.nodes[index])
                results[index] = self._settle(member, batches[index], answers, durable)
        return results

    def _settle(
        self, member: ClusterMember, batch: Sequence[Command], answers: list[Any], durable: bool
    ) -> list[Any] | Exception:
        """A cluster's replies in order once its redirects are followed, or its first error.

        ``MOVED`` moves the slot in the member's map and sends the command there; ``ASK``
        sends it to the node named, after ``ASKING``, leaving the map as it is. Either is
        followed at most :data:`MAX_REDIRECTS` times.
        """
        for _ in range(MAX_REDIRECTS):
            sends = _redirects(member, batch, answers)
            if isinstance(sends, Exception):
                return sends
            if not sends:
                break
            exchange = self._durable if durable else self.exchange
            replies = exchange([node for node, _, _ in sends], [c for _, c, _ in sends])
            for (node, _, positions), reply in zip(sends, replies, strict=True):
                if isinstance(reply, Exception):
                    member.stale()
                    return _from_shard(node, reply)
                for at, value in zip(positions, reply, strict=True):
                    if at is not None:
                        answers[at] = value
        failure = next((a for a in answers if isinstance(a, Exception)), None)
        if failure is None:
            return answers
        if isinstance(failure, (AskError, ClusterDownError, TryAgainError)):
            member.stale()
        return failure

    def _watch(self) -> _Watch:
        """A kept ``poll()`` object (``list.pop`` is atomic), else a new one."""
        try:
            return self._watches.pop()
        except IndexError:
            return _Watch()

    def _preamble(self, connection: Any) -> list[bytes]:
        """What goes before a connection's batch: on a new connection ``INFO replication``
        (is it the primary? see :class:`~.primary.Replication`), then ``SCRIPT LOAD`` for
        the scripts it has not loaded yet."""
        parts = []
        if not connection.checked:
            connection.checked = connection.checking = True
            connection.pending_preamble += 1
            parts.append(_INFO)
        loaded = connection.scripts_loaded
        if loaded != len(self._scripts):
            connection.scripts_loaded = len(self._scripts)
            connection.pending_preamble += len(self._scripts) - loaded
            parts.append(pack([("SCRIPT", "LOAD", body) for body in self._scripts[loaded:]]))
        return parts

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class _Routes(NamedTuple):
    """A round trip's writes with Redis Clusters among the members."""

    targets: list[Node]
    """The masters and shard primaries written to, in order."""
    parts: list[Sequence[Command]]
    """What each target gets."""
    places: list[tuple[int, list[int] | None]]
    """Each target's member, and the positions of its commands in that member's batch
    (None: the whole batch)."""
    results: list[Any]
    """Each member's result known before the round trip (an empty batch, a cluster whose
    map could not be had), else None."""


def _routes(members: Sequence[Member], batches: Sequence[Sequence[Command]]) -> _Routes:
    """Split each cluster's batch over its shards' primaries (see ClusterMember.route)."""
    routes = _Routes([], [], [], [None] * len(members))
    for index, (member, batch) in enumerate(zip(members, batches, strict=True)):
        if not batch:
            routes.results[index] = []
        elif isinstance(member, ClusterMember):
            try:
                shards = member.route(batch)
            except RedisError as exc:
                routes.results[index] = exc
                continue
            for node, positions in shards:
                routes.targets.append(node)
                routes.parts.append(
                    batch if positions is None else [batch[position] for position in positions]
                )
                routes.places.append((index, positions))
        else:
            routes.targets.append(member)
            routes.parts.append(batch)
            routes.places.append((index, None))
    return routes


_Redirect = tuple[Node, list[Command], list[int | None]]
"""A node, the commands redirected to it, and each one's position (None: ``ASKING``)."""


def _redirects(
    member: ClusterMember, batch: Sequence[Command], answers: list[Any]
) -> list[_Redirect] | Exception:
    """Where the commands answered with ``MOVED`` or ``ASK`` go now (``MOVED`` also moves
    the slot in the member's map); an error when a redirect names no host."""
    sends: dict[int, _Redirect] = {}
    for position, error in enumerate(answers):
        if not isinstance(error, AskError):  # MovedError is an AskError
            continue
        if not error.host:
            member.stale()
            return error
        node = member.shard(error.host, error.port)
        _, commands, positions = sends.setdefault(id(node), (node, [], []))
        if isinstance(error, MovedError):
            if error.slot_id is not None:
                member.moved(error.slot_id, error.host, error.port)
        else:
            commands.append(("ASKING",))
            positions.append(None)
        commands.append(batch[position])
        positions.append(position)
    return list(sends.values())


def cast_member(member: Member) -> ClusterMember:
    assert isinstance(member, ClusterMember)
    return member


def _from_shard(node: Node, error: Exception) -> Exception:
    """A shard's connection error, naming the shard."""
    if type(error) in (RedisConnectionError, RedisTimeoutError):
        return type(error)(f"{node.name}: {error}")
    return error


def _acknowledged(reply: Any) -> int | None:
    """A ``WAIT`` reply: how many replicas acknowledged (None: an error came instead)."""
    return reply if type(reply) is int else None


@functools.cache
def node_wait(replicas: int, timeout_ms: int) -> bytes:
    """``WAIT replicas timeout_ms`` in RESP: sent after a durable write, in its batch."""
    return pack([("WAIT", replicas, timeout_ms)])


def _send(connection: Any, preamble: list[bytes] | None, data: bytes) -> None:
    """Write ``preamble`` and ``data`` to ``connection``, connecting it first if needed.

    The socket is non-blocking once connected: a write that fits the socket buffer (every
    lock command does) is one system call, where a socket with a timeout polls before
    each send and each receive.
    """
    sock = connection.raw
    if sock is None:
        connection.connect()  # redis-py's connect and handshake, with their errors
        sock = connection_socket(connection)
        if sock is None:  # pragma: no cover  (connect either sets a socket or raises)
            raise RedisConnectionError("not connected")
        sock.setblocking(False)
        connection.raw = sock
        connection.fd = sock.fileno()
        connection.plain = not isinstance(sock, ssl.SSLSocket)
    if preamble:
        data = b"".join([*preamble, data])
    try:
        try:
            done = sock.send(data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            done = 0
        if done < len(data):  # a full socket buffer: finish with the node timeout
            sock.settimeout(connection.socket_timeout)
            try:
                sock.sendall(data[done:])
            finally:
                sock.setblocking(False)
    except OSError as exc:
        raise _write_error(exc) from None


def _write_error(exc: OSError) -> RedisError:
    """redis-py's error for a failed write."""
    if isinstance(exc, TimeoutError):
        return RedisTimeoutError("Timeout writing to socket")
    return RedisConnectionError(
        f"Error {exc.errno} while writing to socket. {exc.strerror or exc}."
    )


def _receive(connection: Any) -> bool:
    """Move the bytes waiting on ``connection`` into its inbox; False at end-of-file."""
    sock = connection.raw
    if sock is None:
        return False
    try:
        data = sock.recv(65536)
        while not connection.plain and sock.pending():
            data += sock.recv(sock.pending())
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return True
    if not data:
        return False
    connection.inbox += data
    return True


def _still_open(connection: Any) -> bool:
    """Whether an idle connection can take a command: no end-of-file or garbage waiting.

    The replies of posted commands that already arrived are read and dropped; those still
    on their way are left for the next round trip to read first.
    """
    if connection.raw is None:
        return True  # never connected: it connects on first use
    try:
        if not _receive(connection):
            return False
        if connection.inbox and not _receive(connection):  # data, then end-of-file
            return False
        parse_replies(connection)
    except (RedisError, OSError):
        return False
    return _drop_posted(connection)


def _read_posted(connection: Any) -> bool:
    """Read and drop the replies of posted commands that have arrived, as :func:`_still_open`
    does, for a connection ``poll()`` found readable and not hung up: the round trip about
    to use it then waits for its own reply alone, not first for those."""
    try:
        data = connection.raw.recv(65536)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return True
    except OSError:
        return False
    if not data:
        return False
    if not (connection.parsed or connection.inbox or connection.arrays) and only_integers(
        data, connection.unread
    ):  # every posted command answered, each with one integer (a release)
        connection.unread = 0
        return True
    connection.inbox += data
    try:
        parse_replies(connection)
    except RedisError:
        return False
    return _drop_posted(connection)


def _drop_posted(connection: Any) -> bool:
    """Drop the parsed replies of posted commands; whether nothing else was waiting."""
    dropped = min(connection.unread, len(connection.parsed))
    del connection.parsed[:dropped]
    connection.unread -= dropped
    return not connection.parsed and (
        connection.unread > 0 or not (connection.inbox or connection.arrays)
    )


#: poll() flags of a connection its master closed or reset. POLLRDHUP (Linux only) is
#: raised even while replies are still waiting ahead of the end-of-file; without it each
#: idle connection is checked by reading (see _still_open).
_RDHUP: int = getattr(select, "POLLRDHUP", 0)
_HUNG_UP = _RDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


#: poll() flags a round trip watches: replies, and a hang-up (see _closed).
_WATCHED = select.POLLIN | _RDHUP


class _Watch:
    """A ``poll()`` object and the descriptors registered with it, kept for the next round
    trip: the connections a thread checks in come back to it, already registered.

    A descriptor left from an earlier round trip (its connection closed, or taken by
    another thread) is forgotten when it reports an event that is not this round trip's.
    """

    __slots__ = ("fds", "poller")

    def __init__(self) -> None:
        self.poller = select.poll()
        self.fds: set[int] = set()

    def add(self, fd: int) -> None:
        self.poller.register(fd, _WATCHED)
        self.fds.add(fd)

    def drop(self, fd: int) -> None:
        """Stop watching a descriptor of this round trip (its connection is closing)."""
        if fd in self.fds:
            self.poller.unregister(fd)
            self.fds.discard(fd)

    def forget(self, fd: int) -> None:
        """Stop watching a descriptor that is not this round trip's."""
        self.drop(fd)


def _checkout(nodes: Sequence[Node], watch: _Watch) -> list[Any]:
    """A connection per node for one round trip: idle ones that are still open (checked
    together, with one ``poll()`` where the system reports a peer's hang-up), else new.

    The connected ones stay registered with ``watch``, for the replies."""
    chosen = []
    for node in nodes:  # Node._take, without a call per node
        try:
            chosen.append(node._idle.pop())
        except IndexError:
            chosen.append(node._new())
    closed = _closed(chosen, watch)
    while closed:
        for index in closed:
            _discard(chosen[index])
            chosen[index] = nodes[index]._take()
        closed = _closed(chosen, watch)
    return chosen


def _closed(connections: list[Any], watch: _Watch) -> list[int]:
    """The indexes of the connections that cannot take a command (see :func:`_still_open`)."""
    closed = []
    polled: dict[int, int] = {}
    watched = watch.fds
    for index, connection in enumerate(connections):
        if connection.raw is None:
            continue  # never connected: it connects on first use
        if connection.fd not in watched:
            watch.add(connection.fd)
        if _RDHUP and connection.plain and not (connection.inbox or connection.arrays):
            polled[connection.fd] = index
        elif not _still_open(connection):
            closed.append(index)
    if polled:
        for fd, flags in watch.poller.poll(0):
            index = polled.get(fd, -1)
            if index < 0:
                watch.forget(fd)
                continue
            connection = connections[index]
            readable = _read_posted if connection.unread else _still_open
            if flags & _HUNG_UP or not readable(connection):
                closed.append(index)  # hung up, or bytes nobody asked for
    for index in closed:
        watch.drop(connections[index].fd)
    return closed


def _wait(  # noqa: PLR0917  (Masters.exchange's state, handed to its second half)
    nodes: Sequence[Node], watch: _Watch, waiting: dict[int, tuple[int, Any, int]],
    deadlines: dict[int, float], results: list[Any], timeout: float,
) -> None:  # fmt: skip
    """Read the replies of the masters ``waiting`` into ``results``, until each answered
    or was silent past its deadline.

    A master that sent bytes has ``timeout`` again from them, and the time spent reading
    the others' replies is no master's silence.
    """
    poller = watch.poller
    now = time.monotonic()
    while waiting:
        left = min(deadlines.values()) - now
        events = poller.poll(left * 1000 if left > 0 else 0)
        polled = time.monotonic()
        progressed = []
        for fd, _ in events:
            entry = waiting.get(fd)
            if entry is None:  # not this round trip's, or answered already and then hung up
                watch.forget(fd)
                continue
            replies = _read_replies(nodes[entry[0]], entry[1], entry[2])
            if replies is None:  # more to come
                progressed.append(fd)
                continue
            results[entry[0]] = replies
            del waiting[fd], deadlines[fd]
            if type(replies) is not list:  # its connection is closed
                watch.drop(fd)
        if not waiting:
            return
        now = time.monotonic()
        for fd in list(waiting):
            if fd in progressed:  # the timeout counts from the last bytes
                deadlines[fd] = now + timeout
            elif deadlines[fd] <= polled:
                index, connection, _ = waiting.pop(fd)
                del deadlines[fd]
                watch.drop(fd)
                came = len(connection.parsed) - connection.unread - connection.pending_preamble
                _discard(connection)
                results[index] = Unanswered(f"no reply within {timeout}s", max(0, came))
            else:  # time spent reading the others is not this master's
                deadlines[fd] += now - polled


def _read_replies(node: Node, connection: Any, count: int) -> list[Any] | Exception | None:
    """The ``count`` replies of the last batch, once the connection has them all (None
    before that); the replies of earlier posted commands and of ``SCRIPT LOAD`` come first
    and are dropped."""
    try:
        if (
            count == 1
            and connection.plain
            and not connection.pending_preamble
            and not (connection.inbox or connection.arrays)
        ):  # one reply, after those of posted commands: integers, most likely
            try:
                data = connection.raw.recv(65536)
            except BlockingIOError:
                return None
            unread = connection.unread
            if not unread and data[:1] == b":" and data.find(b"\r\n") == len(data) - 2:
                node._idle.append(connection)
                return [int(data[1:-2])]
            if unread:
                unread -= len(connection.parsed)  # those parsed already are not in data
                if unread >= 0 and only_integers(data, unread + 1):
                    connection.parsed = []
                    connection.unread = 0
                    node._idle.append(connection)
                    return [int(data[data.rfind(b":") + 1 : -2])]
            if not data:
                raise RedisConnectionError("Connection closed by server.")
            connection.inbox += data
        elif not _receive(connection):
            raise RedisConnectionError("Connection closed by server.")
        parse_replies(connection)
    except (RedisError, OSError) as exc:
        _discard(connection)
        return _as_error(exc)
    return _collect(node, connection, count)


def _collect(node: Node, connection: Any, count: int) -> list[Any] | Exception | None:
    """:func:`_read_replies` once the replies are parsed: the batch's, when all came; a
    new connection's check first (its ``INFO`` is the preamble's first reply)."""
    skip = connection.unread + connection.pending_preamble
    if len(connection.parsed) < skip + count:
        return None
    if connection.checking:
        connection.checking = False
        try:
            if node.replication.check(connection.parsed[connection.unread], _address(connection)):
                node.close()  # a new primary: the idle connections reach the old one
        except NotPrimary as refused:
            _discard(connection)
            node.close()
            return refused
    replies = connection.parsed[skip : skip + count]
    mine = connection.parsed[connection.unread : skip + count]
    failure = next((r for r in mine if isinstance(r, ResponseError)), None)
    connection.parsed = connection.parsed[skip + count :]
    connection.unread = connection.pending_preamble = 0
    # out of step; or the scripts were flushed (a new connection loads them again); or the
    # server is no longer the primary (new connections find it again, the idle ones too)
    if connection.parsed or connection.inbox or connection.arrays or isinstance(failure, _DROP):
        _discard(connection)
        if isinstance(failure, _NOT_PRIMARY):
            node.close()
    else:
        node._idle.append(connection)
    # a cluster's shard answers per command: the cluster follows its redirects itself
    return replies if failure is None or node.shard else failure


#: What a new connection asks first (see Masters._preamble).
_INFO = pack([("INFO", "replication")])


def _address(connection: Any) -> str:
    """Where a connection is connected: ``host:port``, or its socket path."""
    path = getattr(connection, "path", None)
    return str(path) if path else f"{connection.host}:{connection.port}"


#: Replies of a server that is no longer the primary (a replica, or one cut off from it).
_NOT_PRIMARY = (ReadOnlyError, MasterDownError)
#: Replies after which a connection is not used again.
_DROP = (NoScriptError, *_NOT_PRIMARY)


class Unanswered(RedisTimeoutError):
    """A master that did not send its batch's replies within the node timeout; ``received``
    of them had come (all but a ``WAIT``'s: its replicas did not acknowledge in time)."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


def _discard(connection: Any) -> None:
    if connection is not None:
        connection.raw = None
        connection.disconnect()


def _as_error(exc: BaseException) -> Exception:
    return exc if isinstance(exc, Exception) else RedisError(str(exc))


def describe(error: Exception) -> str:
    """A short, password-free description of a node's error; one that only a Redis
    Cluster's node gives says how to name a cluster."""
    text = str(error) or type(error).__name__
    if isinstance(error, (AskError, ClusterCrossSlotError)) or _CLUSTER_SELECT in text:
        text += "; the server is a node of a Redis Cluster: give its URL with ?cluster=true"
    return f"{type(error).__name__}: {text}"


_CLUSTER_SELECT = "SELECT is not allowed in cluster mode"
