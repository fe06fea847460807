"""Rows of the security checklist on the token, revocation and introspection endpoints
that need more than `test_oauth_token_endpoint.py` and `test_oauth_revoke_introspect.py`
show: TE-04, TE-10, CA-01, CA-02, IV-01, RV-03, IN-02, AT-01, AT-02, over real HTTP on
SQLite and PostgreSQL.

The server here is watched. Its log goes to a file the tests read, and what it sends
its database is counted: on SQLite every statement, through the driver's own trace
callback (installed in the server process by a `sitecustomize` on its PYTHONPATH); on
PostgreSQL every byte, through a proxy in front of the database. "No store query" is
then measured, and each such test shows the count move for a request that does query.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey

from conftest import SECRET, Server, _seed
from keyturn.core.audit import EventType, RecordedEvent, SecurityEvent
from keyturn.core.ids import ClientId, SessionId
from keyturn.core.models import Session
from keyturn.core.ports import Clock
from keyturn.core.registration import registration_problem
from keyturn.crypto import access_tokens
from keyturn.crypto.client_secrets import hash_secret
from keyturn.service.engine import Engine
from keyturn.settings import Settings, SigningAlg
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD, FakeClock
from support.server import running_server
from support.tcp_proxy import free_port
from support.token_endpoint import FORM, assert_error, introspect, post, refresh, revoke

# Installed as `sitecustomize` in the server process only: every connection the SQLite
# store opens writes each statement it runs as one line to KEYTURN_TEST_SQL_TRACE.
SQL_TRACE_HOOK = """
import os
import sqlite3
import threading

_path = os.environ.get("KEYTURN_TEST_SQL_TRACE")
if _path:
    _connect = sqlite3.connect
    _lock = threading.Lock()
    _out = open(_path, "a", buffering=1)

    def _trace(statement):
        with _lock:
            _out.write(" ".join(statement.split()) + "\\n")

    def _traced(*args, **kwargs):
        db = _connect(*args, **kwargs)
        db.set_trace_callback(_trace)
        return db

    sqlite3.connect = _traced
"""

# AT-02 asks for 10,000 tokens from one client within a minute or so: above the
# default per-client limits (1,200 a minute), which other tests prove.
MANY_REQUESTS = {
    "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": "1000000",
    "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "1000000",
}
OTHER_ISSUER = "https://elsewhere.test"
OUT_OF_BAND_HEADERS = {"jku", "x5u", "jwk", "x5c"}
# RFC 6749 §3.3: scope = scope-token *( SP scope-token ).
SCOPE_SYNTAX = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")


class CountingProxy:
    """A TCP proxy on a thread of its own that counts the bytes its clients send to
    `target`: with the server's database behind it, any statement moves the count."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, upstream_writer, counted=True),
            self._pipe(upstream_reader, writer, counted=False),
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, counted: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await source.read(65536):
                if counted:
                    self.sent += len(data)
                sink.write(data)
                await sink.drain()
        sink.transport.abort()


@dataclass(frozen=True)
class Watched:
    server: Server
    log: Path
    """The server's stderr: its JSON log, access lines included."""
    traffic: Callable[[], int]
    """Grows with whatever the server sends its database: statements run (SQLite),
    bytes sent (PostgreSQL)."""

    def quiet_traffic(self) -> int:
        """The count once it has stopped moving, so that work an earlier request left
        running (a WAL checkpoint, a pooled connection's reset) is not counted later."""
        last = self.traffic()
        deadline = time.monotonic() + 10
        while True:
            time.sleep(0.3)
            now = self.traffic()
            if now == last or time.monotonic() > deadline:
                return now
            last = now


def _lines(path: Path) -> int:
    with path.open("rb") as trace:
        return sum(1 for _ in trace)


