"""The library's settings: read once from ``app.conf`` into frozen objects, checked, each
default stated once."""
