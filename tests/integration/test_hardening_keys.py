"""H-01: a presented token never makes the key ring re-read or re-open for nothing.

A refresh token names its MAC key by a 16-bit id that only a CRC32 guards, so anyone can
forge one. Such a token may cost at most one throttled read of the key table (when its
id could be a key rotated in since the last read), and never the opening of a key this
process already holds; an id that cannot exist costs no read at all. A key really rotated
in by another process is still found. Proven on SQLite and PostgreSQL, counted through a
thin counting wrapper over the real store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import Client, KeyUse
from keyturn.crypto import refresh_codec
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, count_calls, engine_with, seed

N = 25


@dataclass
class Keyed:
    url: str
    schema: str | None
    engine: Engine
    clock: FakeClock
    native: Client
    conf: Client
    key_reads: list[str]

    async def login(self, engine: Engine | None = None) -> IssuedTokens:
        return await (engine or self.engine).login.login("alice", PASSWORD, self.native)


@pytest.fixture
async def keyed(durable_store_url: tuple[str, str | None]) -> AsyncIterator[Keyed]:
    url, schema = durable_store_url
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema)
    _, native, conf = await seed(engine)
    reads = count_calls(engine.store, ["list_keys"])
    yield Keyed(url, schema, engine, clock, native.client, conf.client, reads)
    await engine.close()


def forged(real: str, key_id: int) -> str:
    """A well-formed refresh token (right length, alphabet and CRC32) naming `key_id`:
    a real one with its key id changed and its checksum recomputed, as anyone can."""
    text = real.removeprefix(refresh_codec.PREFIX)
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[1:3] = struct.pack(">H", key_id)
    raw[-4:] = struct.pack(">I", binascii.crc32(bytes(raw[:-4])))
    return refresh_codec.PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def _refused(engine: Engine, token: str, client: Client) -> None:
    with pytest.raises(InvalidGrant):
        await engine.refresher.refresh(token, client)


async def test_h01_forged_key_id_reads_no_keys(keyed: Keyed) -> None:
    real = await keyed.login()
    assert real.refresh_token is not None
    active = await keyed.engine.tokens.active_mac_key_id()
    keyed.key_reads.clear()
    far = [(active + 1000 + i) % 65536 for i in range(N)]
    for key_id in far:
        await _refused(keyed.engine, forged(real.refresh_token, key_id), keyed.native)
    # An id far beyond the newest known key cannot have been rotated in since the last
    # read: refused with no database work at all.
    assert keyed.key_reads == []
    opened = keyed.engine.tokens.keys_opened
    near = [(active + 2 + i % 3) % 65536 for i in range(N)]
    for key_id in near:
        await _refused(keyed.engine, forged(real.refresh_token, key_id), keyed.native)
    # A near id might be a key rotated in by another process: one throttled look, and
    # nothing this process already holds is opened again.
    assert len(keyed.key_reads) <= 1
    assert keyed.engine.tokens.keys_opened == opened
    # The real token still works.
    await keyed.engine.refresher.refresh(real.refresh_token, keyed.native)


async def test_h01_concurrent_forged_tokens_share_one_read(keyed: Keyed) -> None:
    real = await keyed.login()
    assert real.refresh_token is not None
    active = await keyed.engine.tokens.active_mac_key_id()
    keyed.key_reads.clear()
    tokens = [forged(real.refresh_token, (active + 2 + i % 4) % 65536) for i in range(N)]
    results = await asyncio.gather(
        *(keyed.engine.refresher.refresh(t, keyed.native) for t in tokens),
        return_exceptions=True,
    )
    assert all(isinstance(r, InvalidGrant) for r in results)
    assert len(keyed.key_reads) <= 1


async def test_h01_key_rotated_in_by_another_engine_is_picked_up(keyed: Keyed) -> None:
    other = await engine_with(keyed.url, clock=keyed.clock, schema=keyed.schema)
    try:
        # Twice: the first rotation activates the next key this engine already read;
        # the second activates one it has never seen.
        await other.tokens.rotate(KeyUse.REFRESH_MAC)
        await other.tokens.rotate(KeyUse.REFRESH_MAC)
        issued = await keyed.login(other)
        assert issued.refresh_token is not None
        keyed.key_reads.clear()
        rotated = await keyed.engine.refresher.refresh(issued.refresh_token, keyed.native)
        assert rotated.refresh_token is not None
        assert len(keyed.key_reads) == 1
    finally:
        await other.close()


async def test_h01_forged_tokens_do_not_hide_a_key_rotated_in_before_them(keyed: Keyed) -> None:
    """The one look a forged token may cause reads whatever was rotated in before it:
    a real token of that key, presented afterwards, is answered from that read."""
    other = await engine_with(keyed.url, clock=keyed.clock, schema=keyed.schema)
    try:
        await other.tokens.rotate(KeyUse.REFRESH_MAC)
        await other.tokens.rotate(KeyUse.REFRESH_MAC)
        issued = await keyed.login(other)
        assert issued.refresh_token is not None
        new_id = await other.tokens.active_mac_key_id()
        await _refused(keyed.engine, forged(issued.refresh_token, new_id + 1), keyed.native)
        keyed.key_reads.clear()
        await keyed.engine.refresher.refresh(issued.refresh_token, keyed.native)
        assert keyed.key_reads == []
    finally:
        await other.close()


def _forged_access_token(kid: str) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = part({"typ": "at+jwt", "alg": "ES256", "kid": kid})
    claims = part({"iss": "x", "sub": "alice", "sid": "s", "client_id": "native", "exp": 2**40})
    return f"{header}.{claims}.{'A' * 86}"


async def test_h01_inspection_of_forged_tokens_reads_no_keys(keyed: Keyed) -> None:
    """Introspection, revocation and the account API decode presented tokens too: no
    spelling of a bad token reads the key table."""
    real = await keyed.login()
    assert real.refresh_token is not None
    active = await keyed.engine.tokens.active_mac_key_id()
    keyed.key_reads.clear()
    inspection = keyed.engine.inspection
    for i in range(N):
        refresh = forged(real.refresh_token, (active + 1000 + i) % 65536)
        access = _forged_access_token(f"unknown-{i}")
        for token in (refresh, access):
            assert await inspection.introspect(token, keyed.conf) == {"active": False}
            await inspection.revoke(token, keyed.native)
        with pytest.raises(Exception, match="invalid_token"):
            await inspection.bearer_session(access)
    assert keyed.key_reads == []
    live = await keyed.engine.store.get_session(SessionId(real.session_id or ""))
    assert live is not None
    assert not live.revoked
