"""Scopes as sets of scope tokens (RFC 6749 §3.3)."""

from __future__ import annotations

import re

from keyturn.core.errors import InvalidScope

Scope = frozenset[str]

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
MAX_SCOPE_TOKENS = 64
MAX_SCOPE_TOKEN_LENGTH = 128


def parse_scope(text: str | None) -> Scope | None:
    """Parse a space-delimited scope parameter; `None` or blank means "not requested".

    Raises `InvalidScope` for characters outside the RFC grammar or absurd sizes.
    """
    if text is None:
        return None
    tokens = text.split(" ")
    parsed = frozenset(t for t in tokens if t)
    if not parsed:
        return None
    if len(parsed) > MAX_SCOPE_TOKENS:
        raise InvalidScope(detail="too many scope tokens")
    for token in parsed:
        if len(token) > MAX_SCOPE_TOKEN_LENGTH or not _SCOPE_TOKEN.fullmatch(token):
            raise InvalidScope(detail="scope token outside RFC 6749 §3.3 grammar")
    return parsed


def format_scope(scope: Scope) -> str:
    """The canonical form: sorted, space-delimited."""
    return " ".join(sorted(scope))


def narrow(granted: Scope, requested: Scope | None) -> Scope | None:
    """The scope of a token asked for with `requested` from a grant of `granted`.

    `None` when `requested` asks for anything not granted (RFC 6749 §6: the requested
    scope "MUST NOT include any scope not originally granted").
    """
    if requested is None:
        return granted
    if requested <= granted:
        return requested
    return None
