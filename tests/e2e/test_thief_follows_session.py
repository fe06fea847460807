"""A thief who copied a refresh token once tries to follow the session for good, exactly
as the outside attack did: watch for the victim's rotation through the token-state
oracles, replay the predecessor at once, inside any window, round after round. Against
every preset the oracles say nothing, every replay is on the record, the budget ends
the session by the replay after it, and the victim's device learns it at its next
refresh. The thief works from another address than the victim (127.0.0.2 on the
loopback network): from the very address that just rotated, within seconds, his replays
would pass for the victim's own tabs — the residual risk docs/rotation-policies.md
states."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from conftest import Server, start_server
from keyturn.core.audit import EventType
from keyturn.core.models import ClientType, Delivery, GrantType, RevocationReason
from keyturn.core.policy import DEFAULT_BUDGET, ClientKind, RotationSettings
from keyturn.settings import Settings
from keyturn.wiring import open_engine
from support.engine import PASSWORD

ROUNDS = DEFAULT_BUDGET.replays + 1
"""Five rounds and more: every replay the budget allows, and the one past it."""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(request, tmp_path_factory)


async def _register(settings: Settings, name: str, rotation: RotationSettings) -> str | None:
    engine = await open_engine(settings)
    try:
        made = await engine.admin.add_client(
            name,
            ClientType.CONFIDENTIAL if rotation.kind is ClientKind.SERVICE else ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=frozenset({"read"}),
            delivery=Delivery.BODY,
            rotation=rotation,
        )
        return made.secret
    finally:
        await engine.close()


async def _ended(settings: Settings, session_id: str) -> tuple[Any, list[str], int]:
    """The session's end reason, its reuse alarms' reasons and its recorded replays."""
    engine = await open_engine(settings)
    try:
        session = await engine.store.get_session(session_id)  # type: ignore[arg-type]
        assert session is not None
        alarms = await engine.store.list_events(type=EventType.REUSE_DETECTED.value)
        replays = await engine.store.list_events(type=EventType.REFRESH_REPLAYED.value)
        return (
            session.revoked_reason,
            [e.event.reason or "" for e in alarms if e.event.session_id == session_id],
            sum(1 for e in replays if e.event.session_id == session_id),
        )
    finally:
        await engine.close()


THIEF_ADDRESS = "127.0.0.2"
"""The thief's requests leave from another address than the victim's (127.0.0.1): a
replay within seconds of a rotation from the address that rotated is the same device's
tabs or processes, and spends no budget (docs/rotation-policies.md)."""

THIEF = httpx.Client(transport=httpx.HTTPTransport(local_address=THIEF_ADDRESS), timeout=30)


def _post(
    server: Server, path: str, data: dict[str, str], by: Any = httpx, **kwargs: Any
) -> httpx.Response:
    response: httpx.Response = by.post(f"{server.base}{path}", data=data, timeout=30, **kwargs)
    return response


def _refresh(server: Server, client_id: str, token: str, by: Any = httpx) -> httpx.Response:
    return _post(
        server,
        "/oauth/token",
        {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token},
        by,
    )


def _oracles(server: Server, client_id: str, token: str) -> list[tuple[int, bytes]]:
    """What the thief can learn without presenting the token: introspection as the
    public client, and the Prometheus counters."""
    asked = _post(server, "/oauth/introspect", {"client_id": client_id, "token": token}, THIEF)
    scraped = THIEF.get(f"{server.base}/metrics")
    return [(asked.status_code, asked.content), (scraped.status_code, scraped.content)]


@pytest.mark.parametrize("kind", [ClientKind.BROWSER, ClientKind.NATIVE, ClientKind.AGENT, None])
def test_a_thief_in_lockstep_is_caught_within_the_budget(
    server: Server, kind: ClientKind | None
) -> None:
    client_id = f"followed-{kind or 'default'}"
    asyncio.run(_register(server.settings, client_id, RotationSettings(kind=kind)))
    login = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": client_id},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    session_id = _session_of(login.json())
    victim = stolen = login.json()["refresh_token"]  # the thief copies it once

    thief_tokens = []
    for round_ in range(1, ROUNDS + 1):
        before = _oracles(server, client_id, stolen)
        rotated = _refresh(server, client_id, victim)
        assert rotated.status_code == 200, rotated.text
        after = _oracles(server, client_id, stolen)
        # The oracles are closed: nothing the thief can ask shows the rotation.
        assert before == after
        assert [status for status, _ in after] == [401, 401]
        replayed = _refresh(server, client_id, stolen, THIEF)  # at once: inside any window
        if round_ == ROUNDS:
            assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
            victim = rotated.json()["refresh_token"]
            break
        # The thief holds the victim's own live token again, as the attack showed.
        assert replayed.status_code == 200, (round_, replayed.text)
        assert replayed.json()["refresh_token"] == rotated.json()["refresh_token"]
        thief_tokens.append(replayed.json()["refresh_token"])
        victim = stolen = rotated.json()["refresh_token"]

    reason, alarms, replays = asyncio.run(_ended(server.settings, session_id))
    assert reason is RevocationReason.REPLAY_BUDGET_EXCEEDED
    assert alarms == ["replay_budget_exceeded"]
    assert replays == DEFAULT_BUDGET.replays  # every answered replay is on the record
    assert len(thief_tokens) == DEFAULT_BUDGET.replays
    # The victim's device is told at its next refresh, and so is the thief.
    told = _refresh(server, client_id, victim)
    assert (told.status_code, told.json()["error"]) == (400, "invalid_grant")
    for token in thief_tokens:
        assert _refresh(server, client_id, token, THIEF).status_code == 400


def test_a_services_copied_refresh_token_is_useless_without_its_secret(server: Server) -> None:
    """The service preset does not rotate: a confidential client gains nothing from
    rotation (FAPI 2.0). What protects its token is the client's secret; a thief with the
    token alone is refused as an unauthenticated client, and the session goes on."""
    secret = asyncio.run(
        _register(server.settings, "followed-service", RotationSettings(kind=ClientKind.SERVICE))
    )
    assert secret
    login = httpx.post(
        f"{server.base}/auth/login",
        json={
            "username": "alice",
            "password": PASSWORD,
            "client_id": "followed-service",
            "client_secret": secret,
        },
        timeout=30,
    )
    assert login.status_code == 200, login.text
    token = login.json()["refresh_token"]
    for _ in range(ROUNDS):
        kept = _post(
            server,
            "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": token},
            auth=("followed-service", secret),
        )
        assert kept.status_code == 200, kept.text
        assert kept.json()["refresh_token"] == token
        thief = _refresh(server, "followed-service", token, THIEF)
        assert (thief.status_code, thief.json()["error"]) == (401, "invalid_client")


def test_the_victims_own_tabs_at_once_spend_no_budget(server: Server) -> None:
    """Uncoordinated tabs of the victim's browser: after each rotation another tab
    presents the parent at once, from the same address. Past the budget's worth of
    rounds the session lives on, each replay recorded as concurrent."""
    client_id = "tabs-browser"
    asyncio.run(_register(server.settings, client_id, RotationSettings(kind=ClientKind.BROWSER)))
    login = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": client_id},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    token = login.json()["refresh_token"]
    for _ in range(ROUNDS + 2):
        rotated = _refresh(server, client_id, token)
        assert rotated.status_code == 200, rotated.text
        other_tab = _refresh(server, client_id, token)
        assert other_tab.status_code == 200, other_tab.text
        assert other_tab.json()["refresh_token"] == rotated.json()["refresh_token"]
        token = rotated.json()["refresh_token"]
    reason, alarms, replays = asyncio.run(_ended(server.settings, _session_of(login.json())))
    assert (reason, alarms, replays) == (None, [], ROUNDS + 2)


def _session_of(body: dict[str, Any]) -> str:
    """The session id a login answered with, read from its access token's `sid`."""
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    return str(claims["sid"])
