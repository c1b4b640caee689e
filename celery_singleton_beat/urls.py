"""URLs as they may be shown: user information hidden, in logs, banners and errors.

kombu's ``maybe_sanitize_url`` parses the URL first, so a password holding an unencoded
``/``, ``#`` or ``?`` (common in generated secrets) makes it raise an error that quotes a
piece of the password. These functions never parse and never raise: everything between
``scheme://`` and the *last* ``@`` is user information (a host cannot hold an ``@``), and
``password=`` query values are hidden too.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

_QUERY_SECRET = re.compile(r"(?i)((?:^|[?&;])[^=&;#]*pass[^=&;#]*=)[^&;]*")


def safe_url(url: object) -> str:
    """``url`` with its user information and ``password=`` values replaced by ``***``."""
    try:
        text = url.decode("utf-8", "replace") if isinstance(url, bytes) else str(url)
    except Exception:
        return f"<{type(url).__name__}>"
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    if "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    rest = _QUERY_SECRET.sub(rf"\g<1>{MASK}", rest)
    return f"{scheme}{separator}{rest}"


def safe_value(value: Any) -> Any:
    """A setting's value fit for an error message: URLs (also inside lists, tuples and
    sets) through :func:`safe_url`; numbers, booleans and None as they are; anything else
    by its type name only."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (str, bytes)):
        return safe_url(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [safe_value(item) for item in value]
        if isinstance(value, (set, frozenset)):
            return set(map(str, items))
        return type(value)(items) if isinstance(value, list) else tuple(items)
    return f"<{type(value).__name__}>"
