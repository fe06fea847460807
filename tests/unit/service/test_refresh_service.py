"""The use cases end to end through the engine, on the in-memory store with real
crypto and a clock the test moves. Row ids name the rows of docs/security-checklist.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from keyturn.core.audit import EventType
from keyturn.core.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    LoginFailed,
    NotFound,
    PasswordRejected,
    UnauthorizedClient,
)
from keyturn.core.models import Client, ClientType, GrantType, RevocationReason, Session
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.engine import Engine
from keyturn.service.results import IssuedTokens
from support.engine import PASSWORD, FakeClock, count_calls, engine_with, seed


@dataclass
class World:
    engine: Engine
    clock: FakeClock
    native: Client
    conf: Client

    async def login(self, client: Client | None = None) -> IssuedTokens:
        return await self.engine.login.login("alice", PASSWORD, client or self.native)

    async def refresh(self, token: str | None, client: Client | None = None) -> IssuedTokens:
        assert token is not None
        return await self.engine.refresher.refresh(token, client or self.native)

    async def session(self, tokens: IssuedTokens) -> Session:
        assert tokens.session_id is not None
        session = await self.engine.store.get_session(tokens.session_id)
        assert session is not None
        return session


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    engine = await engine_with(clock=clock)
    _, native, conf = await seed(engine)
    yield World(engine, clock, native.client, conf.client)
    await engine.close()


async def test_login_opens_a_session_at_generation_zero(world: World) -> None:
    tokens = await world.login()
    session = await world.session(tokens)
    assert session.generation == 0
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.startswith("kt_rt_")
    assert tokens.scope == "read write"
    assert tokens.expires_in == 900


async def test_rt01_rotation_advances_one_generation_and_changes_the_token(world: World) -> None:
    first = await world.login()
    second = await world.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert (await world.session(second)).generation == 1


async def test_rt02_replay_within_grace_returns_the_identical_successor(world: World) -> None:
    first = await world.login()
    second = await world.refresh(first.refresh_token)
    world.clock.advance(9)
    again = await world.refresh(first.refresh_token)
    assert again.refresh_token == second.refresh_token
    assert again.access_token != second.access_token
    assert (await world.session(again)).generation == 1  # I4: a replay never advances


async def test_rt04_reuse_after_grace_ends_the_session_and_is_committed(world: World) -> None:
    first = await world.login()
    second = await world.refresh(first.refresh_token)
    world.clock.advance(11)
    with pytest.raises(InvalidGrant) as refused:
        await world.refresh(first.refresh_token)
    assert refused.value.detail == RevocationReason.REUSE_OUTSIDE_WINDOW.value
    session = await world.session(second)
    assert session.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    # I3: every later presentation of any of its tokens fails.
    for token in (first.refresh_token, second.refresh_token):
        with pytest.raises(InvalidGrant):
            await world.refresh(token)
    events = await world.engine.store.list_events(type=EventType.REUSE_DETECTED.value)
    assert [e.event.session_id for e in events] == [session.id]


async def test_rt_grandparent_within_grace_is_reuse(world: World) -> None:
    first = await world.login()
    second = await world.refresh(first.refresh_token)
    await world.refresh(second.refresh_token)
    with pytest.raises(InvalidGrant):
        await world.refresh(first.refresh_token)
    assert (await world.session(second)).revoked


async def test_rt07_foreign_client_is_refused_and_the_session_lives(world: World) -> None:
    first = await world.login()
    with pytest.raises(InvalidGrant):
        await world.refresh(first.refresh_token, world.conf)
    assert not (await world.session(first)).revoked
    rotated = await world.refresh(first.refresh_token)
    assert (await world.session(rotated)).generation == 1
    events = await world.engine.store.list_events(type=EventType.FOREIGN_CLIENT_PRESENTED.value)
    assert len(events) == 1


async def test_gt04_wider_scope_leaves_the_token_live(world: World) -> None:
    first = await world.login()
    with pytest.raises(InvalidScope):
        await world.engine.refresher.refresh(
            first.refresh_token or "", world.native, frozenset({"read", "write", "admin"})
        )
    session = await world.session(first)
    assert session.generation == 0
    assert not session.revoked
    ok = await world.refresh(first.refresh_token)
    assert (await world.session(ok)).generation == 1


async def test_narrower_scope_narrows_the_access_token_only(world: World) -> None:
    first = await world.login()
    narrow = await world.engine.refresher.refresh(
        first.refresh_token or "", world.native, frozenset({"read"})
    )
    assert narrow.scope == "read"
    wide_again = await world.refresh(narrow.refresh_token)
    assert wide_again.scope == "read write"


async def test_rt09_flipped_character_is_refused_without_touching_the_store(
    world: World,
) -> None:
    first = await world.login()
    token = first.refresh_token or ""
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    calls = count_calls(world.engine.store)
    # The control: the genuine token does reach the store.
    await world.refresh(token)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(InvalidGrant):
        await world.refresh(flipped)
    assert calls == []
    assert (await world.session(first)).generation == 1


async def test_future_generation_is_refused_without_revocation(world: World) -> None:
    first = await world.login()
    session = await world.session(first)
    forged = await world.engine.tokens.encode_refresh(session, 7)
    with pytest.raises(InvalidGrant):
        await world.refresh(forged)
    assert not (await world.session(first)).revoked
    events = await world.engine.store.list_events(type=EventType.FUTURE_GENERATION_PRESENTED.value)
    assert len(events) == 1


async def test_sl_idle_timeout_ends_the_session(world: World) -> None:
    first = await world.login()
    world.clock.advance(3600)
    with pytest.raises(InvalidGrant):
        await world.refresh(first.refresh_token)
    assert (await world.session(first)).revoked_reason is RevocationReason.IDLE_EXPIRED


async def test_sl_rotation_extends_idle_but_never_past_the_absolute_deadline(
    world: World,
) -> None:
    tokens = await world.login()
    for _ in range(30):  # 30 × 3000 s > the 86400 s absolute lifetime
        world.clock.advance(3000)
        try:
            tokens = await world.refresh(tokens.refresh_token)
        except InvalidGrant:
            break
        session = await world.session(tokens)
        assert session.idle_expires_at <= session.absolute_expires_at
    session = await world.session(tokens)
    assert session.revoked_reason is RevocationReason.ABSOLUTE_EXPIRED


async def test_at03_access_token_never_outlives_the_session(world: World) -> None:
    tokens = await world.login()
    session = await world.session(tokens)
    # Rotate every 50 minutes, inside the idle window, until the last hour.
    while session.absolute_expires_at - world.clock.now() > timedelta(seconds=3060):
        world.clock.advance(3000)
        tokens = await world.refresh(tokens.refresh_token)
        session = await world.session(tokens)
    world.clock.current = session.absolute_expires_at - timedelta(seconds=60)
    late = await world.refresh(tokens.refresh_token)
    assert late.expires_in == 60


async def test_disabled_user_cannot_refresh_and_all_sessions_end(world: World) -> None:
    a = await world.login()
    b = await world.login()
    ended = await world.engine.admin.disable_user("alice")
    assert {e.id for e in ended} == {a.session_id, b.session_id}
    with pytest.raises(InvalidGrant):
        await world.refresh(a.refresh_token)
    with pytest.raises(LoginFailed):
        await world.login()


async def test_password_change_ends_every_other_session_and_keeps_this_one(
    world: World,
) -> None:
    this = await world.login()
    other = await world.login()
    assert this.session_id is not None
    ended = await world.engine.sessions.change_password(
        (await world.session(this)).user_id,
        PASSWORD,
        "an entirely new passphrase",
        keep=this.session_id,
    )
    assert [e.id for e in ended] == [other.session_id]
    world.clock.advance(1)
    assert (await world.refresh(this.refresh_token)).refresh_token
    with pytest.raises(InvalidGrant):
        await world.refresh(other.refresh_token)
    with pytest.raises(LoginFailed):
        await world.login()
    assert await world.engine.login.login("alice", "an entirely new passphrase", world.native)


async def test_password_change_refuses_a_wrong_current_password_or_a_weak_new_one(
    world: World,
) -> None:
    tokens = await world.login()
    user_id = (await world.session(tokens)).user_id
    with pytest.raises(LoginFailed):
        await world.engine.sessions.change_password(
            user_id, "wrong", "another passphrase", keep=None
        )
    with pytest.raises(PasswordRejected):
        await world.engine.sessions.change_password(user_id, PASSWORD, "short", keep=None)
    with pytest.raises(PasswordRejected):
        await world.engine.sessions.change_password(user_id, PASSWORD, "password1", keep=None)


async def test_logout_ends_the_session_and_is_idempotent(world: World) -> None:
    tokens = await world.login()
    await world.engine.sessions.logout(tokens.refresh_token or "", world.native)
    await world.engine.sessions.logout(tokens.refresh_token or "", world.native)
    assert (await world.session(tokens)).revoked_reason is RevocationReason.LOGOUT
    with pytest.raises(InvalidGrant):
        await world.refresh(tokens.refresh_token)


async def test_logout_with_another_clients_token_is_refused(world: World) -> None:
    tokens = await world.login()
    with pytest.raises(InvalidGrant):
        await world.engine.sessions.logout(tokens.refresh_token or "", world.conf)
    assert not (await world.session(tokens)).revoked


async def test_logout_all_ends_every_session_of_the_user(world: World) -> None:
    a = await world.login()
    b = await world.login(world.conf)
    user_id = (await world.session(a)).user_id
    ended = await world.engine.sessions.end_all(user_id)
    assert {e.id for e in ended} == {a.session_id, b.session_id}
    assert await world.engine.sessions.list_for(user_id) == []


async def test_ending_another_users_session_by_id_is_not_found(world: World) -> None:
    tokens = await world.login()
    bob = await world.engine.admin.add_user("bob", "bob's long passphrase")
    with pytest.raises(NotFound):
        await world.engine.sessions.end_by_id(
            tokens.session_id or "",  # type: ignore[arg-type]
            RevocationReason.LOGOUT,
            owner=bob.id,
        )
    assert not (await world.session(tokens)).revoked


async def test_pw03_unknown_user_wrong_password_and_disabled_user_fail_alike(
    world: World,
) -> None:
    await world.engine.admin.add_user("carol", "carol's long passphrase")
    await world.engine.admin.disable_user("carol")
    failures = []
    for username, password in (
        ("nobody", PASSWORD),
        ("alice", "wrong password"),
        ("carol", "carol's long passphrase"),
    ):
        with pytest.raises(LoginFailed) as failed:
            await world.engine.login.login(username, password, world.native)
        failures.append((failed.value.code, failed.value.public))
    assert len(set(failures)) == 1
    events = await world.engine.store.list_events(type=EventType.LOGIN_FAILED.value)
    assert len(events) == 3


async def test_pw04_oversized_password_is_refused_before_hashing(world: World) -> None:
    with pytest.raises(InvalidRequest):
        await world.engine.login.login("alice", "x" * 1_048_576, world.native)


async def test_login_needs_a_first_party_client(world: World) -> None:
    oauth_only = await world.engine.admin.add_client(
        "oauth-only",
        ClientType.PUBLIC,
        grant_types={GrantType.AUTHORIZATION_CODE},
        redirect_uris=["https://app.test/callback"],
    )
    with pytest.raises(UnauthorizedClient):
        await world.engine.login.login("alice", PASSWORD, oauth_only.client)


async def test_login_presenting_a_live_older_token_supersedes_that_session(
    world: World,
) -> None:
    old = await world.login()
    new = await world.engine.login.login(
        "alice", PASSWORD, world.native, previous_refresh_token=old.refresh_token
    )
    assert new.session_id != old.session_id
    assert (await world.session(old)).revoked_reason is RevocationReason.SUPERSEDED_AT_LOGIN


async def test_login_presenting_a_token_reused_after_grace_counts_as_reuse(
    world: World,
) -> None:
    old = await world.login()
    await world.refresh(old.refresh_token)
    world.clock.advance(11)
    await world.engine.login.login(
        "alice", PASSWORD, world.native, previous_refresh_token=old.refresh_token
    )
    assert (await world.session(old)).revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW


async def test_login_ignores_a_garbage_previous_token(world: World) -> None:
    assert await world.engine.login.login(
        "alice", PASSWORD, world.native, previous_refresh_token="kt_rt_garbage"
    )


async def test_reuse_revokes_user_ends_every_session_of_the_user() -> None:
    clock = FakeClock()
    engine = await engine_with(clock=clock, reuse_revokes="user")
    try:
        _, native, _ = await seed(engine)
        a = await engine.login.login("alice", PASSWORD, native.client)
        b = await engine.login.login("alice", PASSWORD, native.client)
        await engine.refresher.refresh(a.refresh_token or "", native.client)
        clock.advance(11)
        with pytest.raises(InvalidGrant):
            await engine.refresher.refresh(a.refresh_token or "", native.client)
        session_b = await engine.store.get_session(b.session_id)  # type: ignore[arg-type]
        assert session_b is not None
        assert session_b.revoked_reason is RevocationReason.REUSE_OUTSIDE_WINDOW
    finally:
        await engine.close()


async def test_grace_zero_makes_any_second_presentation_reuse() -> None:
    clock = FakeClock()
    engine = await engine_with(clock=clock, grace_seconds=0)
    try:
        _, native, _ = await seed(engine)
        first = await engine.login.login("alice", PASSWORD, native.client)
        await engine.refresher.refresh(first.refresh_token or "", native.client)
        with pytest.raises(InvalidGrant):
            await engine.refresher.refresh(first.refresh_token or "", native.client)
    finally:
        await engine.close()


async def test_disabled_client_cannot_refresh(world: World) -> None:
    tokens = await world.login()
    await world.engine.admin.disable_client("native")
    client = await world.engine.admin.get_client("native")
    with pytest.raises(InvalidClient):
        await world.refresh(tokens.refresh_token, client)
    assert (await world.session(tokens)).revoked_reason is RevocationReason.CLIENT_DISABLED


async def test_client_without_refresh_grant_is_unauthorized(world: World) -> None:
    cc = await world.engine.admin.add_client(
        "cc", ClientType.CONFIDENTIAL, grant_types={GrantType.CLIENT_CREDENTIALS}
    )
    tokens = await world.login()
    with pytest.raises(UnauthorizedClient):
        await world.refresh(tokens.refresh_token, cc.client)
    assert (await world.session(tokens)).generation == 0


# `refresh_for`: the client authenticated together with the rotation (`/oauth/token`).


@pytest.fixture
async def confidential() -> AsyncIterator[tuple[Engine, Client, str]]:
    engine = await engine_with(clock=FakeClock())
    _, _, conf = await seed(engine)
    assert conf.secret is not None
    yield engine, conf.client, conf.secret
    await engine.close()


def basic(client_id: str, secret: str | None) -> ClientCredentials:
    return ClientCredentials(client_id, secret, AuthMethod.BASIC)


async def test_refresh_for_rotates_for_the_right_credentials(
    confidential: tuple[Engine, Client, str],
) -> None:
    engine, conf, secret = confidential
    first = await engine.login.login("alice", PASSWORD, conf)
    assert first.refresh_token is not None
    second = await engine.refresher.refresh_for(basic("conf", secret), first.refresh_token)
    assert second.refresh_token not in (None, first.refresh_token)
    assert second.session_id == first.session_id


@pytest.mark.parametrize("token", ["garbage", "kt_rt_" + "A" * 60, "live"])
@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("conf", "wrong"), ("conf", None), ("nobody", "x"), ("", None), ("c" * 200, None)],
)
async def test_refresh_for_answers_invalid_client_before_looking_at_the_token(
    confidential: tuple[Engine, Client, str], token: str, client_id: str, secret: str | None
) -> None:
    engine, conf, _ = confidential
    live = await engine.login.login("alice", PASSWORD, conf)
    assert live.refresh_token is not None
    with pytest.raises(InvalidClient):
        await engine.refresher.refresh_for(
            basic(client_id, secret), live.refresh_token if token == "live" else token
        )
    session = await engine.store.get_session(live.session_id or "")
    assert session is not None
    assert session.generation == 0, "a refused client rotates nothing"


async def test_refresh_for_audits_a_wrong_secret(confidential: tuple[Engine, Client, str]) -> None:
    engine, conf, _ = confidential
    live = await engine.login.login("alice", PASSWORD, conf)
    assert live.refresh_token is not None
    with pytest.raises(InvalidClient):
        await engine.refresher.refresh_for(basic("conf", "wrong"), live.refresh_token)
    kinds = [e.event.type for e in await engine.store.list_events()]
    assert EventType.CLIENT_AUTHENTICATION_FAILED in kinds


async def test_refresh_for_a_disabled_client_or_one_without_the_grant(
    confidential: tuple[Engine, Client, str],
) -> None:
    engine, conf, secret = confidential
    live = await engine.login.login("alice", PASSWORD, conf)
    assert live.refresh_token is not None
    await engine.admin.disable_client(conf.id)
    with pytest.raises(InvalidClient):
        await engine.refresher.refresh_for(basic("conf", secret), live.refresh_token)
    with pytest.raises(InvalidClient):
        await engine.refresher.refresh_for(basic("conf", secret), "garbage")
    cc = await engine.admin.add_client(
        "machine", ClientType.CONFIDENTIAL, grant_types={GrantType.CLIENT_CREDENTIALS}
    )
    assert cc.secret is not None
    with pytest.raises(UnauthorizedClient):
        await engine.refresher.refresh_for(basic("machine", cc.secret), "garbage")


async def test_refresh_for_garbage_from_a_good_client_is_invalid_grant(
    confidential: tuple[Engine, Client, str],
) -> None:
    engine, _, secret = confidential
    with pytest.raises(InvalidGrant):
        await engine.refresher.refresh_for(basic("conf", secret), "kt_rt_garbage")
