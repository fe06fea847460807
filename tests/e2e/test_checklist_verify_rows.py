"""Checklist rows JV-02, JV-03, JV-06, JV-09, JV-16, JV-19, JV-22, JV-23 and PW-06 against a
started keyturn server (SQLite and PostgreSQL), and a resource server that protects its
routes with the verify kit, served by uvicorn on a real port.

Every forgery starts from a real access token of the server (a live session's) and is
signed where it can be with the server's own private key, so that only the one check
under test can refuse it. A forgery is refused three times over: by the kit, by the
server's introspection (`active: false`) and by its account API (401); the genuine token
is accepted by all three.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conftest import Server, start_server
from keyturn import wiring
from keyturn.core.errors import InvalidClient, InvalidGrant
from keyturn.crypto import client_secrets, refresh_codec
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.verify import DpopTokenVerifier, TokenRejected, Verifier
from keyturn.verify.starlette import require_dpop_scopes, require_scopes
from keyturn.wiring import open_engine
from support.listener import Listener, counting_listener
from support.server import free_port

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
REALM = "notes"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(request, tmp_path_factory)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def rsa_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server signing with RS256: seeded with ES256 keys, then rotated twice with RS256
    as the algorithm of new keys; it re-reads its keys every second."""
    env = {"KEYTURN_SIGNING_ALG": "RS256", "KEYTURN_KEY_REFRESH_SECONDS": "1"}
    servers = start_server(request, tmp_path_factory, env)
    started = next(servers)

    async def rotate_twice(engine: Engine) -> None:
        await engine.admin.rotate_keys()
        await engine.admin.rotate_keys()

    with_engine(started, rotate_twice, signing_alg="RS256")
    time.sleep(1.5)  # the server's next key refresh
    yield started
    next(servers, None)


