"""Wire clients: the Redis servers the locks and the stores speak to, in one round trip.

:mod:`.masters` holds independent masters (Redlock's majority); :mod:`.resp` the protocol
they are spoken to in; :mod:`.primary` what each member's primary is (a server, or a
Sentinel-managed primary found through redis-py), the check of each new connection, and
the replicas a write waits for. Other ways to reach Redis (a Redis Cluster) belong here.
"""
