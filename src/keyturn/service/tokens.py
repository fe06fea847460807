"""Keys and token codecs as the use cases need them.

The one place that turns stored key rows into signing and MAC material. Each process
keeps the decrypted key ring in memory and re-reads the key table every
`key_refresh_seconds`, so a `keyturn keys rotate` run anywhere is picked up everywhere
without a restart. A refresh token naming a MAC key this process does not hold is looked
up early, but only when its id is one a rotation since the last read could have made,
and at most once per `UNKNOWN_KEY_RELOAD_SECONDS`: the id is guarded by a CRC32 alone,
so anyone can forge one, and a bad token must cost no database work.
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
from keyturn.crypto.keys import KeyRing, OpenedKeys, new_refresh_mac_key, new_signing_key
from keyturn.crypto.refresh_codec import RefreshClaims
from keyturn.crypto.sealing import Sealer
from keyturn.service.config import EngineConfig

RETIRED_KEY_MARGIN = 120
"""Seconds a retired signing key stays published beyond the access-token lifetime: clock
skew and resource servers' JWKS caches."""

UNKNOWN_KEY_RELOAD_SECONDS = 5.0
"""At most one early read of the key table per this many seconds, per process, for
refresh tokens naming a MAC key it does not hold; a token refused meanwhile is answered
`invalid_grant` as any bad token is. An honest one is rare: its key must have been
rotated in by another process twice since the last periodic read (a rotation activates
the next key, which every process has read already)."""

UNKNOWN_KEY_LOOKAHEAD = 16
"""How many MAC keys other processes may have made since the last read: an unknown id
outside the next this many of the sequence cannot exist and is refused unread."""


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
        unknown_key_reload_seconds: float = UNKNOWN_KEY_RELOAD_SECONDS,
    ) -> None:
        self._keys = keys
        self._sealer = sealer
        self._clock = clock
        self._random = randomness
        self._config = config
        self._alg = signing_alg
        self._monotonic = monotonic
        self._unknown_key_reload_seconds = unknown_key_reload_seconds
        self._ring: KeyRing | None = None
        self._opened = OpenedKeys(sealer)
        self._upcoming_mac_ids: frozenset[int] = frozenset()
        self._loaded_at = 0.0
        self._reads = 0
        self._unknown_key_read_at: float | None = None
        self._lock = asyncio.Lock()

    # Key ring

    @property
    def keys_opened(self) -> int:
        """Private keys unsealed by this process so far: a re-read of an unchanged key
        table adds none."""
        return self._opened.opened

    async def ring(self) -> KeyRing:
        """The key ring, re-read when older than the refresh interval."""
        ring = self._ring
        if ring is None or self._monotonic() - self._loaded_at > self._config.key_refresh_seconds:
            return await self._refresh()
        return ring

    async def reload(self) -> KeyRing:
        """Read the key table now: after this process changed it."""
        async with self._lock:
            return await self._read()

    async def _refresh(self) -> KeyRing:
        """Read the key table, unless a read is under way: callers at the same moment
        share its result (one read, not one per request)."""
        seen = self._reads
        async with self._lock:
            if self._reads != seen and self._ring is not None:
                return self._ring
            return await self._read()

    async def _read(self) -> KeyRing:
        stored = await self._keys.list_keys()
        # Unsealing and importing (an RS256 signing key: about a quarter second) run on a
        # worker thread, never on the event loop; keys already held are not reopened.
        ring = await asyncio.to_thread(
            _open_ring, stored, self._sealer, self._clock.now(), self._opened
        )
        self._ring = ring
        self._upcoming_mac_ids = key_lifecycle.upcoming_mac_key_ids(stored, UNKNOWN_KEY_LOOKAHEAD)
        self._loaded_at = self._monotonic()
        self._reads += 1
        return ring

    async def _look_for_key(self, key_id: int) -> KeyRing | None:
        """The key ring re-read early for a token naming `key_id`, a MAC key this
        process does not hold; None when that costs nothing: the id cannot exist, or an
        early read was made in the last `unknown_key_reload_seconds` (a read under way
        is waited for, not repeated)."""
        if key_id not in self._upcoming_mac_ids:
            return None
        seen = self._reads
        now = self._monotonic()
        last = self._unknown_key_read_at
        if last is not None and now - last < self._unknown_key_reload_seconds:
            if not self._lock.locked():
                return None
            async with self._lock:
                return self._ring if self._reads != seen else None
        self._unknown_key_read_at = now
        return await self._refresh()

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
        garbage, a bad checksum or MAC, or a key we do not hold. No database work,
        but for one throttled look for a key rotated in elsewhere (`_look_for_key`)."""
        ring = await self.ring()
        try:
            return refresh_codec.decode(token, ring.refresh_mac_keys)
        except InvalidGrant as refused:
            if refused.detail != refresh_codec.UNKNOWN_KEY:
                raise
            again = await self._look_for_key(refresh_codec.key_id_of(token))
            if again is None:
                raise
        return refresh_codec.decode(token, again.refresh_mac_keys)

    @staticmethod
    def salt_matches(claims: RefreshClaims, session: Session) -> bool:
        return refresh_codec.salt_matches(claims, session.salt)

    async def encode_refresh(self, session: Session, generation: int) -> str:
        """The refresh token of `generation` of `session`, derived, never stored. The
        same inputs give the same token, so a replay re-derives the identical one."""
        ring = await self.ring()
        key = ring.refresh_mac_keys.get(session.mac_key_id)
        if key is None:
            # Only for a session row read from the store: never for a presented token.
            key = (await self._refresh()).refresh_mac_keys[session.mac_key_id]
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


def _open_ring(
    stored: Sequence[StoredKey], sealer: Sealer, now: datetime, opened: OpenedKeys
) -> KeyRing:
    ring = KeyRing(stored, sealer, now, opened=opened)
    opened.keep_only(stored)
    return ring


def _key_event(key: StoredKey, kind: EventType, now: datetime) -> SecurityEvent:
    return SecurityEvent(
        type=kind, at=now, reason=key.state.value, detail=f"{key.use.value} key {key.kid}"
    )
