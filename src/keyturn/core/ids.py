"""Identifier types, so a user id is never passed where a session id belongs."""

import uuid
from typing import NewType

UserId = NewType("UserId", str)
"""A user's opaque id: a canonical UUID string. It is the `sub` of the user's tokens;
no client id has this shape (`is_user_id_shaped`), so a `sub` that is a UUID is a user."""

ClientId = NewType("ClientId", str)
"""A client's registered id, chosen by whoever registers it (RFC 6749 §2.2); never a
UUID, since it is the `sub` of the tokens a client obtains for itself."""

SessionId = NewType("SessionId", str)
"""A session (token family) id, the `sid` claim: a canonical UUID string."""

KeyId = NewType("KeyId", str)
"""A signing key's `kid`."""


def is_user_id_shaped(text: str) -> bool:
    """Whether `text` reads as a UUID in any spelling Python's `uuid` accepts (any case,
    with or without hyphens, braces or `urn:uuid:`), so as some user's `sub` to a
    resource server that normalizes it."""
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True
