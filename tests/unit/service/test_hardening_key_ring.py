"""H-01 in the small: which unknown MAC key ids may be looked up, how often, and that a
re-read opens nothing already held, off the event loop."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from keyturn.core import key_lifecycle
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import KeyId, SessionId
from keyturn.core.models import KeyState, KeyUse, StoredKey
from keyturn.crypto import refresh_codec
from keyturn.crypto.refresh_codec import RefreshClaims
from keyturn.crypto.sealing import Sealer
from keyturn.service.tokens import UNKNOWN_KEY_LOOKAHEAD, Tokens
from keyturn.storage.memory import MemoryStore
from keyturn.wiring import SystemRandomness, engine_config
from support.engine import FakeClock, settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECRET = b"Zq3-unit-test-master-secret-4f9a1c7e2b6d8053"


def mac_key(key_id: int, state: KeyState = KeyState.RETIRED) -> StoredKey:
    return StoredKey(
        kid=KeyId(str(key_id)),
        use=KeyUse.REFRESH_MAC,
        alg="HS256",
        state=state,
        public_jwk=None,
        encrypted_private=b"",
        created_at=NOW,
    )


def test_h01_upcoming_mac_key_ids_follow_the_allocation_sequence() -> None:
    keys = [mac_key(1), mac_key(2, KeyState.ACTIVE), mac_key(3, KeyState.NEXT)]
    assert key_lifecycle.upcoming_mac_key_ids(keys, 3) == {4, 5, 6}
    assert key_lifecycle.upcoming_mac_key_ids([], 2) == {1, 2}
    # Across the wrap: 65535 is taken, so 0 comes next, then the first free ids.
    wrapped = [mac_key(65534), mac_key(65535), mac_key(0), mac_key(2)]
    assert key_lifecycle.upcoming_mac_key_ids(wrapped, 3) == {1, 3, 4}
    # Exactly what next_mac_key_id would allocate, one after another.
    planned = list(wrapped)
    for _ in range(3):
        planned.append(mac_key(key_lifecycle.next_mac_key_id(planned)))
    assert {int(k.kid) for k in planned[4:]} == key_lifecycle.upcoming_mac_key_ids(wrapped, 3)


def test_h01_upcoming_mac_key_ids_never_exceed_the_free_ids() -> None:
    nearly_full = [mac_key(i) for i in range(key_lifecycle.MAC_KEY_IDS - 2)]
    assert len(key_lifecycle.upcoming_mac_key_ids(nearly_full, 16)) == 2


def test_h01_key_id_of_reads_the_named_key_without_authenticating() -> None:
    claims = RefreshClaims(SessionId("6f1c9a52-0000-4000-8000-000000000001"), 7, bytes(8), 4242)
    token = refresh_codec.encode(claims, b"a key nobody else holds".ljust(32, b"."))
    assert refresh_codec.key_id_of(token) == 4242
    with pytest.raises(InvalidGrant):
        refresh_codec.key_id_of(token[:-1] + ("A" if token[-1] != "A" else "B"))


class CountingSealer(Sealer):
    """A real sealer that notes the thread of every unseal."""

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret)
        self.threads: list[str] = []

    def unseal(self, blob: bytes, aad: str) -> bytes:
        self.threads.append(threading.current_thread().name)
        return super().unseal(blob, aad)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tokens(store: MemoryStore, sealer: Sealer, monotonic: Monotonic) -> Tokens:
    config = engine_config(settings(key_refresh_seconds=30))
    return Tokens(store, sealer, FakeClock(), SystemRandomness(), config, "RS256", monotonic)


def _forged(key_id: int) -> str:
    claims = RefreshClaims(SessionId("6f1c9a52-0000-4000-8000-000000000001"), 1, bytes(8), key_id)
    return refresh_codec.encode(claims, bytes(32))


async def test_h01_periodic_reread_opens_no_key_again_and_off_the_event_loop() -> None:
    store, sealer, monotonic = MemoryStore(), CountingSealer(SECRET), Monotonic()
    tokens = _tokens(store, sealer, monotonic)
    await tokens.ensure_keys()
    opened, loop_thread = tokens.keys_opened, threading.current_thread().name
    assert opened > 0
    assert sealer.threads
    assert loop_thread not in sealer.threads
    monotonic.now += 31
    await tokens.ring()
    monotonic.now += 31
    await tokens.jwks()
    assert tokens.keys_opened == opened
    # A key rotated in is the only one opened on the next read.
    await tokens.rotate(KeyUse.REFRESH_MAC)
    assert tokens.keys_opened == opened + 1


async def test_h01_unknown_key_reads_at_most_once_per_interval() -> None:
    store, monotonic = MemoryStore(), Monotonic()
    tokens = _tokens(store, Sealer(SECRET), monotonic)
    await tokens.ensure_keys()
    reads: list[int] = []
    original = store.list_keys

    async def counted() -> list[StoredKey]:
        reads.append(1)
        return await original()

    store.list_keys = counted  # type: ignore[method-assign]
    newest = await tokens.active_mac_key_id() + 1
    beyond = newest + UNKNOWN_KEY_LOOKAHEAD + 1
    for key_id in (beyond, newest + 1, newest + 2, newest + 1):
        with pytest.raises(InvalidGrant):
            await tokens.decode_refresh(_forged(key_id))
    assert len(reads) == 1
    monotonic.now += 6  # past the throttle, within the periodic refresh
    with pytest.raises(InvalidGrant):
        await tokens.decode_refresh(_forged(newest + 1))
    assert len(reads) == 2
    with pytest.raises(InvalidGrant):
        await tokens.decode_refresh(_forged(beyond))
    assert len(reads) == 2


async def test_h01_a_retired_then_deleted_key_id_is_not_looked_up() -> None:
    """An id behind the newest known one (a key deleted long ago) is never read for."""
    store, monotonic = MemoryStore(), Monotonic()
    tokens = _tokens(store, Sealer(SECRET), monotonic)
    await tokens.ensure_keys()
    reads: list[int] = []
    original = store.list_keys

    async def counted() -> list[StoredKey]:
        reads.append(1)
        return await original()

    store.list_keys = counted  # type: ignore[method-assign]
    active = await tokens.active_mac_key_id()
    for key_id in (active - 1, 0, 65535):
        with pytest.raises(InvalidGrant):
            await tokens.decode_refresh(_forged(key_id % 65536))
    assert reads == []