@contextmanager
def watched_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    extra_env: dict[str, str] | None = None,
    signing_alg: SigningAlg = SigningAlg.ES256,
) -> Iterator[Watched]:
    """A server seeded as the e2e `server` fixture is (`conftest._seed`), on the store
    `request.param` names, signing with `signing_alg` from its first key on."""
    folder = tmp_path_factory.mktemp("watched")
    log = folder / "server.log"
    env = {
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_GRACE_SECONDS": "10",
        "KEYTURN_LOG_LEVEL": "DEBUG",
        "KEYTURN_SIGNING_ALG": signing_alg.value,
        **(extra_env or {}),
    }
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'keyturn.db'}"
        upgrade(url)
        settings = Settings(database_url=url, secret_key=SECRET, signing_alg=signing_alg)
        secrets = asyncio.run(_seed(settings))
        trace = folder / "statements.log"
        trace.touch()
        (folder / "sitecustomize.py").write_text(SQL_TRACE_HOOK)
        path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
        env |= {
            "KEYTURN_DATABASE_URL": url,
            "KEYTURN_TEST_SQL_TRACE": str(trace),
            "PYTHONPATH": os.pathsep.join(path),
        }
        with running_server(env, log_path=log) as base:
            yield Watched(Server(base, settings, secrets), log, lambda: _lines(trace))
        return
    postgres = request.getfixturevalue("postgres_url")
    schema = create_pg_schema(postgres)
    try:
        settings = Settings(
            database_url=postgres, secret_key=SECRET, db_schema=schema, signing_alg=signing_alg
        )
        secrets = asyncio.run(_seed(settings))
        parts = urlsplit(postgres)
        with CountingProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
            user = parts.netloc.rpartition("@")[0]
            address = f"127.0.0.1:{proxy.port}"
            proxied = parts._replace(netloc=f"{user}@{address}" if user else address)
            env |= {"KEYTURN_DATABASE_URL": proxied.geturl(), "KEYTURN_DB_SCHEMA": schema}
            with running_server(env, log_path=log) as base:
                yield Watched(Server(base, settings, secrets), log, lambda: proxy.sent)
    finally:
        drop_pg_schema(postgres, schema)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def watched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watched]:
    with watched_server(request, tmp_path_factory, extra_env=MANY_REQUESTS) as found:
        yield found


@pytest.fixture
def server(watched: Watched) -> Server:
    return watched.server


@asynccontextmanager
async def engine_of(server: Server, clock: Clock | None = None) -> AsyncIterator[Engine]:
    """An engine on the server's database and keys, in this process."""
    engine = await open_engine(
        Settings(**{**server.settings.model_dump(), "issuer": server.base}), clock=clock
    )
    try:
        yield engine
    finally:
        await engine.close()


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def new_lines(log: Path, offset: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_bytes()[offset:].splitlines() if line]


# TE-04


def test_te04_a_client_secret_in_the_query_string_is_refused_and_never_logged(
    watched: Watched,
) -> None:
    server = watched.server
    secret = server.secrets["conf"]
    token = server.rt0("conf")
    offset = watched.log.stat().st_size
    secret_in_query = httpx.post(
        f"{server.base}/oauth/token?client_id=conf&client_secret={quote_plus(secret)}",
        data={"grant_type": "client_credentials"},
        timeout=30,
    )
    assert_error(secret_in_query, 400, "invalid_request")
    everything_in_query = httpx.post(
        f"{server.base}/oauth/token?grant_type=refresh_token&refresh_token={token}"
        f"&client_id=conf&client_secret={quote_plus(secret)}",
        headers=FORM,
        timeout=30,
    )
    assert_error(everything_in_query, 400, "invalid_request")

    # Both requests were logged (so this log is the one to search), by route template.
    access = [r for r in new_lines(watched.log, offset) if r["logger"] == "keyturn.access"]
    assert [(r["method"], r["route"], r["status"]) for r in access] == [
        ("POST", "/oauth/token", 400),
        ("POST", "/oauth/token", 400),
    ]
    log = watched.log.read_text()
    assert secret not in log
    assert quote_plus(secret) not in log
    assert token not in log
    # Refused before anything was consumed: the token still rotates, the secret works.
    again = post(
        server, {"grant_type": "refresh_token", "refresh_token": token}, auth=("conf", secret)
    )
    assert again.status_code == 200, again.text


