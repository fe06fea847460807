"""Request limits at the edge. Each refusal is 429 with Retry-After, answered before the
request does any work, so it changes nothing.

A client id is public: whoever names it must not be able to spend what its real users
need. So each count is one that only its own spenders can reach
(`docs/decisions/rate-limits-and-audit.md`):

- `client-failures:{id}:{address}`: failed client authentications of one id from one
  address. Checked before any secret is, counted when authentication fails: guessing
  stops, and only at the guesser's address.
- `client:{id}`: the work of a confidential client, counted once it has authenticated.
- `public:{id}:{address}`: requests naming a public client, which has no secret to
  prove: counted per address, so one address spends only its own share.
- `feed:{id}`: revocation-feed polls of a resource server, counted once it has
  authenticated, apart from its other work: logged-out tokens must stop working at
  its API whatever anyone else sends.
- `login-ip:{address}`: logins and password changes from one address.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.requests import Request

from keyturn.core.errors import InvalidClient, RateLimited
from keyturn.core.ports import RateLimiter
from keyturn.service.client_auth import MAX_CLIENT_ID_LENGTH, ClientCredentials
from keyturn.service.engine import Engine

MINUTE = 60


class Work(enum.Enum):
    """What an authenticated client is asking for, each with its own count."""

    CLIENT = "client"
    FEED = "feed"


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    limit: int


def peer_address(request: Request) -> str:
    """The address the request came from (the proxy's own unless it is trusted)."""
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True, slots=True)
class Admission:
    """A request let in before its client authenticated: `authenticating` counts the
    outcome of the authentication it wraps."""

    limiter: RateLimiter
    failures: Bucket
    authenticated: Bucket | None
    """Counted after a successful authentication (None: counted before, per address)."""

    @asynccontextmanager
    async def authenticating(self) -> AsyncIterator[None]:
        """Around work whose first step authenticates the client: `InvalidClient` counts
        as a failure of this id at this address; anything else (an answer, or an error
        raised after authentication) as the authenticated client's work."""
        try:
            yield
        except InvalidClient:
            await self.limiter.hit(self.failures.key, self.failures.limit, MINUTE)
            raise
        except Exception:
            await self._count()
            raise
        await self._count()

    async def _count(self) -> None:
        if self.authenticated is not None:
            await self.limiter.hit(self.authenticated.key, self.authenticated.limit, MINUTE)


def _buckets(
    engine: Engine, credentials: ClientCredentials, address: str, work: Work
) -> tuple[Bucket, Bucket]:
    """The failure bucket of this id at this address, and the one its work spends."""
    settings = engine.settings
    client_id = credentials.client_id[:MAX_CLIENT_ID_LENGTH]
    # The id's length first: an id is the caller's choice and an IPv6 address holds
    # colons, so without it one caller's (id, address) could spell another's key.
    pair = f"{len(client_id)}:{client_id}:{address}"
    failures = Bucket(f"client-failures:{pair}", settings.client_auth_failures_per_minute)
    if work is Work.FEED:
        return failures, Bucket(f"feed:{client_id}", settings.revocation_feed_requests_per_minute)
    if credentials.secret is None:
        # A public client, or a confidential one without its secret (which fails): the
        # id proves nothing, so the count is this address's.
        return failures, Bucket(f"public:{pair}", settings.public_client_requests_per_minute)
    return failures, Bucket(f"client:{client_id}", settings.token_requests_per_minute)


async def admit_client(
    engine: Engine, request: Request, credentials: ClientCredentials, work: Work = Work.CLIENT
) -> Admission:
    """Let in a request of a client still to authenticate, or `RateLimited`.

    Refused when this id failed too often from this address, or when the bucket its
    work spends is empty. A public client's request is counted here; an authenticated
    client's once `Admission.authenticating` has seen it authenticate (so parallel
    requests may pass the limit by their number: a bound, not a quota).
    """
    limiter = engine.limiter
    failures, spends = _buckets(engine, credentials, peer_address(request), work)
    retry = await limiter.peek(failures.key, failures.limit, MINUTE)
    if retry is not None:
        raise RateLimited(retry, detail=f"failed client authentication: {failures.key!r}")
    per_address = work is Work.CLIENT and credentials.secret is None
    if per_address:
        retry = await limiter.hit(spends.key, spends.limit, MINUTE)
    else:
        retry = await limiter.peek(spends.key, spends.limit, MINUTE)
    if retry is not None:
        raise RateLimited(retry, detail=f"over the limit of {spends.key!r}")
    return Admission(limiter, failures, None if per_address else spends)


async def limit_login_address(engine: Engine, request: Request) -> None:
    address = peer_address(request)
    per_minute = engine.settings.login_requests_per_minute
    retry = await engine.limiter.hit(f"login-ip:{address}", per_minute, MINUTE)
    if retry is not None:
        raise RateLimited(retry, detail="address over its login limit")
