"""Client authentication (RFC 6749 §2.3, OAuth 2.1 §2.4): who is asking.

One answer, `InvalidClient`, for an unknown client, a disabled one, a wrong secret, a
missing secret, or a secret sent by a public client, after the same work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidClient
from keyturn.core.ids import ClientId
from keyturn.core.models import Client
from keyturn.core.ports import AuditLog, ClientStore, Clock, RateLimiter
from keyturn.core.storable import storable
from keyturn.crypto.client_secrets import hash_secret, verify_secret

MAX_CLIENT_ID_LENGTH = 128
MAX_SECRET_LENGTH = 256

# Compared against when the client is unknown, so that path costs the same.
_NO_SUCH_SECRET = hash_secret("no client has this secret")


class AuthMethod(enum.StrEnum):
    BASIC = "client_secret_basic"
    POST = "client_secret_post"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    secret: str | None
    method: AuthMethod


# Clients this process has read, by id, for the rotation that reads nothing first
# (`Refresher.refresh_for`). A registration never changes but to be disabled, and the
# rotation's guard re-checks `enabled` and the secret hash in the database, so a stale
# entry costs a second round trip, never a wrong answer. Only clients that exist enter.
_REMEMBERED_CLIENTS = 1024

# Wrong secrets of one client audited per minute, whatever their addresses: the first
# rows of a burst say that someone is guessing, from where, and when it began; the rest
# would add rows, not news (a botnet spreads past the per-address limit). The last row
# recorded says so, and the next minute records again. A counter shared through Redis
# when configured, like the limits; the rows need no schema of their own.
AUDITED_WRONG_SECRETS = 5
AUDIT_WINDOW_SECONDS = 60


class ClientAuthenticator:
    def __init__(
        self, clients: ClientStore, audit: AuditLog, clock: Clock, limiter: RateLimiter
    ) -> None:
        self._clients = clients
        self._audit = audit
        self._clock = clock
        self._limiter = limiter
        self._seen: dict[ClientId, Client] = {}

    def remembered(self, client_id: str) -> Client | None:
        """The client of this id as this process last read it, if it did."""
        return self._seen.get(ClientId(client_id))

    def _remember(self, client: Client) -> None:
        if client.id not in self._seen and len(self._seen) >= _REMEMBERED_CLIENTS:
            self._seen.clear()
        self._seen[client.id] = client

    async def authenticate(self, credentials: ClientCredentials) -> Client:
        """The client the credentials prove, or `InvalidClient`."""
        self.check_shape(credentials)
        return await self.check(credentials, await self._clients.get_client(_id(credentials)))

    @staticmethod
    def check_shape(credentials: ClientCredentials) -> None:
        """`InvalidClient` for a client id or secret no client can have, before any
        database work."""
        if not credentials.client_id or len(credentials.client_id) > MAX_CLIENT_ID_LENGTH:
            raise InvalidClient(detail="client id missing or too long")
        if not storable(credentials.client_id):  # NUL, a lone surrogate: no client's id
            raise InvalidClient(detail="client id holds a character no store can hold")
        if credentials.secret is not None and len(credentials.secret) > MAX_SECRET_LENGTH:
            raise InvalidClient(detail="secret too long")

    async def check(self, credentials: ClientCredentials, client: Client | None) -> Client:
        """`client`, as read for `credentials.client_id` (None: no such client), if the
        credentials prove it; otherwise `InvalidClient`. For callers that read the
        client together with other rows (a rotation reads it with the session)."""
        secret = credentials.secret
        if client is None:
            verify_secret(_NO_SUCH_SECRET, secret or "")
            raise InvalidClient(detail="unknown client")
        self._remember(client)
        if client.is_confidential:
            if secret is None or client.secret_hash is None:
                raise InvalidClient(detail="confidential client without a secret")
            if not verify_secret(client.secret_hash, secret):
                await self._audit_wrong_secret(client)
                raise InvalidClient(detail="wrong secret")
        elif secret is not None or credentials.method is not AuthMethod.NONE:
            # A public client has no secret: one sent anyway is a registration mismatch.
            raise InvalidClient(detail="public client sent a secret")
        if not client.enabled:
            raise InvalidClient(detail="client disabled")
        return client

    async def _audit_wrong_secret(self, client: Client) -> None:
        """Record a wrong secret, the first `AUDITED_WRONG_SECRETS` of each minute."""
        key = f"audit:wrong-secret:{client.id}"
        limit, window = AUDITED_WRONG_SECRETS, AUDIT_WINDOW_SECONDS
        if await self._limiter.hit(key, limit, window) is not None:
            return
        last = await self._limiter.peek(key, limit, window) is not None
        await self._audit.record(
            SecurityEvent(
                type=EventType.CLIENT_AUTHENTICATION_FAILED,
                at=self._clock.now(),
                client_id=client.id,
                reason="wrong_secret",
                detail=f"later wrong secrets within {window} s not recorded" if last else None,
            )
        )


def _id(credentials: ClientCredentials) -> ClientId:
    return ClientId(credentials.client_id)
