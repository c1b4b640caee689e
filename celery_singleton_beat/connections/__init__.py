"""Wire clients: the Redis servers the locks and the stores speak to, in one round trip.

:mod:`.masters` holds independent masters (Redlock's majority); :mod:`.resp` the protocol
they are spoken to in. Other ways to reach Redis (Sentinel, a Redis Cluster) belong here.
"""
