"""Identifier types, so a user id is never passed where a session id belongs."""

from typing import NewType

UserId = NewType("UserId", str)
"""A user's opaque id: a canonical UUID string."""

ClientId = NewType("ClientId", str)
"""A client's registered id, chosen by whoever registers it (RFC 6749 §2.2)."""

SessionId = NewType("SessionId", str)
"""A session (token family) id, the `sid` claim: a canonical UUID string."""

KeyId = NewType("KeyId", str)
"""A signing key's `kid`."""