def b64(data: bytes | dict[str, Any]) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def header_of(token: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(unb64(token.split(".", maxsplit=1)[0]))
    return parsed


def claims_of(token: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(unb64(token.split(".")[1]))
    return parsed


def with_engine(server: Server, use: Callable[[Engine], Any], **settings: Any) -> Any:
    """`await use(engine)` on an engine opened on the server's database, with `settings`
    on top of the server's."""

    async def run() -> Any:
        engine = await open_engine(
            Settings(**{**server.settings.model_dump(), "issuer": server.base, **settings})
        )
        try:
            return await use(engine)
        finally:
            await engine.close()

    return asyncio.run(run())


@dataclass(frozen=True)
class Forger:
    """The server's active signing key, private half included, and a real access token
    of a live session to take claims from."""

    kid: str
    alg: str
    private: Any
    genuine: str

    @classmethod
    def of(cls, server: Server) -> Forger:
        async def key(engine: Engine) -> tuple[str, str, Any]:
            signing = (await engine.tokens.ring()).signing
            assert signing is not None
            return signing.kid, signing.alg, signing.key.private_key

        kid, alg, private = with_engine(server, key)
        genuine = server.tokens()[1]
        assert header_of(genuine)["kid"] == kid
        return cls(kid, alg, private, genuine)

    def sign(self, data: bytes, alg: str | None = None) -> bytes:
        """A signature by the server's key under `alg` (its own by default); an ECDSA one
        as RFC 7518 §3.4 asks, R‖S."""
        alg = alg or self.alg
        digest: hashes.HashAlgorithm = {
            "256": hashes.SHA256(),
            "384": hashes.SHA384(),
            "512": hashes.SHA512(),
        }[alg[2:]]
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(digest)))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            if alg.startswith("PS")
            else padding.PKCS1v15()
        )
        signature: bytes = self.private.sign(data, pad, digest)
        return signature

    def token(
        self,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """The genuine token's header with `header` on top (None drops a member) and its
        claims, or `claims`; signed by `sign`, else by the server's key."""
        head = {**header_of(self.genuine), **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        signing_input = f"{b64(head)}.{b64(claims or claims_of(self.genuine))}"
        signature = (sign or self.sign)(signing_input.encode())
        return f"{signing_input}.{b64(signature)}"


class Checks:
    """Where a token is checked: the kit (keys fetched from the server), the server's
    introspection as the resource server `rs`, and its account API."""

    def __init__(self, server: Server, *, refetch_interval: float = 3600) -> None:
        self.server = server
        self.kit = Verifier(server.base, audience=server.base, refetch_interval=refetch_interval)

    def introspected(self, token: str) -> bool:
        answer = httpx.post(
            f"{self.server.base}/oauth/introspect",
            data={"token": token},
            auth=("rs", self.server.secrets["rs"]),
        )
        assert answer.status_code == 200, answer.text
        active: bool = answer.json()["active"]
        return active

    def account(self, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.server.base}/auth/sessions", headers=headers).status_code

    def accepted(self, token: str) -> None:
        assert self.kit.verify(token).subject
        assert self.introspected(token)
        assert self.account(token) == 200

    def refused(self, token: str) -> None:
        with pytest.raises(TokenRejected):
            self.kit.verify(token)
        assert not self.introspected(token)
        assert self.account(token) == 401


@pytest.fixture(scope="module")
def forger(server: Server) -> Forger:
    return Forger.of(server)


@pytest.fixture(scope="module")
def rsa_forger(rsa_server: Server) -> Forger:
    return Forger.of(rsa_server)


# JV-02: key and algorithm confusion


def public_forms(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> dict[str, bytes]:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = key.public_bytes(serialization.Encoding.PEM, spki)
    return {
        "PEM": pem,
        "PEM without its last newline": pem.rstrip(b"\n"),
        "DER": key.public_bytes(serialization.Encoding.DER, spki),
        "OpenSSH": key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }


def published_key(server: Server, kid: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key as anyone reads it from the server's JWKS."""
    jwks = httpx.get(f"{server.base}/.well-known/jwks.json").json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    imported = (ECKey if jwk["kty"] == "EC" else RSAKey).import_key(jwk)
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey = imported.public_key
    return public


def hs256_with_the_published_key(server: Server, forger: Forger) -> None:
    checks = Checks(server)
    checks.accepted(forger.genuine)
    for secret in public_forms(published_key(server, forger.kid)).values():
        checks.refused(
            forger.token(
                {"alg": "HS256"}, sign=lambda d, k=secret: hmac.new(k, d, hashlib.sha256).digest()
            )
        )


def test_jv02_hs256_keyed_with_the_published_es256_key_as_pem_der_or_ssh_is_refused(
    server: Server, forger: Forger
) -> None:
    assert forger.alg == "ES256"
    hs256_with_the_published_key(server, forger)


def test_jv02_hs256_keyed_with_the_published_rs256_key_as_pem_der_or_ssh_is_refused(
    rsa_server: Server, rsa_forger: Forger
) -> None:
    assert rsa_forger.alg == "RS256"
    hs256_with_the_published_key(rsa_server, rsa_forger)


def test_jv02_an_rs256_token_relabelled_ps256_or_rs512_is_refused(
    rsa_server: Server, rsa_forger: Forger
) -> None:
    checks = Checks(rsa_server)
    checks.accepted(rsa_forger.genuine)
    _, payload, signature = rsa_forger.genuine.split(".")
    for alg in ("PS256", "RS512"):
        relabelled = b64({**header_of(rsa_forger.genuine), "alg": alg})
        checks.refused(f"{relabelled}.{payload}.{signature}")
        # Signed under the relabelled algorithm by the server's own RSA key: only "one
        # key, one algorithm" (RFC 8725 §3.1) can refuse it.
        checks.refused(rsa_forger.token({"alg": alg}, sign=lambda d, a=alg: rsa_forger.sign(d, a)))


def test_jv02_the_es256_key_under_an_es384_header_is_refused(
    server: Server, forger: Forger
) -> None:
    checks = Checks(server)
    checks.accepted(forger.genuine)
    checks.refused(forger.token({"alg": "ES384"}, sign=lambda d: forger.sign(d, "ES384")))
    _, payload, signature = forger.genuine.split(".")
    checks.refused(f"{b64({**header_of(forger.genuine), 'alg': 'ES384'})}.{payload}.{signature}")


# JV-03: kid path traversal; the kit opens no file


_opened: list[tuple[Any, ...]] | None = None
_watched_thread: int | None = None


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and _watched_thread in (None, threading.get_ident()):
        _opened.append(args)


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; idle unless watching


@contextlib.contextmanager
def watching_opens(*, every_thread: bool = False) -> Iterator[list[tuple[Any, ...]]]:
    """The `open` audit events (PEP 578: `open()`, `io.open`, `os.open`) raised while
    the block runs, on this thread or on every thread."""
    global _opened, _watched_thread
    seen: list[tuple[Any, ...]] = []
    _opened, _watched_thread = seen, None if every_thread else threading.get_ident()
    try:
        yield seen
    finally:
        _opened, _watched_thread = None, None


TRAVERSALS = ["../../../../dev/null", "/dev/null", "..\\..\\windows\\win.ini"]


def traversal_tokens(forger: Forger, kid: str) -> list[str]:
    return [
        forger.token({"alg": "HS256", "kid": kid}, sign=lambda d: hmac.digest(b"", d, "sha256")),
        forger.token({"kid": kid}),  # the server's own signature, under the traversal kid
    ]


@pytest.mark.parametrize("kid", TRAVERSALS)
def test_jv03_a_kid_naming_a_file_is_refused_and_the_kit_opens_no_file(
    server: Server, forger: Forger, kid: str
) -> None:
    checks = Checks(server)
    checks.accepted(forger.genuine)
    with watching_opens() as seen:
        open(os.devnull).close()
    assert seen, "the hook sees an open"
    for forged in traversal_tokens(forger, kid):
        with watching_opens() as opened:
            _kit_refuses(checks.kit, forged)
        assert opened == [], opened
        checks.refused(forged)


def test_jv03_the_servers_own_check_opens_no_file_for_a_kid_naming_one(
    server: Server, forger: Forger
) -> None:
    """Introspection, in process on the server's database: its check of a JWT (the one
    the account API makes too) opens no file, on any thread."""

    async def introspect(engine: Engine) -> list[tuple[Any, ...]]:
        rs = await engine.admin.get_client("rs")
        assert rs is not None
        # Keys read and everything imported before watching.
        assert (await engine.inspection.introspect(forger.genuine, rs))["active"]
        opened: list[tuple[Any, ...]] = []
        for kid in TRAVERSALS:
            for forged in traversal_tokens(forger, kid):
                with watching_opens(every_thread=True) as seen:
                    answer = await engine.inspection.introspect(forged, rs)
                assert answer == {"active": False}
                opened += seen
        return opened

    assert with_engine(server, introspect) == []


def _kit_refuses(kit: Verifier, token: str) -> None:
    with pytest.raises(TokenRejected):
        kit.verify(token)


# JV-06: jku and x5u naming a listener that must see no connection


@pytest.fixture
def listener() -> Iterator[Listener]:
    with counting_listener() as started:
        yield started


def test_jv06_jku_and_x5u_pointing_at_a_listener_are_refused_and_never_fetched(
    server: Server, forger: Forger, listener: Listener
) -> None:
    # refetch_interval=0: the kit may look up an unknown kid at the issuer at once, so
    # that only the header's own URL could draw a connection to the listener.
    checks = Checks(server, refetch_interval=0)
    checks.accepted(forger.genuine)
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_kid = ECKey.import_key(attacker).thumbprint()

    def attacker_signs(data: bytes) -> bytes:
        r, s = decode_dss_signature(attacker.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    base = f"http://127.0.0.1:{listener.port}"
    for member, url in (("jku", f"{base}/jwks.json"), ("x5u", f"{base}/cert.pem")):
        for kid in (attacker_kid, forger.kid, None):
            checks.refused(forger.token({member: url, "kid": kid}, sign=attacker_signs))
    time.sleep(0.5)  # a fetch started in the background would have connected by now
    assert listener.connections == 0
    socket.create_connection(("127.0.0.1", listener.port)).close()
    deadline = time.monotonic() + 5
    while listener.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.connections == 1, "the listener counts what reaches it"


# JV-09: ECDSA signatures out of range or in the wrong encoding


def test_jv09_r_or_s_equal_to_the_curve_order_or_a_der_signature_is_refused(
    server: Server, forger: Forger
) -> None:
    checks = Checks(server)
    checks.accepted(forger.genuine)
    signing_input, _, raw_b64 = forger.genuine.rpartition(".")
    raw = unb64(raw_b64)
    r, s = raw[:32], raw[32:]
    n = P256_N.to_bytes(32, "big")
    der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    # The same signature in ASN.1 DER, valid for the key; RFC 7518 §3.4 asks for R‖S.
    forger.private.public_key().verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    for signature in (n + s, r + n, n + n, der):
        checks.refused(f"{signing_input}.{b64(signature)}")


# JV-16: token type confusion


def test_jv16_the_access_token_types_are_accepted(server: Server, forger: Forger) -> None:
    checks = Checks(server)
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT"):
        checks.accepted(forger.token({"typ": typ}))


def test_jv16_id_and_logout_token_types_signed_with_the_same_key_are_refused(
    server: Server, forger: Forger
) -> None:
    checks = Checks(server)
    for typ in ("id_token+jwt", "logout+jwt", "JWT", None):
        checks.refused(forger.token({"typ": typ}))


def test_jv16_an_id_token_shaped_jwt_signed_with_the_same_key_is_refused(
    server: Server, forger: Forger
) -> None:
    checks = Checks(server)
    genuine = claims_of(forger.genuine)
    id_token = {
        "iss": genuine["iss"],
        "sub": genuine["sub"],
        "aud": "native",  # the client: an ID token is for its relying party
        "exp": genuine["exp"],
        "iat": genuine["iat"],
        "auth_time": genuine["iat"],
        "nonce": "n-0S6_WzA2Mj",
        "sid": genuine["sid"],
    }
    checks.refused(forger.token({"typ": "JWT"}, id_token))
    # Each defence alone: the right type, then also the issuer as audience.
    checks.refused(forger.token({"typ": "at+jwt"}, id_token))
    checks.refused(forger.token({"typ": "at+jwt"}, {**id_token, "aud": server.base}))


# JV-19: critical header parameters and unencoded payloads


def test_jv19_crit_exp_and_an_unencoded_payload_are_refused(server: Server, forger: Forger) -> None:
    checks = Checks(server)
    checks.accepted(forger.token())
    for header in (
        {"crit": ["exp"]},
        {"crit": ["exp"], "exp": claims_of(forger.genuine)["exp"]},
        {"b64": False, "crit": ["b64"]},
        {"b64": False},
    ):
        # Signed over the input as written: good whether or not the payload is read as
        # base64url, so only the header check can refuse it.
        checks.refused(forger.token(header))


# The resource server: a Starlette app that uses the kit, served by uvicorn


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    port = free_port()
    api = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=api.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not api.started:
        assert time.monotonic() < deadline, "the resource server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        api.should_exit = True
        thread.join(10)


def notes_api(server: Server) -> Starlette:
    verifier = Verifier(server.base, audience=server.base)
    read = require_scopes(verifier, "read", realm=REALM)
    admin = require_scopes(verifier, "admin", realm=REALM)
    dpop_read = require_dpop_scopes(DpopTokenVerifier(verifier), "read")

    async def notes(request: Request) -> Response:
        token = await read(request)
        return JSONResponse({"sub": token.subject, "body": len(await request.body())})

    async def settings(request: Request) -> Response:
        await admin(request)
        return JSONResponse({})

    async def dpop_notes(request: Request) -> Response:
        token = await dpop_read(request)
        return JSONResponse({"sub": token.subject})

    return Starlette(
        routes=[
            Route("/notes", notes, methods=["GET", "POST"]),
            Route("/settings", settings),
            Route("/dpop-notes", dpop_notes, methods=["GET", "POST"]),
        ]
    )


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[str]:
    with serving(notes_api(server)) as base:
        yield base


# JV-22: oversized tokens at a resource server


def raw_get(base: str, path: str, authorization: str) -> tuple[int, dict[str, str]]:
    """GET `path` with that `Authorization` header over a plain socket: the status and
    headers of the answer, read even when the server closes the connection before the
    whole request is sent (as it does for a 431)."""
    host, port = base.removeprefix("http://").split(":")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {authorization}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    received = bytearray()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head = bytes(received).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 "):
        return 0, {}
    fields = (line.partition(":") for line in head[1:])
    return int(head[0].split(" ")[1]), {k.strip().lower(): v.strip() for k, _, v in fields}


def test_jv22_a_100_kb_header_or_a_1_mb_payload_is_refused_never_a_500(
    server: Server, api: str, forger: Forger
) -> None:
    head = forger.genuine.split(".")[0]
    huge_claims = {**claims_of(forger.genuine), "pad": "x" * 1_000_000}
    nested = b64(b"[" * 50_000 + b"]" * 50_000)
    tokens = {
        "100 KB header": "A" * 100_000,
        "100 KB JWT": f"{head}.{'A' * 100_000}.{'A' * 86}",
        "1 MB payload": forger.token(claims=huge_claims),
        "1 MB payload, unsigned": f"{head}.{b64(huge_claims)}.",
        "header nested 50,000 deep": f"{nested}.{forger.genuine.split('.', 1)[1]}",
    }
    for name, token in tokens.items():
        for base, path in ((api, "/notes"), (server.base, "/auth/sessions")):
            status, headers = raw_get(base, path, f"Bearer {token}")
            # 431 (RFC 6585 §5) before the token is read, or 401 invalid_token after.
            assert status in (401, 431), (name, base, status)
            if status == 401:
                assert 'error="invalid_token"' in headers["www-authenticate"], (name, base)
    bearer = {"Authorization": f"Bearer {forger.genuine}"}
    with httpx.Client(timeout=30) as http:
        # A 1 MB form body beside a good token: read, and answered, never a 500.
        form = {"Content-Type": "application/x-www-form-urlencoded", **bearer}
        big = b"note=" + b"x" * 1_000_000
        answer = http.post(f"{api}/notes", headers=form, content=big)
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"] == len(big)
        answer = http.post(f"{api}/notes", headers=form, content=big + b"&access_token=x")
        assert answer.status_code == 400
        # Both are still serving.
        assert http.get(f"{api}/notes", headers=bearer).status_code == 200
        assert http.get(f"{server.base}/auth/sessions", headers=bearer).status_code == 200


# JV-23: how a bearer token travels


def test_jv23_a_token_only_in_the_query_string_is_ignored(api: str, forger: Forger) -> None:
    answer = httpx.get(f"{api}/notes", params={"access_token": forger.genuine})
    assert answer.status_code == 401
    # RFC 6750 §3.1: no error code when the request carried no (usable) token.
    assert answer.headers["www-authenticate"] == f'Bearer realm="{REALM}"'
    bearer = {"Authorization": f"Bearer {forger.genuine}"}
    beside = httpx.get(f"{api}/notes", params={"access_token": "x"}, headers=bearer)
    assert beside.status_code == 200, "the header's token counts; the query is ignored"


def test_jv23_a_token_in_both_the_header_and_the_body_is_invalid_request(
    api: str, forger: Forger
) -> None:
    bearer = {"Authorization": f"Bearer {forger.genuine}"}
    body = {"access_token": forger.genuine, "note": "hello"}
    for route in ("/notes", "/dpop-notes"):
        answer = httpx.post(f"{api}{route}", headers=bearer, data=body)
        assert answer.status_code == 400, (route, answer.text)
        assert 'error="invalid_request"' in answer.headers["www-authenticate"]
    answer = httpx.post(f"{api}/notes", headers=bearer, data=body)
    assert answer.headers["www-authenticate"] == f'Bearer realm="{REALM}", error="invalid_request"'
    # Controls: the header alone, with a form body of other fields, is accepted and the
    # endpoint can still read the body; a token in the body alone is no credential.
    alone = httpx.post(f"{api}/notes", headers=bearer, data={"note": "hello"})
    assert alone.status_code == 200
    assert alone.json()["body"] == len("note=hello")
    only_body = httpx.post(f"{api}/notes", data=body)
    assert only_body.status_code == 401
    assert only_body.headers["www-authenticate"] == f'Bearer realm="{REALM}"'


def test_jv23_a_caller_without_a_good_token_cannot_make_the_kit_read_a_body(
    api: str, forger: Forger
) -> None:
    """The body is looked into only once the header's token is good: a forged token with
    a form body declared at 100 MB, of which not a byte is sent, is answered 401 at once
    instead of the kit waiting for (and buffering) the body."""
    host, _, port = api.removeprefix("http://").partition(":")
    for route in ("/notes", "/dpop-notes"):
        head = (
            f"POST {route} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {forger.genuine}x\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 100000000\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(head.encode())
            answer = sock.recv(65536).decode("latin-1")  # a timeout fails the test
        assert answer.startswith("HTTP/1.1 401 "), (route, answer[:200])
        assert 'error="invalid_token"' in answer


def test_jv23_the_scheme_is_case_insensitive_and_the_errors_are_rfc_6750s(
    api: str, forger: Forger
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        answer = httpx.get(f"{api}/notes", headers={"Authorization": f"{scheme} {forger.genuine}"})
        assert answer.status_code == 200, scheme
        assert answer.json()["sub"] == claims_of(forger.genuine)["sub"]
    bad = httpx.get(f"{api}/notes", headers={"Authorization": f"bearer {forger.genuine}x"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == f'Bearer realm="{REALM}", error="invalid_token"'
    scope = httpx.get(f"{api}/settings", headers={"Authorization": f"Bearer {forger.genuine}"})
    assert scope.status_code == 403
    assert scope.headers["www-authenticate"] == (
        f'Bearer realm="{REALM}", error="insufficient_scope", scope="admin"'
    )


# PW-06: entropy of jti, and constant-time comparison of secrets and MACs


JTI = re.compile(r"[0-9a-f]{32}")


def test_pw06_every_jti_is_128_bits_from_the_csprng(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: set[bytes] = set()
    real_secrets = wiring.secrets

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_secrets, name)

        @staticmethod
        def token_bytes(n: int) -> bytes:
            value = real_secrets.token_bytes(n)
            drawn.add(value)
            return value

    monkeypatch.setattr(wiring, "secrets", Recording())

    async def mint(engine: Engine) -> list[str]:
        client = await engine.admin.get_client("native")
        assert client is not None
        now = engine.clock.now()
        return [
            await engine.tokens.mint_access(
                subject="user-1",
                client=client,
                scope="read",
                session_id=None,
                issued_at=now,
                expires_at=now + timedelta(minutes=5),
            )
            for _ in range(10_000)
        ]

    jtis = [claims_of(token)["jti"] for token in with_engine(server, mint)]
    assert all(JTI.fullmatch(jti) for jti in jtis)
    assert len(set(jtis)) == len(jtis)
    # Each is 16 bytes the CSPRNG (`secrets.token_bytes`) gave, not a counter or a clock.
    assert {bytes.fromhex(jti) for jti in jtis} <= drawn
    # Every one of the 128 bits is a fair coin: 10,000 draws put each within 5 sigma
    # (50) of 5,000 ones.
    values = [int(jti, 16) for jti in jtis]
    for bit in range(128):
        ones = sum((v >> bit) & 1 for v in values)
        assert 4_750 <= ones <= 5_250, (bit, ones)
    # The tokens the server hands out over HTTP have the same jti.
    issued = [
        httpx.post(
            f"{server.base}/oauth/token",
            data={"grant_type": "client_credentials", "scope": "read"},
            auth=("cc", server.secrets["cc"]),
        ).json()["access_token"]
        for _ in range(50)
    ]
    served = [claims_of(token)["jti"] for token in issued]
    assert all(JTI.fullmatch(jti) for jti in served)
    assert len(set(served)) == 50


class ComparisonSpy:
    """A module's `hmac`, with `compare_digest` recorded (its arguments and answer)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(hmac, name)

    def compare_digest(self, a: Any, b: Any) -> bool:
        answer = hmac.compare_digest(a, b)
        self.calls.append((bytes(a), bytes(b), answer))
        return answer


def test_pw06_client_secrets_are_compared_in_constant_time(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ComparisonSpy()
    monkeypatch.setattr(client_secrets, "hmac", spy)
    right = server.secrets["conf"]
    wrong = right[:-1] + ("A" if right[-1] != "A" else "B")

    async def authenticate(engine: Engine) -> tuple[str, str | None, bool]:
        client = await engine.admin.get_client("conf")
        assert client is not None
        assert client.secret_hash is not None
        ok = await engine.clients.authenticate(ClientCredentials("conf", right, AuthMethod.BASIC))
        try:
            await engine.clients.authenticate(ClientCredentials("conf", wrong, AuthMethod.BASIC))
            refused = False
        except InvalidClient:
            refused = True
        return ok.id, client.secret_hash, refused

    client_id, stored, refused = with_engine(server, authenticate)
    assert client_id == "conf"
    assert refused
    assert stored is not None
    hashed = client_secrets.hash_secret
    assert spy.calls == [
        (hashed(right).encode(), stored.encode(), True),
        (hashed(wrong).encode(), stored.encode(), False),
    ]


MAC_START = struct.calcsize(">BH16sI8s")  # version, key id, session, generation, salt


def with_mac_flipped(token: str) -> str:
    """`token` with one bit of its MAC flipped and its checksum made good again: only the
    MAC comparison can refuse it."""
    text = token.removeprefix(refresh_codec.PREFIX)
    raw = bytearray(unb64(text))
    raw[MAC_START + 5] ^= 0x01
    signed = bytes(raw[:-4])
    raw[-4:] = struct.pack(">I", binascii.crc32(signed))
    return refresh_codec.PREFIX + b64(bytes(raw))


def test_pw06_refresh_token_macs_are_compared_in_constant_time(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ComparisonSpy()
    monkeypatch.setattr(refresh_codec, "hmac", spy)
    refresh_token = server.rt0()
    forged = with_mac_flipped(refresh_token)

    async def refresh(engine: Engine) -> tuple[str | None, str]:
        client = await engine.admin.get_client("native")
        assert client is not None
        try:
            await engine.refresher.refresh(forged, client)
            refused = ""
        except InvalidGrant as error:
            refused = str(error.detail)
        issued = await engine.refresher.refresh(refresh_token, client)
        return issued.refresh_token, refused

    successor, refused = with_engine(server, refresh)
    assert successor
    assert successor != refresh_token
    assert refused == "refresh token mac"
    macs = [call for call in spy.calls if len(call[0]) == refresh_codec.MAC_BYTES]
    assert [answer for _, _, answer in macs] == [False, True]
    wrong, right = macs[0], macs[1]
    assert wrong[0] != wrong[1]
    assert right[0] == right[1]
    # The token's own MAC is what was compared.
    raw = unb64(refresh_token.removeprefix(refresh_codec.PREFIX))
    assert right[0] == raw[MAC_START : MAC_START + refresh_codec.MAC_BYTES]
