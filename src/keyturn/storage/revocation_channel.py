"""Revocations announced on a Redis channel as they commit, for resource servers that
follow it (`keyturn.verify.revocations.RevocationFeed(redis_url=...)`) instead of, or
besides, polling the HTTP feed.

A message is JSON: `{"sids": [...], "revoked_at": <epoch seconds>, "reason": "..."}`.
Publishing is best effort: Redis pub/sub keeps nothing for a subscriber that is away,
which is why followers also poll `GET /auth/revocations`, the durable record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime

from keyturn.core.audit import SecurityEvent
from keyturn.core.ids import SessionId
from keyturn.core.models import EndedSession, RevocationReason
from keyturn.storage import redis_client

log = logging.getLogger("keyturn.revocations")

CHANNEL = "keyturn:revocations"


class RedisRevocationChannel:
    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        # Imported here: a server without Redis never loads the client (memory per worker).
        from redis.exceptions import RedisError

        self._redis = redis_client.connect(url)
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self.channel = channel

    async def revoked(
        self, ended: Sequence[EndedSession], reason: RevocationReason, at: datetime
    ) -> None:
        message = json.dumps(
            {"sids": [e.id for e in ended], "revoked_at": at.timestamp(), "reason": reason.value}
        )
        try:
            await self._redis.publish(self.channel, message)
        except self._failures as error:
            log.warning("could not announce %d revocations on redis: %s", len(ended), error)

    async def rotated(self, session_id: SessionId) -> None:  # noqa: ARG002 - not announced
        return None

    async def recorded(self, event: SecurityEvent) -> None:  # noqa: ARG002 - not announced
        return None

    async def close(self) -> None:
        await self._redis.aclose()
