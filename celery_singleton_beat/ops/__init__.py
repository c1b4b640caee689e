"""Operator tools: the ``singleton-beat`` command, the cluster view it and the dashboard
read, and the locks as operators see them."""
