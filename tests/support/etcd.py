"""What the tests on etcd share: the time scale of its leases."""

from __future__ import annotations

#: How many times longer TTLs and waits are in the tests on etcd than on the other stores:
#: etcd grants leases in whole seconds (at least one) and ends a lease within about half a
#: second after its time, so a TTL of 0.2 s is a lease of 2 s and its wait 3 s.
ETCD_SCALE = 10.0
