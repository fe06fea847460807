"""keyturn.verify, the resource-server kit, against a started keyturn server (SQLite and
PostgreSQL): it discovers the keys from the issuer's metadata, accepts the server's
access tokens, and refuses every forgery RFC 8725 warns of, each signed where it can be
with the server's real key, so that only the one check under test can refuse it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conftest import Server, start_server
from keyturn.settings import Settings
from keyturn.verify import AccessToken, InsufficientScope, TokenRejected, Verifier
from keyturn.verify.keyset import KeySet, max_age
from keyturn.verify.starlette import require_scopes
from keyturn.wiring import open_engine


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    # Keys re-read every second, so a rotation made here shows in the server's JWKS.
    yield from start_server(request, tmp_path_factory, {"KEYTURN_KEY_REFRESH_SECONDS": "1"})


def engine_settings(server: Server) -> Settings:
    return Settings(**{**server.settings.model_dump(), "issuer": server.base})


def signed(server: Server, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A token signed with the server's active key: good claims, then `claims` on top
    (a value of None drops the claim)."""

    async def sign() -> str:
        engine = await open_engine(engine_settings(server))
        try:
            ring = await engine.tokens.ring()
            key = ring.signing
            assert key is not None
            now = int(time.time())
            body: dict[str, Any] = {
                "iss": server.base,
                "sub": "user-1",
                "aud": server.base,
                "exp": now + 300,
                "iat": now,
                "jti": f"jti-{time.monotonic_ns()}",
                "client_id": "native",
                "scope": "read write",
            }
            body.update(claims)
            body = {k: v for k, v in body.items() if v is not None}
            head = {"typ": "at+jwt", "alg": key.alg, "kid": key.kid, **(header or {})}
            return jwt.encode(head, body, key.key, algorithms=[key.alg])
        finally:
            await engine.close()

    return asyncio.run(sign())


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.fixture
def verifier(server: Server) -> Verifier:
    return Verifier(server.base, audience=server.base, refetch_interval=0)


def test_a_real_access_token_is_accepted(server: Server, verifier: Verifier) -> None:
    _, access = server.tokens()
    token = verifier.verify(access)
    assert token.client_id == "native"
    assert token.scopes == {"read", "write"}
    assert token.session_id is not None
    token.require_scopes("read", "write")
    with pytest.raises(InsufficientScope):
        token.require_scopes("admin")
    assert asyncio.run(verifier.verify_async(access)).subject == token.subject


def test_a_token_signed_by_another_key_under_the_servers_kid(
    server: Server, verifier: Verifier
) -> None:
    good = signed(server)
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    forger = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    forged = jwt.encode(header, claims, forger, algorithms=["ES256"])
    with pytest.raises(TokenRejected):
        verifier.verify(forged)
    flipped = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with pytest.raises(TokenRejected):
        verifier.verify(flipped)


def test_alg_none_is_refused(server: Server, verifier: Verifier) -> None:
    good = signed(server)
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    payload = good.split(".")[1]
    for alg in ("none", "None", "NONE"):
        unsigned = b64({**header, "alg": alg}) + "." + payload + "."
        with pytest.raises(TokenRejected):
            verifier.verify(unsigned)


def test_hs256_with_the_public_key_as_secret_is_refused(server: Server, verifier: Verifier) -> None:
    jwks = httpx.get(f"{server.base}/.well-known/jwks.json").json()
    public = jwks["keys"][-1]
    secret = OctKey.import_key(json.dumps(public).encode())
    token = jwt.encode(
        {"typ": "at+jwt", "alg": "HS256", "kid": public["kid"]},
        json.loads(base64.urlsafe_b64decode(signed(server).split(".")[1] + "==")),
        secret,
        algorithms=["HS256"],
    )
    with pytest.raises(TokenRejected):
        verifier.verify(token)


def test_a_kid_that_stays_unknown_is_refused_and_fetched_at_most_once_per_interval(
    server: Server,
) -> None:
    fetches: list[str] = []

    def count(request: httpx.Request) -> None:
        fetches.append(str(request.url))

    with httpx.Client(event_hooks={"request": [count]}) as http:
        patient = Verifier(server.base, audience=server.base, refetch_interval=3600, http=http)
        patient.verify(server.tokens()[1])
        before = len(fetches)
        for n in range(20):
            with pytest.raises(TokenRejected):
                patient.verify(signed(server, {"kid": f"unknown-{n}"}))
        assert len(fetches) == before, "unknown kids must not make the verifier hammer the issuer"
        eager = Verifier(server.base, audience=server.base, refetch_interval=0, http=http)
        eager.verify(server.tokens()[1])
        before = len(fetches)
        with pytest.raises(TokenRejected):
            eager.verify(signed(server, {"kid": "unknown"}))
        assert len(fetches) == before + 1, "an unknown kid is looked up once"


@pytest.mark.parametrize(
    "header",
    [
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
        {"x5c": ["MIIB"]},
        {"typ": "JWT"},
        {"typ": "jwt"},
        {"typ": None},
    ],
    ids=["jku", "x5u", "jwk", "x5c", "typ-JWT", "typ-jwt", "no-typ"],
)
def test_headers_that_pick_their_own_key_or_the_wrong_type_are_refused(
    server: Server, verifier: Verifier, header: dict[str, Any]
) -> None:
    token = signed(server, {k: v for k, v in header.items() if v is not None})
    if header.get("typ", "") is None:
        parts = token.split(".")
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=="))
        head.pop("typ")
        token = b64(head) + "." + parts[1] + "." + parts[2]
    with pytest.raises(TokenRejected):
        verifier.verify(token)


