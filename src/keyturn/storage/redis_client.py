"""The one way keyturn opens Redis (rate limits, the DPoP replay cache, the revocation
channel): short timeouts, and one retry of a command whose connection was found closed.

A pooled connection opened before Redis restarted (or before a failover, or an idle
timeout on Redis's side) is closed by the time it is used again: its next command fails
with `ConnectionError` although Redis is back. Sent once more on a fresh connection, it
succeeds; without that, the first request after Redis returns would fail on every such
connection (a DPoP proof refused with 503, a revocation never announced to the resource
servers that follow the channel). A timeout is not retried: a Redis that hangs costs a
request `socket_timeout` once, not twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

TIMEOUT_SECONDS = 0.5


def connect(url: str) -> Redis:
    # Imported here: a server without Redis never loads the client (memory per worker).
    from redis import asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    client: Redis = aioredis.from_url(
        url,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    return client