# TE-10


def test_te10_oversized_bodies_are_refused_quickly_without_a_store_statement(
    watched: Watched,
) -> None:
    server = watched.server
    token = refresh(server, server.rt0()).json()["refresh_token"]  # the server's pool is open
    chunk = b"x" * 65536
    oversized: dict[str, Callable[[], httpx.Response]] = {
        "1 MiB refresh_token": lambda: post(
            server,
            {
                "grant_type": "refresh_token",
                "refresh_token": "x" * (1 << 20),
                "client_id": "native",
            },
        ),
        "10 MiB body": lambda: post(server, content=b"a=" + b"x" * (10 << 20), headers=FORM),
        "10 MiB chunked, no Content-Length": lambda: post(
            server,
            content=iter(
                [b"grant_type=refresh_token&client_id=native&refresh_token="] + [chunk] * 160
            ),
            headers=FORM,
        ),
    }
    before = watched.quiet_traffic()
    for name, send in oversized.items():
        started = time.monotonic()
        response = send()
        elapsed = time.monotonic() - started
        assert response.status_code in (400, 413), (name, response.status_code)
        assert_error(response, response.status_code, "invalid_request")
        assert elapsed < 5, (name, elapsed)
    assert watched.quiet_traffic() == before
    # The count does move when a request reaches the store, and the token was untouched.
    assert refresh(server, token).status_code == 200
    assert watched.quiet_traffic() > before


# CA-01

SPECIAL_CLIENTS = [
    ("an:identifier", "some secure & non-standard secret"),
    (" %&+", " %&+"),
]


async def register_with_secret(server: Server, client_id: str, secret: str) -> None:
    """Register a confidential client like `conf` under `client_id`, whose secret is
    `secret`. `keyturn clients add` (`Admin.add_client`) only ever generates a secret
    (`kt_cs_` and 256 random bits, base64url: no character that needs encoding), so a
    chosen one is stored through the store's own `add_client`, after the registration
    rules every path applies."""
    async with engine_of(server) as engine:
        now = engine.clock.now()
        template = await engine.admin.get_client("conf")
        client = replace(
            template, id=ClientId(client_id), secret_hash=hash_secret(secret), created_at=now
        )
        assert registration_problem(client, engine.config.lifetimes) is None
        event = SecurityEvent(type=EventType.CLIENT_CREATED, at=now, client_id=client.id)
        await engine.store.add_client(client, event)


@pytest.mark.parametrize(("client_id", "secret"), SPECIAL_CLIENTS, ids=["colon", "reserved"])
def test_ca01_special_characters_in_id_and_secret_over_basic_with_authlib(
    server: Server, client_id: str, secret: str
) -> None:
    asyncio.run(register_with_secret(server, client_id, secret))
    token_endpoint = f"{server.base}/oauth/token"
    # RFC 6749 §2.3.1: the client form-urlencodes its id and secret and uses the results
    # as the Basic user name and password. Authlib builds the Basic header from the
    # values it is given, unencoded (as do requests-oauthlib and requests-oauth2client),
    # so it is given the encoded ones.
    with OAuth2Session(
        client_id=quote_plus(client_id),
        client_secret=quote_plus(secret),
        token_endpoint_auth_method="client_secret_basic",
    ) as client:
        own = client.fetch_token(token_endpoint, grant_type="client_credentials")
        assert claims_of(own["access_token"])["client_id"] == client_id
        assert claims_of(own["access_token"])["sub"] == client_id

        rt0 = server.rt0(client_id)
        first = client.refresh_token(token_endpoint, refresh_token=rt0)
        second = client.refresh_token(token_endpoint, refresh_token=first["refresh_token"])
    assert len({rt0, first["refresh_token"], second["refresh_token"]}) == 3
    claims = claims_of(second["access_token"])
    assert claims["client_id"] == client_id
    assert claims["sid"] == claims_of(first["access_token"])["sid"]


