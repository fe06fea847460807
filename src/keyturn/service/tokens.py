"""Keys and token codecs as the use cases need them.

The one place that turns stored key rows into signing and MAC material. Each process
keeps the decrypted key ring in memory and re-reads the key table every
`key_refresh_seconds` (and at once when a token names a key it does not know), so a
`keyturn keys rotate` run anywhere is picked up everywhere without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from keyturn.core import key_lifecycle
from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId, UserId
from keyturn.core.models import Client, KeyUse, Session, StoredKey
from keyturn.core.ports import Clock, KeyStore, Randomness
from keyturn.crypto import access_tokens, refresh_codec
from keyturn.crypto.keys import KeyRing, new_refresh_mac_key, new_signing_key
from keyturn.crypto.refresh_codec import RefreshClaims
from keyturn.crypto.sealing import Sealer
from keyturn.service.config import EngineConfig

RETIRED_KEY_MARGIN = 120
"""Seconds a retired signing key stays published beyond the access-token lifetime: clock
skew and resource servers' JWKS caches."""


class Tokens:
    def __init__(
        self,
        keys: KeyStore,
        sealer: Sealer,
        clock: Clock,
        randomness: Randomness,
        config: EngineConfig,
        signing_alg: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._sealer = sealer
        self._clock = clock
        self._random = randomness
        self._config = config
        self._alg = signing_alg
        self._monotonic = monotonic
        self._ring: KeyRing | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    # Key ring

    async def ring(self) -> KeyRing:
        """The key ring, re-read when older than the refresh interval."""
        ring = self._ring
        if ring is None or self._monotonic() - self._loaded_at > self._config.key_refresh_seconds:
            return await self.reload()
        return ring

    async def reload(self) -> KeyRing:
        async with self._lock:
            stored = await self._keys.list_keys()
            self._ring = KeyRing(stored, self._sealer, self._clock.now())
            self._loaded_at = self._monotonic()
            return self._ring

    async def ensure_keys(self) -> list[StoredKey]:
        """Create the first keys (an active and a next one of each use) if there are
        none; run at start and by `migrate`. Returns the keys it created."""
        stored = await self._keys.list_keys()
        now = self._clock.now()
        created = [
            *key_lifecycle.plan_bootstrap(stored, KeyUse.SIGNING, now, self._make_signing_key),
            *key_lifecycle.plan_bootstrap(stored, KeyUse.REFRESH_MAC, now, self._make_mac_key),
        ]
        if created:
            events = [_key_event(k, EventType.KEY_CREATED, now) for k in created]
            await self._keys.save_keys(created, events)
        await self.reload()
        return created

    async def rotate(self, use: KeyUse) -> list[StoredKey]:
        """Rotate the keys of one use: next → active → retired, a new next. A retired
        signing key stays published until the last access token it signed expires; a
        retired MAC key verifies until the last session that uses it has ended."""
        stored = await self._keys.list_keys()
        now = self._clock.now()
        if use is KeyUse.SIGNING:
            keep_for = self._config.lifetimes.access_token_ttl + RETIRED_KEY_MARGIN
            maker: key_lifecycle.MakeKey = self._make_signing_key
        else:
            keep_for = self._config.lifetimes.session_max_ttl
            maker = self._make_mac_key
        changed = key_lifecycle.plan_rotation(stored, use, now, keep_for, maker)
        events = [_key_event(k, EventType.KEY_ROTATED, now) for k in changed]
        await self._keys.save_keys(changed, events)
        expired = key_lifecycle.expired_kids(stored, now)
        if expired:
            await self._keys.delete_keys(expired)
        await self.reload()
        return changed

    def _make_signing_key(
        self,
        now: datetime,
        existing: Sequence[StoredKey],  # noqa: ARG002 - a thumbprint kid is unique as it is
    ) -> StoredKey:
        return new_signing_key(self._alg, self._sealer, now)

    def _make_mac_key(self, now: datetime, existing: Sequence[StoredKey]) -> StoredKey:
        key_id = key_lifecycle.next_mac_key_id(existing)
        return new_refresh_mac_key(key_id, self._sealer, self._random, now)

    async def jwks(self) -> dict[str, Any]:
        return (await self.ring()).jwks()

    # Refresh tokens

    def new_salt(self) -> bytes:
        return refresh_codec.new_salt(self._random)

    async def active_mac_key_id(self) -> int:
        return (await self.ring()).active_mac_key_id

    async def decode_refresh(self, token: str) -> RefreshClaims:
        """Parse and authenticate a presented refresh token: `InvalidGrant` for
        garbage, a bad checksum or MAC, or a key we do not hold. No database work."""
        ring = await self.ring()
        try:
            return refresh_codec.decode(token, ring.refresh_mac_keys)
        except InvalidGrant as refused:
            # A key rotated in by another process since our last read: look once more.
            if refused.detail != refresh_codec.UNKNOWN_KEY:
                raise
        ring = await self.reload()
        return refresh_codec.decode(token, ring.refresh_mac_keys)

    @staticmethod
    def salt_matches(claims: RefreshClaims, session: Session) -> bool:
        return refresh_codec.salt_matches(claims, session.salt)

    async def encode_refresh(self, session: Session, generation: int) -> str:
        """The refresh token of `generation` of `session`, derived, never stored. The
        same inputs give the same token, so a replay re-derives the identical one."""
        ring = await self.ring()
        key = ring.refresh_mac_keys.get(session.mac_key_id)
        if key is None:
            key = (await self.reload()).refresh_mac_keys[session.mac_key_id]
        claims = RefreshClaims(
            session_id=session.id,
            generation=generation,
            salt=session.salt,
            mac_key_id=session.mac_key_id,
        )
        return refresh_codec.encode(claims, key)

    # Access tokens

    async def mint_access(
        self,
        *,
        subject: UserId | str,
        client: Client,
        scope: str,
        session_id: SessionId | None,
        issued_at: datetime,
        expires_at: datetime,
        key_thumbprint: str | None = None,
    ) -> str:
        """An access token; bound to the DPoP key of `key_thumbprint` if given."""
        ring = await self.ring()
        return access_tokens.mint(
            ring,
            issuer=self._config.issuer,
            subject=subject,
            audience=self._config.audience_for(client),
            client_id=client.id,
            scope=scope,
            session_id=session_id,
            issued_at=issued_at,
            expires_at=expires_at,
            jti=self._random.token_bytes(16).hex(),
            key_thumbprint=key_thumbprint,
        )


def _key_event(key: StoredKey, kind: EventType, now: datetime) -> SecurityEvent:
    return SecurityEvent(
        type=kind, at=now, reason=key.state.value, detail=f"{key.use.value} key {key.kid}"
    )
