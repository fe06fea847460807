"""The rotation that reads nothing first (`Refresher.refresh_for` on a client this
process has read before): one store operation, and never a wrong answer when what this
process remembers went stale because another process changed the database.

Two engines on one database play two server processes: `here` serves the refresh and
remembers the client; `elsewhere` disables, re-keys, revokes and rotates behind its
back. Every answer must be the one a fresh read would give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from keyturn.core.errors import InvalidClient, InvalidGrant, InvalidScope
from keyturn.core.models import Client, RevocationReason
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, count_calls, engine_with, seed


@dataclass
class Two:
    here: Engine
    elsewhere: Engine
    conf: Client
    secret: str
    calls: list[str]

    def credentials(self, secret: str | None = None) -> ClientCredentials:
        return ClientCredentials("conf", secret or self.secret, AuthMethod.BASIC)

    async def refresh(self, token: str | None, scope: str | None = None) -> IssuedTokens:
        assert token is not None
        return await self.here.refresher.refresh_for(self.credentials(), token, scope)

    async def generation(self, tokens: IssuedTokens) -> int:
        session = await self.elsewhere.store.get_session(tokens.session_id or "")  # type: ignore[arg-type]
        assert session is not None
        return session.generation


@pytest.fixture
async def two(durable_store_url: tuple[str, str | None]) -> AsyncIterator[Two]:
    url, schema = durable_store_url
    clock = FakeClock()
    elsewhere = await engine_with(url, schema=schema, clock=clock, grace_seconds=10)
    _, _, conf = await seed(elsewhere)
    here = await engine_with(url, schema=schema, clock=clock, grace_seconds=10)
    assert conf.secret is not None
    calls = count_calls(here.store)
    yield Two(here, elsewhere, conf.client, conf.secret, calls)
    await here.close()
    await elsewhere.close()


async def remembered(two: Two) -> IssuedTokens:
    """A session whose client `here` has read (its first rotation), then cleared calls."""
    login = await two.elsewhere.login.login("alice", PASSWORD, two.conf)
    first = await two.refresh(login.refresh_token)
    assert two.calls == ["get_presentation"]  # the client was not known yet: read first
    two.calls.clear()
    return first


async def test_a_known_client_rotates_in_one_store_operation(two: Two) -> None:
    tokens = await remembered(two)
    for _ in range(3):
        tokens = await two.refresh(tokens.refresh_token)
    assert two.calls == ["attempt_rotation"] * 3
    assert await two.generation(tokens) == 4


async def test_a_client_disabled_elsewhere_is_refused_as_invalid_client(two: Two) -> None:
    tokens = await remembered(two)
    await two.elsewhere.admin.disable_client(two.conf.id)
    with pytest.raises(InvalidClient):
        await two.refresh(tokens.refresh_token)
    session = await two.elsewhere.store.get_session(tokens.session_id or "")  # type: ignore[arg-type]
    assert session is not None
    assert session.generation == 1
    assert session.revoked_reason is RevocationReason.CLIENT_DISABLED


async def test_a_wrong_secret_is_refused_before_any_write(two: Two) -> None:
    tokens = await remembered(two)
    with pytest.raises(InvalidClient):
        await two.here.refresher.refresh_for(
            two.credentials("kt_cs_wrong"), tokens.refresh_token or ""
        )
    assert two.calls == []
    assert await two.generation(tokens) == 1


@pytest.mark.parametrize("change", ["disable_user", "change_password", "end_session"])
async def test_a_session_ended_elsewhere_stays_ended(two: Two, change: str) -> None:
    tokens = await remembered(two)
    alice = await two.elsewhere.store.find_user("alice")
    assert alice is not None
    if change == "disable_user":
        await two.elsewhere.admin.disable_user("alice")
    elif change == "change_password":
        await two.elsewhere.sessions.change_password(
            alice.id, PASSWORD, PASSWORD + " again", keep=None
        )
    else:
        await two.elsewhere.admin.revoke_session(tokens.session_id or "")
    with pytest.raises(InvalidGrant):
        await two.refresh(tokens.refresh_token)
    assert two.calls[0] == "attempt_rotation"
    assert await two.generation(tokens) == 1


async def test_a_rotation_elsewhere_makes_this_one_a_replay_then_reuse(two: Two) -> None:
    tokens = await remembered(two)
    conf = two.conf
    theirs = await two.elsewhere.refresher.refresh(tokens.refresh_token or "", conf)
    # Within the grace window: the same successor, re-derived; nothing written.
    replay = await two.refresh(tokens.refresh_token)
    assert replay.refresh_token == theirs.refresh_token
    assert await two.generation(tokens) == 2
    # The successor rotates here in one operation; the old token is then reuse.
    two.calls.clear()
    newer = await two.refresh(theirs.refresh_token)
    assert two.calls == ["attempt_rotation"]
    with pytest.raises(InvalidGrant):
        await two.refresh(tokens.refresh_token)
    session = await two.elsewhere.store.get_session(newer.session_id or "")  # type: ignore[arg-type]
    assert session is not None
    assert session.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW


async def test_a_narrower_scope_goes_the_reading_way(two: Two) -> None:
    tokens = await remembered(two)
    narrow = await two.refresh(tokens.refresh_token, "read")
    assert narrow.scope == "read"
    assert two.calls == ["get_presentation"]
    with pytest.raises(InvalidScope):
        await two.refresh(narrow.refresh_token, "admin")
    assert await two.generation(narrow) == 2