# CA-02


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


MALFORMED_BASIC = {
    "no credentials": "Basic",
    "no colon": "Basic Zm9v",
    "not base64": _basic(b"conf:x") + "!",
    "bad percent-encoding": _basic(b"foo with %:foo with $"),
}


def _basic_refused_before_the_store(watched: Watched, header: str) -> None:
    """A refresh under that `Authorization` header is exactly 400 `invalid_request`,
    with no statement sent to the store, and the token still rotates afterwards."""
    server = watched.server
    token = server.rt0("conf")
    before = watched.quiet_traffic()
    response = post(
        server,
        {"grant_type": "refresh_token", "refresh_token": token},
        headers={"Authorization": header},
    )
    assert_error(response, 400, "invalid_request")
    assert watched.quiet_traffic() == before  # refused before the store
    ok = post(
        server,
        {"grant_type": "refresh_token", "refresh_token": token},
        auth=("conf", server.secrets["conf"]),
    )
    assert ok.status_code == 200, ok.text  # unchanged: the token still rotates


@pytest.mark.parametrize("header", MALFORMED_BASIC.values(), ids=MALFORMED_BASIC.keys())
def test_ca02_each_malformed_basic_header_is_exactly_invalid_request(
    watched: Watched, header: str
) -> None:
    _basic_refused_before_the_store(watched, header)


# IV-01

HOSTILE_FORMS = {
    "NUL in client_id": "grant_type=client_credentials&client_id=a%00b",
    "NUL in refresh_token": "grant_type=refresh_token&client_id=native&refresh_token=kt_rt_%00",
    "invalid UTF-8 in client_id": "grant_type=client_credentials&client_id=%FF%FE",
    "invalid UTF-8 in refresh_token": "grant_type=refresh_token&client_id=native"
    "&refresh_token=%FF%FE",
    "lone surrogate in client_id": "grant_type=client_credentials&client_id=%ED%A0%80",
    "lone surrogate in refresh_token": "grant_type=refresh_token&client_id=native"
    "&refresh_token=%ED%A0%80",
}
HOSTILE_BASIC = {
    "NUL in the Basic id": _basic(b"a\x00b:x"),
    "encoded NUL in the Basic id": _basic(b"a%00b:x"),
    "invalid UTF-8 in the Basic id": _basic(b"\xff\xfe:x"),
    "encoded invalid UTF-8 in the Basic id": _basic(b"%FF%FE:x"),
    "lone surrogate in the Basic secret": _basic(b"conf:\xed\xa0\x80"),
    "encoded lone surrogate in the Basic secret": _basic(b"conf:%ED%A0%80"),
}


@pytest.mark.parametrize("body", HOSTILE_FORMS.values(), ids=HOSTILE_FORMS.keys())
def test_iv01_hostile_characters_in_the_token_form_are_invalid_request(
    watched: Watched, body: str
) -> None:
    before = watched.quiet_traffic()
    assert_error(post(watched.server, content=body, headers=FORM), 400, "invalid_request")
    assert watched.quiet_traffic() == before  # no write, not even a read


@pytest.mark.parametrize("header", HOSTILE_BASIC.values(), ids=HOSTILE_BASIC.keys())
def test_iv01_hostile_characters_in_basic_credentials_are_invalid_request(
    watched: Watched, header: str
) -> None:
    _basic_refused_before_the_store(watched, header)


HOSTILE_SIDS = {
    "NUL": ("%00", 400, "invalid_request"),
    "NUL inside": ("a%00b", 400, "invalid_request"),
    "invalid UTF-8": ("%FF%FE", 404, "not_found"),
    "lone surrogate": ("%ED%A0%80", 404, "not_found"),
}


