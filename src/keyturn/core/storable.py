"""Text a store can hold: no NUL (PostgreSQL `text` cannot hold one) and no lone
surrogate (UTF-8 cannot encode one). What a request brings in is refused at the edge
(`web.forms`, the client-authentication shape check); what still reaches a store is
answered by `service.guarded_store`, once for every store."""

from __future__ import annotations

from typing import TypeVar, cast

S = TypeVar("S", bound=str)


def storable(*values: object) -> bool:
    """False if a text value holds what no store keeps (NUL, a lone surrogate); values
    that are not text pass."""
    for value in values:
        if isinstance(value, str) and (
            "\x00" in value or not (value.isascii() or _encodable(value))
        ):
            return False
    return True


def scrubbed(text: S | None) -> S | None:
    """`text` with each NUL and lone surrogate replaced by U+FFFD."""
    if text is None or storable(text):
        return text
    kept = "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)
    return cast(S, kept)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
