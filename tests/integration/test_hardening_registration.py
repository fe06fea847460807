"""Registration rules on SQLite and PostgreSQL (H-12, H-16, H-17): what `engine.admin`
and `keyturn clients add` refuse, and what becomes of a row stored before the rules
(`docs/decisions/codes-and-registration.md`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import jwt
import pytest
from click.testing import CliRunner

from keyturn.cli.main import main
from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidRequest, NotFound, UnauthorizedClient
from keyturn.core.ids import ClientId
from keyturn.core.models import Client, ClientType, Delivery, GrantType, LifetimeOverrides
from keyturn.service.engine import Engine
from support.engine import SECRET, engine_with
from support.server import running_server

SERVER_TTL = 900  # support.engine's access_token_ttl


@pytest.fixture
async def engine(durable_store_url: tuple[str, str | None]) -> AsyncIterator[Engine]:
    url, schema = durable_store_url
    made = await engine_with(url, schema=schema)
    yield made
    await made.close()


async def refused(engine: Engine, client_id: str, kind: ClientType, **values: object) -> str:
    """The message of the refusal of this registration; asserts nothing was stored."""
    with pytest.raises(InvalidRequest) as raised:
        await engine.admin.add_client(client_id, kind, **values)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await engine.admin.get_client(client_id)
    return str(raised.value)


async def store_as_before(engine: Engine, client: Client) -> None:
    """A row written by an older keyturn, before the rules: straight into the store."""
    await engine.store.add_client(
        client, SecurityEvent(type=EventType.CLIENT_CREATED, at=client.created_at)
    )


def a_client(
    client_id: str, kind: ClientType = ClientType.CONFIDENTIAL, **values: object
) -> Client:
    base = Client(
        id=ClientId(client_id),
        type=kind,
        secret_hash=None,
        redirect_uris=(),
        grant_types=frozenset({GrantType.CLIENT_CREDENTIALS}),
        scope=frozenset({"read"}),
        delivery=Delivery.BODY,
        audience=(),
        lifetimes=LifetimeOverrides(),
        enabled=True,
        created_at=datetime.now(UTC),
    )
    return replace(base, **values)  # type: ignore[arg-type]


def keyturn(url: str, schema: str | None, *args: str) -> tuple[int, str]:
    """`keyturn <args>` on this database, in process: `(exit code, output)`."""
    env = {"KEYTURN_DATABASE_URL": url, "KEYTURN_SECRET_KEY": SECRET}
    if schema:
        env["KEYTURN_DB_SCHEMA"] = schema
    with CliRunner().isolation(env=env) as streams:
        try:
            main(list(args))
            code = 0
        except SystemExit as exited:
            code = int(exited.code or 0)
    return code, streams[0].getvalue().decode() + streams[1].getvalue().decode()


# H-12


async def test_h12_a_public_client_may_not_introspect(engine: Engine) -> None:
    message = await refused(engine, "pub", ClientType.PUBLIC, can_introspect=True)
    assert "confidential" in message
    made = await engine.admin.add_client("rs", ClientType.CONFIDENTIAL, can_introspect=True)
    assert made.client.can_introspect


BAD_ORIGINS = [
    "null",
    "*",
    "https://*.app.test",
    "",
    "https://app.test/",
    "https://app.test/path",
    "https://app.test?q=1",
    "https://app.test#f",
    "HTTPS://app.test",
    "https://App.test",
    "https://app.test:443",
    "https://user@app.test",
    "https://app.test:99999",
    " https://app.test",
    "http://app.test",
    "http://localhost.evil.test",
    "http://192.168.1.10:8000",
    "file:///etc/passwd",
    "app.test",
]
GOOD_ORIGINS = [
    "https://app.test",
    "https://app.test:8443",
    "https://xn--bcher-kva.example",
    "http://localhost:8000",
    "http://localhost",
    "http://127.0.0.1:5173",
    "http://[::1]:3000",
]


async def test_h12_only_serialized_https_or_loopback_origins_are_registered(
    engine: Engine,
) -> None:
    for origin in BAD_ORIGINS:
        message = await refused(
            engine, "spa", ClientType.PUBLIC, delivery=Delivery.COOKIE, allowed_origins=[origin]
        )
        assert "origin" in message, origin
    made = await engine.admin.add_client(
        "spa", ClientType.PUBLIC, delivery=Delivery.COOKIE, allowed_origins=GOOD_ORIGINS
    )
    assert made.client.allowed_origins == tuple(GOOD_ORIGINS)


async def test_h12_redirect_uris_are_still_checked(engine: Engine) -> None:
    for uri in ["http://app.test/cb", "https://app.test/cb#frag", "javascript:alert(1)", "/cb"]:
        await refused(engine, "app", ClientType.PUBLIC, redirect_uris=[uri])


def test_h12_clients_add_refuses_in_one_line(durable_store_url: tuple[str, str | None]) -> None:
    url, schema = durable_store_url
    for args, words in [
        (("--type", "public", "--introspect"), "only a confidential client may introspect"),
        (("--type", "public", "--origin", "null"), "origin 'null'"),
        (("--type", "public", "--origin", "*"), "origin '*'"),
    ]:
        code, output = keyturn(url, schema, "clients", "add", "x", *args)
        assert code == 1, output
        assert output.startswith("keyturn: error: ")
        assert words in output
        assert output.count("\n") == 1
    code, output = keyturn(url, schema, "clients", "list", "--json")
    assert (code, output.strip()) == (0, "[]")


def test_h12_cors_never_answers_a_stored_null_or_wildcard_origin(
    durable_store_url: tuple[str, str | None],
) -> None:
    url, schema = durable_store_url

    async def seed() -> None:
        engine = await engine_with(url, schema=schema)
        try:
            await store_as_before(
                engine,
                a_client(
                    "legacy",
                    ClientType.PUBLIC,
                    grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
                    delivery=Delivery.COOKIE,
                    allowed_origins=("null", "*", "https://ok.test"),
                ),
            )
        finally:
            await engine.close()

    asyncio.run(seed())
    env = {"KEYTURN_DATABASE_URL": url, "KEYTURN_SECRET_KEY": SECRET}
    if schema:
        env["KEYTURN_DB_SCHEMA"] = schema
    with running_server(env) as base:
        for origin in ("null", "*"):
            asked = {"Origin": origin, "Access-Control-Request-Method": "POST"}
            pre = httpx.options(f"{base}/auth/refresh", headers=asked, timeout=30)
            assert pre.status_code == 403
            assert "access-control-allow-origin" not in pre.headers
            actual = httpx.post(f"{base}/auth/refresh", headers={"Origin": origin}, timeout=30)
            assert "access-control-allow-origin" not in actual.headers
        ok = {"Origin": "https://ok.test", "Access-Control-Request-Method": "POST"}
        pre = httpx.options(f"{base}/auth/refresh", headers=ok, timeout=30)
        assert pre.headers["access-control-allow-origin"] == "https://ok.test"


# H-16


async def test_h16_a_client_id_shaped_like_a_user_sub_is_refused(engine: Engine) -> None:
    alice = await engine.admin.add_user("alice", "a fine long passphrase")
    for client_id in (
        alice.id,
        alice.id.upper(),
        alice.id.replace("-", ""),
        "{" + alice.id + "}",
        "urn:uuid:" + alice.id,
    ):
        message = await refused(engine, client_id, ClientType.CONFIDENTIAL)
        assert "user" in message
    made = await engine.admin.add_client("svc", ClientType.CONFIDENTIAL)
    issued = await engine.client_credentials.issue(made.client)
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == "svc"


async def test_h16_a_stored_client_shaped_like_a_user_gets_no_token(engine: Engine) -> None:
    alice = await engine.admin.add_user("alice", "a fine long passphrase")
    await store_as_before(engine, a_client(alice.id))
    client = await engine.admin.get_client(alice.id)
    with pytest.raises(UnauthorizedClient):
        await engine.client_credentials.issue(client)


def test_h16_clients_add_refuses_a_uuid_in_one_line(
    durable_store_url: tuple[str, str | None],
) -> None:
    url, schema = durable_store_url
    code, output = keyturn(
        url, schema, "clients", "add", "0b5c6a2e-6f0e-4c39-9a51-8d8f1f7e4a10", "--type", "public"
    )
    assert code == 1, output
    assert output.startswith("keyturn: error: ")
    assert output.count("\n") == 1


# H-17


async def test_h17_client_access_ttl_bounded(engine: Engine) -> None:
    message = await refused(
        engine,
        "long",
        ClientType.CONFIDENTIAL,
        lifetimes=LifetimeOverrides(access_token_ttl=SERVER_TTL + 1),
    )
    assert str(SERVER_TTL) in message
    made = await engine.admin.add_client(
        "equal", ClientType.CONFIDENTIAL, lifetimes=LifetimeOverrides(access_token_ttl=SERVER_TTL)
    )
    assert (await engine.client_credentials.issue(made.client)).expires_in == SERVER_TTL
    # A row registered before the bound is clamped where tokens are issued.
    await store_as_before(
        engine, a_client("legacy", lifetimes=LifetimeOverrides(access_token_ttl=86400))
    )
    issued = await engine.client_credentials.issue(await engine.admin.get_client("legacy"))
    assert issued.expires_in == SERVER_TTL
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == SERVER_TTL