@pytest.mark.parametrize(("sid", "status", "code"), HOSTILE_SIDS.values(), ids=HOSTILE_SIDS.keys())
def test_iv01_a_hostile_session_id_in_the_path_is_refused_not_a_500(
    server: Server, sid: str, status: int, code: str
) -> None:
    rt, at = server.tokens("native")
    response = httpx.delete(
        f"{server.base}/auth/sessions/{sid}", headers={"Authorization": f"Bearer {at}"}, timeout=30
    )
    assert_error(response, status, code)
    # The caller's own session was not touched.
    assert refresh(server, rt).status_code == 200


# RV-03


async def session_state(server: Server, sid: str) -> tuple[Session | None, list[RecordedEvent]]:
    """A session's row and its audit events, to compare before and after."""
    async with engine_of(server) as engine:
        session = await engine.store.get_session(SessionId(sid))
        events = await engine.store.list_session_events(SessionId(sid), after_id=None, limit=1000)
        return session, events


def state_of(server: Server, sid: str) -> tuple[Session | None, list[RecordedEvent]]:
    return asyncio.run(session_state(server, sid))


@dataclass(frozen=True)
class OldLogin:
    refresh_token: str
    access_token: str
    sid: str


async def _old_login(server: Server, client_id: str, days: int) -> OldLogin:
    """A login made `days` ago through the server's own database and keys."""
    clock = FakeClock(datetime.now(UTC) - timedelta(days=days))
    async with engine_of(server, clock) as engine:
        client = await engine.admin.get_client(client_id)
        issued = await engine.login.login("alice", PASSWORD, client)
        return OldLogin(issued.refresh_token or "", issued.access_token, issued.session_id or "")


def old_login(server: Server, client_id: str = "conf", days: int = 40) -> OldLogin:
    """Past the 30-day absolute deadline: the refresh token and the access token of this
    session are both long expired."""
    return asyncio.run(_old_login(server, client_id, days))


async def _expired_access_token(server: Server, sid: str) -> str:
    """An access token of live session `sid`, signed by the server's key, whose `exp`
    passed five minutes ago."""
    async with engine_of(server) as engine:
        session = await engine.store.get_session(SessionId(sid))
        assert session is not None
        now = engine.clock.now()
        return await engine.tokens.mint_access(
            subject=session.user_id,
            client=await engine.admin.get_client(session.client_id),
            scope="read",
            session_id=session.id,
            issued_at=now - timedelta(minutes=20),
            expires_at=now - timedelta(minutes=5),
        )


def test_rv03_an_already_revoked_token_answers_200_and_changes_nothing(server: Server) -> None:
    auth = ("conf", server.secrets["conf"])
    rt, at = server.tokens("conf")
    sid = claims_of(at)["sid"]
    assert revoke(server, {"token": rt}, auth=auth).status_code == 200
    before = state_of(server, sid)
    assert before[0] is not None
    assert before[0].revoked
    for data in (
        {"token": rt},
        {"token": rt, "token_type_hint": "refresh_token"},
        {"token": at, "token_type_hint": "access_token"},
    ):
        again = revoke(server, data, auth=auth)
        assert again.status_code == 200
        assert again.content == b""
    assert state_of(server, sid) == before
    assert_error(
        post(server, {"grant_type": "refresh_token", "refresh_token": rt}, auth=auth),
        400,
        "invalid_grant",
    )


def test_rv03_expired_tokens_answer_200_and_change_nothing(server: Server) -> None:
    auth = ("conf", server.secrets["conf"])
    old = old_login(server)
    live_rt, live_at = server.tokens("conf")
    live_sid = claims_of(live_at)["sid"]
    expired_at = asyncio.run(_expired_access_token(server, live_sid))
    old_before, live_before = state_of(server, old.sid), state_of(server, live_sid)
    assert old_before[0] is not None
    assert not old_before[0].revoked
    for token in (old.refresh_token, old.access_token, expired_at):
        response = revoke(server, {"token": token}, auth=auth)
        assert response.status_code == 200
        assert response.content == b""
    assert state_of(server, old.sid) == old_before
    assert state_of(server, live_sid) == live_before
    # An expired access token is no handle on its session, which lives on.
    assert introspect(server, live_at)["active"] is True
    again = post(server, {"grant_type": "refresh_token", "refresh_token": live_rt}, auth=auth)
    assert again.status_code == 200, again.text