@dataclass(frozen=True)
class FromNow:
    """A timestamp taken when the test runs, not when it is collected: a long suite would
    otherwise turn "ten minutes from now" into the past."""

    seconds: int

    def resolve(self) -> int:
        return int(time.time()) + self.seconds

    def __repr__(self) -> str:
        return f"now{self.seconds:+d}"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example"},
        {"aud": "https://other-api.example"},
        {"aud": []},
        {"exp": FromNow(-120)},
        {"nbf": FromNow(600)},
        {"iat": FromNow(600)},
        {"exp": "tomorrow"},
        {"exp": True},
        {"sub": None},
        {"exp": None},
        {"iat": None},
        {"jti": None},
        {"client_id": None},
        {"aud": None},
        {"iss": None},
    ],
    ids=lambda c: "-".join(f"{k}={v!r}"[:30] for k, v in c.items()),
)
def test_wrong_or_missing_claims_are_refused(
    server: Server, verifier: Verifier, claims: dict[str, Any]
) -> None:
    at_run_time = {k: v.resolve() if isinstance(v, FromNow) else v for k, v in claims.items()}
    with pytest.raises(TokenRejected):
        verifier.verify(signed(server, **at_run_time))


def test_a_small_clock_skew_is_tolerated(server: Server, verifier: Verifier) -> None:
    verifier.verify(signed(server, iat=int(time.time()) + 10, nbf=int(time.time()) + 10))
    verifier.verify(signed(server, exp=int(time.time()) - 10))


def test_garbage_is_refused_never_crashes(verifier: Verifier) -> None:
    for token in ("", "a.b.c", "....", "x" * 10_000, "eyJhbGciOiJFUzI1NiJ9..", "\x00.\x00.\x00"):
        with pytest.raises(TokenRejected):
            verifier.verify(token)


def test_a_key_rotation_at_the_server_is_picked_up_without_a_restart(
    server: Server, verifier: Verifier
) -> None:
    verifier.verify(server.tokens()[1])
    known = set(verifier._keys.keys)

    async def rotate_twice() -> None:
        engine = await open_engine(engine_settings(server))
        try:
            await engine.admin.rotate_keys()
            await engine.admin.rotate_keys()
        finally:
            await engine.close()

    asyncio.run(rotate_twice())
    access = server.tokens()[1]
    kid = json.loads(base64.urlsafe_b64decode(access.split(".")[0] + "=="))["kid"]
    assert kid not in known, "two rotations sign with a key the verifier has not seen"
    time.sleep(1.2)  # the server re-reads its keys every second
    assert verifier.verify(access).client_id == "native"


def test_the_cache_follows_cache_control() -> None:
    assert max_age("public, max-age=600") == 600
    assert max_age("max-age=1") == 30
    assert max_age("no-store") == 30
    assert max_age("max-age=99999999") == 86400
    assert max_age(None) == 300
    assert max_age("private") == 300


def test_the_key_set_drops_what_a_resource_server_must_not_trust(server: Server) -> None:
    jwks = httpx.get(f"{server.base}/.well-known/jwks.json").json()
    good = jwks["keys"][0]
    document = {
        "keys": [
            good,
            {**good, "kid": "with-private", "d": "AAAA"},
            {**good, "kid": "hmac", "alg": "HS256"},
            {**good, "kid": "no-alg", "alg": None},
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "rsa-claimed", "alg": "RS256"},
            "not a key",
        ]
    }
    assert list(KeySet.from_jwks(document).keys) == [good["kid"]]
    assert KeySet.from_jwks("garbage").keys == {}


def test_starlette_dependency_answers_as_rfc_6750_asks(server: Server) -> None:
    verifier = Verifier(server.base, audience=server.base)
    read = require_scopes(verifier, "read")
    admin = require_scopes(verifier, "admin")

    async def notes(request: Request) -> Response:
        token: AccessToken = await read(request)
        return JSONResponse({"sub": token.subject})

    async def settings(request: Request) -> Response:
        await admin(request)
        return JSONResponse({})

    app = Starlette(routes=[Route("/notes", notes), Route("/settings", settings)])
    access = server.tokens()[1]

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            bearer = {"Authorization": f"Bearer {access}"}
            return [
                await client.get("/notes", headers=bearer),
                await client.get("/notes"),
                await client.get("/notes", headers={"Authorization": f"Bearer {access[:-3]}xyz"}),
                await client.get("/settings", headers=bearer),
            ]

    ok, none, bad, scope = asyncio.run(calls())
    assert ok.status_code == 200
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer"
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert scope.status_code == 403
    assert 'error="insufficient_scope"' in scope.headers["www-authenticate"]


def test_an_unreachable_issuer_is_keys_unavailable_not_accepted() -> None:
    from keyturn.verify.verifier import KeysUnavailable

    offline = Verifier("http://127.0.0.1:1", audience="x")
    with pytest.raises(KeysUnavailable):
        offline.verify("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.e30.c2ln")
