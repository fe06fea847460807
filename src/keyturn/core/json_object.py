"""JSON read strictly: a member named twice is an error, not the last one winning.

Two parsers of one document can otherwise read two different values out of it (one
takes the first `client_id`, another the last): whatever keyturn reads from a caller's
JSON, a body or a fetched document, goes through `loads`.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """`json.loads` refusing a repeated member anywhere (`ValueError`)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the member {key[:40]!r} is repeated")
        found[key] = value
    return found