# IN-02


def _foreign_token(kid: str, issuer: str, audience: str) -> str:
    """An RFC 9068 access token of another issuer, signed by a key of its own."""
    key = ECKey.generate_key("P-256")
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "conf",
        "aud": audience,
        "exp": now + 300,
        "iat": now,
        "jti": os.urandom(16).hex(),
        "client_id": "conf",
        "scope": "read",
    }
    return jose_jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, key)


async def _minted(server: Server) -> dict[str, str]:
    """Access tokens made with the server's own signing key: one in date (the control),
    and others that are not valid ones of this issuer."""
    async with engine_of(server) as engine:
        conf = await engine.admin.get_client("conf")
        now = engine.clock.now()

        async def mint(issued: timedelta, expires: timedelta) -> str:
            return await engine.tokens.mint_access(
                subject="conf",
                client=conf,
                scope="read",
                session_id=None,
                issued_at=now + issued,
                expires_at=now + expires,
            )

        ring = await engine.tokens.ring()
        kid = next(iter(ring.verification_keys))
        return {
            "in date": await mint(timedelta(0), timedelta(minutes=5)),
            "expired 5 minutes ago": await mint(-timedelta(minutes=20), -timedelta(minutes=5)),
            "expired 2 seconds ago": await mint(-timedelta(minutes=5), -timedelta(seconds=2)),
            "another issuer, signed with this server's key": access_tokens.mint(
                ring,
                issuer=OTHER_ISSUER,
                subject="conf",
                audience="api",
                client_id="conf",
                scope="read",
                session_id=None,
                issued_at=now,
                expires_at=now + timedelta(minutes=5),
                jti=os.urandom(16).hex(),
            ),
            "another issuer's key, under this server's kid": _foreign_token(
                kid, OTHER_ISSUER, "api"
            ),
            "another issuer's key and kid": _foreign_token("elsewhere-1", OTHER_ISSUER, "api"),
            "another key claiming this issuer": _foreign_token(kid, server.base, "api"),
        }


def test_in02_expired_and_foreign_access_tokens_introspect_exactly_inactive(
    server: Server,
) -> None:
    minted = asyncio.run(_minted(server))
    control = introspect(server, minted.pop("in date"))
    assert control["active"] is True  # minted as the others are, and in date
    assert control["client_id"] == "conf"
    minted["from a login 40 days ago"] = old_login(server).access_token
    for name, token in minted.items():
        assert introspect(server, token) == {"active": False}, name


# AT-01


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def rs256(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with watched_server(request, tmp_path_factory, signing_alg=SigningAlg.RS256) as found:
        yield found.server


def test_at01_an_rs256_deployment_works_end_to_end(rs256: Server) -> None:
    server = rs256
    meta = httpx.get(f"{server.base}/.well-known/oauth-authorization-server", timeout=30).json()
    keys = httpx.get(meta["jwks_uri"], timeout=30).json()["keys"]
    assert keys
    for key in keys:
        assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    kids = {key["kid"] for key in keys}

    login = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "native"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    refreshed = refresh(server, login.json()["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    again = refresh(server, refreshed.json()["refresh_token"])
    assert again.status_code == 200, again.text
    own = post(server, {"grant_type": "client_credentials"}, auth=("conf", server.secrets["conf"]))
    assert own.status_code == 200, own.text
    tokens = [
        login.json()["access_token"],
        refreshed.json()["access_token"],
        again.json()["access_token"],
        own.json()["access_token"],
    ]

    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    for token in tokens:
        header = jwt.get_unverified_header(token)
        assert header["typ"] == "at+jwt"
        assert header["alg"] == "RS256"
        assert header["kid"] in kids
        assert not OUT_OF_BAND_HEADERS & set(header)
        claims = jwt.decode(
            token,
            jwks.get_signing_key_from_jwt(token).key,
            algorithms=["RS256"],
            audience=[server.base, "api"],
            issuer=server.base,
        )
        assert claims["client_id"] in ("native", "conf")
    # The server reads its own RS256 tokens: at introspection, and at the account API.
    for token in tokens:
        assert introspect(server, token)["active"] is True
    sessions = httpx.get(
        f"{server.base}/auth/sessions",
        headers={"Authorization": f"Bearer {tokens[2]}"},
        timeout=30,
    )
    assert sessions.status_code == 200, sessions.text


# AT-02

TOKENS = 10_000
CHAINS = 8
"""Refresh chains run side by side, each on its own session."""
ROTATIONS = 250
"""Rotations per chain: `CHAINS * ROTATIONS` access tokens carry a `sid`; the rest of
`TOKENS` are the client's own (client_credentials), without one."""


def _rotate(server: Server, rt: str, times: int) -> list[str]:
    tokens = []
    with httpx.Client(timeout=30) as http:
        for _ in range(times):
            answer = http.post(
                f"{server.base}/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": rt},
                auth=("conf", server.secrets["conf"]),
            )
            assert answer.status_code == 200, answer.text
            rt = answer.json()["refresh_token"]
            tokens.append(answer.json()["access_token"])
    return tokens


def _own_tokens(server: Server, times: int) -> list[str]:
    tokens = []
    with httpx.Client(timeout=30) as http:
        for _ in range(times):
            answer = http.post(
                f"{server.base}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("cc", server.secrets["cc"]),
            )
            assert answer.status_code == 200, answer.text
            tokens.append(answer.json()["access_token"])
    return tokens


def test_at02_claims_of_ten_thousand_access_tokens(server: Server) -> None:
    logins = [asyncio.run(server.login("conf")) for _ in range(CHAINS)]
    sids = {claims_of(at)["sid"] for _, at in logins}
    (alice,) = {claims_of(at)["sub"] for _, at in logins}
    uuid.UUID(alice)  # a user's sub, never a client's id
    own = TOKENS - CHAINS * ROTATIONS
    workers = 4
    with ThreadPoolExecutor(workers) as pool:
        chains = [pool.submit(_rotate, server, rt, ROTATIONS) for rt, _ in logins]
        shares = [pool.submit(_own_tokens, server, own // workers) for _ in range(workers)]
        session_tokens = [t for chain in chains for t in chain.result()]
        own_tokens = [t for share in shares for t in share.result()]
    assert len(session_tokens) + len(own_tokens) == TOKENS

    jwks = jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json")
    keys = {key.key_id: key.key for key in jwks.get_signing_keys()}
    jtis = set()
    for token, client_id in [
        *((t, "conf") for t in session_tokens),
        *((t, "cc") for t in own_tokens),
    ]:
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(
            token,
            keys[kid],
            algorithms=["ES256"],
            issuer=server.base,
            options={"verify_aud": False, "require": list(access_tokens.REQUIRED)},
        )
        assert claims["aud"] == ("api" if client_id == "conf" else server.base)
        assert claims["client_id"] == client_id
        assert isinstance(claims["iat"], int)
        assert claims["iat"] < claims["exp"]
        assert SCOPE_SYNTAX.fullmatch(claims["scope"])
        assert set(claims["scope"].split(" ")) == {"read", "write"}
        if client_id == "conf":
            assert claims["sid"] in sids
            assert claims["sub"] == alice
        else:
            assert "sid" not in claims
            assert claims["sub"] == "cc"
        jtis.add(claims["jti"])
    assert len(jtis) == TOKENS
