"""Checklist rows JV-02, JV-03, JV-06, JV-09, JV-16 and JV-19 at the verify kit
(`keyturn.verify.Verifier`) and at the issuer's own check (`keyturn.crypto.access_tokens
.verify`, which introspection and the account API use), on the same tokens; and two edges
of the kit's Starlette dependency (JV-23).

The issuer's keys (one ES256, one RS256) are served by a real HTTP server on 127.0.0.1
that the kit fetches them from. Each forgery is signed where it can be with the issuer's
real private key, so only the one check under test can refuse it; each test first shows
that the same claims, signed as the issuer signs, are accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
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

from keyturn.crypto.access_tokens import InvalidAccessToken
from keyturn.crypto.access_tokens import verify as issuer_verify
from keyturn.verify import TokenRejected, Verifier
from keyturn.verify.keyset import KeySet
from keyturn.verify.starlette import require_scopes
from support.listener import Listener, counting_listener

ISSUER = "https://as.test"
AUDIENCE = "https://api.test"
ES_KID = "es-1"
RS_KID = "rs-1"
# The order n of P-256 (SEC 2 §2.4.2; FIPS 186-4 D.1.2.3).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64(data: bytes | dict[str, Any] | list[Any]) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class Issuer:
    """The authorization server's keys, published as a JWKS by a loopback HTTP server,
    and a signer that makes tokens with them by hand, as an attacker holding (or not)
    a key would."""

    def __init__(self) -> None:
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        es = ECKey.import_key(self.ec_key).as_dict(private=False)
        rs = RSAKey.import_key(self.rsa_key).as_dict(private=False)
        self.jwks = {
            "keys": [
                {**es, "kid": ES_KID, "alg": "ES256", "use": "sig"},
                {**rs, "kid": RS_KID, "alg": "RS256", "use": "sig"},
            ]
        }
        self.keys = KeySet.from_jwks(self.jwks).keys
        assert set(self.keys) == {ES_KID, RS_KID}
        document = json.dumps(self.jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_uri = f"http://127.0.0.1:{self._http.server_address[1]}/jwks"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    @staticmethod
    def claims(**changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": AUDIENCE,
            "exp": now + 300,
            "iat": now,
            "jti": os.urandom(16).hex(),
            "client_id": "native",
            "scope": "read write",
            "sid": "sid-1",
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def es256(self, signing_input: bytes, hash_alg: hashes.HashAlgorithm | None = None) -> bytes:
        """The raw R‖S signature (RFC 7518 §3.4) of the EC key."""
        der = self.ec_key.sign(signing_input, ec.ECDSA(hash_alg or hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def rsa(self, signing_input: bytes, alg: str) -> bytes:
        digest: hashes.HashAlgorithm = {"256": hashes.SHA256(), "512": hashes.SHA512()}[alg[2:]]
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            if alg.startswith("PS")
            else padding.PKCS1v15()
        )
        return self.rsa_key.sign(signing_input, pad, digest)

    def token(
        self,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """A compact JWS: an ES256 access-token header under `ES_KID` with `header` on
        top (None drops a member), the issuer's claims, signed by `sign` (the EC key
        by default) over the header and payload as written."""
        head = {"typ": "at+jwt", "alg": "ES256", "kid": ES_KID, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        signing_input = f"{b64(head)}.{b64(claims or self.claims())}"
        signature = (sign or self.es256)(signing_input.encode())
        return f"{signing_input}.{b64(signature)}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    published = Issuer()
    yield published
    published.close()


class Side:
    """Where a token is checked: `kit`, a resource server's `Verifier` that fetched the
    issuer's JWKS over HTTP; `issuer`, keyturn's own check with its in-memory key map
    and no audience (introspection takes every audience it issued)."""

    def __init__(self, name: str, issuer: Issuer) -> None:
        self.name = name
        self._keys = issuer.keys
        self.verifier = Verifier(
            ISSUER,
            AUDIENCE,
            jwks_uri=issuer.jwks_uri,
            refetch_interval=3600,
            http=httpx.Client(timeout=2),
        )

    def accepts(self, token: str) -> dict[str, Any]:
        if self.name == "kit":
            return self.verifier.verify(token).claims
        return issuer_verify(token, self._keys, issuer=ISSUER, audience=None, now=datetime.now(UTC))

    def refuses(self, token: str) -> None:
        refused = TokenRejected if self.name == "kit" else InvalidAccessToken
        with pytest.raises(refused):
            self.accepts(token)


@pytest.fixture(params=["kit", "issuer"])
def side(request: pytest.FixtureRequest, issuer: Issuer) -> Side:
    return Side(request.param, issuer)


# JV-02: key and algorithm confusion


def public_forms(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> dict[str, bytes]:
    """The public key in each form an HMAC key-confusion attack feeds a verifier."""
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


@pytest.mark.parametrize("form", ["PEM", "PEM without its last newline", "DER", "OpenSSH"])
@pytest.mark.parametrize("kid", [ES_KID, RS_KID])
def test_jv02_hs256_keyed_with_the_public_key_in_pem_der_or_ssh_form_is_refused(
    side: Side, issuer: Issuer, kid: str, form: str
) -> None:
    if kid == ES_KID:
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey = issuer.ec_key.public_key()
        genuine = issuer.token()
    else:
        public = issuer.rsa_key.public_key()
        genuine = issuer.token({"alg": "RS256", "kid": kid}, sign=lambda d: issuer.rsa(d, "RS256"))
    assert side.accepts(genuine)["sub"] == "user-1"
    secret = public_forms(public)[form]
    forged = issuer.token(
        {"alg": "HS256", "kid": kid}, sign=lambda d: hmac.new(secret, d, hashlib.sha256).digest()
    )
    side.refuses(forged)
    # Nor does dropping the kid (a verifier that would try every key) help the forger.
    side.refuses(
        issuer.token(
            {"alg": "HS256", "kid": None},
            sign=lambda d: hmac.new(secret, d, hashlib.sha256).digest(),
        )
    )


@pytest.mark.parametrize("alg", ["PS256", "RS512"])
def test_jv02_an_rs256_token_relabelled_ps256_or_rs512_is_refused(
    side: Side, issuer: Issuer, alg: str
) -> None:
    rs256 = issuer.token({"alg": "RS256", "kid": RS_KID}, sign=lambda d: issuer.rsa(d, "RS256"))
    assert side.accepts(rs256)["client_id"] == "native"
    # The header relabelled, the RS256 signature kept.
    head, payload, signature = rs256.split(".")
    relabelled = f"{b64({**json.loads(unb64(head)), 'alg': alg})}.{payload}.{signature}"
    side.refuses(relabelled)
    # Worse: a signature that is valid under the relabelled algorithm, made with the
    # issuer's own RSA key. Only "one key, one algorithm" (RFC 8725 §3.1) refuses it.
    resigned = issuer.token({"alg": alg, "kid": RS_KID}, sign=lambda d: issuer.rsa(d, alg))
    public = issuer.rsa_key.public_key()
    signing_input, _, mac = resigned.rpartition(".")
    digest = hashes.SHA256() if alg == "PS256" else hashes.SHA512()
    pad = (
        padding.PSS(mgf=padding.MGF1(digest), salt_length=32)
        if alg == "PS256"
        else padding.PKCS1v15()
    )
    public.verify(unb64(mac), signing_input.encode(), pad, digest)  # a real signature
    side.refuses(resigned)


def test_jv02_an_es256_key_used_under_an_es384_header_is_refused(
    side: Side, issuer: Issuer
) -> None:
    assert side.accepts(issuer.token())["sub"] == "user-1"
    # SHA-384 over the input, signed by the P-256 key: a verifier that took the
    # header's algorithm with this key would find the signature good.
    es384 = issuer.token({"alg": "ES384"}, sign=lambda d: issuer.es256(d, hashes.SHA384()))
    signing_input, _, raw = es384.rpartition(".")
    r, s = int.from_bytes(unb64(raw)[:32], "big"), int.from_bytes(unb64(raw)[32:], "big")
    issuer.ec_key.public_key().verify(
        encode_dss_signature(r, s), signing_input.encode(), ec.ECDSA(hashes.SHA384())
    )
    side.refuses(es384)
    head, payload, signature = issuer.token().split(".")
    side.refuses(f"{b64({**json.loads(unb64(head)), 'alg': 'ES384'})}.{payload}.{signature}")


# JV-03: kid path traversal, and no file opened


_opened: list[tuple[Any, ...]] | None = None
_watched_thread: int | None = None


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and threading.get_ident() == _watched_thread:
        _opened.append(args)


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; idle unless watching


def files_opened_by(action: Callable[[], Any]) -> list[tuple[Any, ...]]:
    """The `open` audit events (PEP 578: `open()`, `io.open`, `os.open`) this thread
    raises while `action` runs."""
    global _opened, _watched_thread
    _opened, _watched_thread = [], threading.get_ident()
    try:
        action()
    finally:
        seen, _opened, _watched_thread = _opened, None, None
    return seen


TRAVERSALS = ["../../../../dev/null", "/dev/null", "..\\..\\windows\\win.ini"]


def empty_key_hs256(data: bytes) -> bytes:
    return hmac.new(b"", data, hashlib.sha256).digest()


@pytest.mark.parametrize("kid", TRAVERSALS)
def test_jv03_a_kid_naming_a_file_is_refused_and_no_file_is_opened(
    side: Side, issuer: Issuer, kid: str
) -> None:
    assert side.accepts(issuer.token())["sub"] == "user-1"  # keys fetched, imports done
    # The hook sees an open on this thread: without it the check below proves nothing.
    assert files_opened_by(lambda: open(os.devnull).close())
    forgeries = [
        issuer.token({"alg": "HS256", "kid": kid}, sign=empty_key_hs256),
        issuer.token({"alg": "HS256", "kid": kid}, sign=lambda _: b""),
        issuer.token({"kid": kid}),  # signed by the real key, under the traversal kid
    ]
    for forged in forgeries:
        assert files_opened_by(lambda token=forged: side.refuses(token)) == []


# JV-06: jku and x5u name a listener that must see no connection


@pytest.fixture
def listener() -> Iterator[Listener]:
    with counting_listener() as started:
        yield started


def attacker_es256(data: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_jv06_jku_and_x5u_pointing_at_a_listener_are_refused_without_a_connection(
    issuer: Issuer, side: Side, listener: Listener
) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_kid = ECKey.import_key(attacker).thumbprint()
    base = f"http://127.0.0.1:{listener.port}"
    # The kit may look up an unknown kid at the issuer: allow it, so that only the
    # header's own URL could draw a connection to the listener.
    side.verifier = Verifier(
        ISSUER, AUDIENCE, jwks_uri=issuer.jwks_uri, refetch_interval=0, http=httpx.Client()
    )
    for member, url in (("jku", f"{base}/jwks.json"), ("x5u", f"{base}/cert.pem")):
        for kid in (attacker_kid, ES_KID, None):
            forged = issuer.token(
                {member: url, "kid": kid}, sign=lambda d: attacker_es256(d, attacker)
            )
            side.refuses(forged)
    time.sleep(0.3)  # a fetch started in the background would have connected by now
    assert listener.connections == 0
    socket.create_connection(("127.0.0.1", listener.port)).close()
    deadline = time.monotonic() + 5
    while listener.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.connections == 1, "the listener counts what reaches it"


# JV-09: ECDSA signatures out of range or in the wrong encoding


@pytest.mark.parametrize("name", ["r = n", "s = n", "r = s = n", "r = s = 0", "DER"])
def test_jv09_es256_with_r_or_s_equal_to_the_curve_order_or_der_encoded_is_refused(
    side: Side, issuer: Issuer, name: str
) -> None:
    genuine = issuer.token()
    assert side.accepts(genuine)["sub"] == "user-1"
    signing_input, _, raw_b64 = genuine.rpartition(".")
    raw = unb64(raw_b64)
    r, s = raw[:32], raw[32:]
    n = P256_N.to_bytes(32, "big")
    # The same signature as ASN.1 DER (what OpenSSL makes), which RFC 7518 §3.4 does
    # not allow in a JWS: it is valid for the key.
    der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    issuer.ec_key.public_key().verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    signature = {
        "r = n": n + s,
        "s = n": r + n,
        "r = s = n": n + n,
        "r = s = 0": bytes(64),
        "DER": der,
    }[name]
    side.refuses(f"{signing_input}.{b64(signature)}")


# JV-16: token type confusion


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/AT+JWT"])
def test_jv16_the_access_token_types_are_accepted(side: Side, issuer: Issuer, typ: str) -> None:
    assert side.accepts(issuer.token({"typ": typ}))["sub"] == "user-1"


@pytest.mark.parametrize(
    "typ", ["id_token+jwt", "logout+jwt", "JWT", "jwt", "dpop+jwt", "at+jwt ", None]
)
def test_jv16_other_token_types_signed_with_the_same_key_are_refused(
    side: Side, issuer: Issuer, typ: str | None
) -> None:
    side.refuses(issuer.token({"typ": typ}))


def id_token_claims(**changes: Any) -> dict[str, Any]:
    """An OpenID Connect ID token (OIDC Core §2) for the client `native`: its audience is
    the client, it has a nonce and auth_time, and no client_id or scope."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "native",
        "azp": "native",
        "exp": now + 300,
        "iat": now,
        "auth_time": now,
        "nonce": "n-0S6_WzA2Mj",
        "jti": os.urandom(16).hex(),
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ({"typ": "JWT"}, {}),
        ({"typ": None}, {}),
        # Each defence alone: the type passes, then the audience or client_id refuses.
        ({"typ": "at+jwt"}, {}),
        ({"typ": "at+jwt"}, {"aud": AUDIENCE}),
        ({"typ": "JWT"}, {"aud": AUDIENCE, "client_id": "native"}),
    ],
    ids=[
        "typ JWT",
        "no typ",
        "typ at+jwt, aud the client, no client_id",
        "typ at+jwt, aud the API, no client_id",
        "typ JWT, aud the API, with client_id",
    ],
)
def test_jv16_an_id_token_signed_with_the_same_key_is_refused(
    side: Side, issuer: Issuer, header: dict[str, Any], claims: dict[str, Any]
) -> None:
    side.refuses(issuer.token(header, id_token_claims(**claims)))


# JV-19: critical header parameters and unencoded payloads


@pytest.mark.parametrize(
    "header",
    [
        {"crit": ["exp"]},
        {"crit": ["exp"], "exp": 9_999_999_999},
        {"b64": False, "crit": ["b64"]},
        {"b64": False},
        {"b64": True, "crit": ["b64"]},
    ],
    ids=["crit exp", "crit exp with exp", "b64 false crit b64", "b64 false", "b64 true crit b64"],
)
def test_jv19_crit_and_b64_headers_are_refused(
    side: Side, issuer: Issuer, header: dict[str, Any]
) -> None:
    # Signed over the input as written: valid whether or not the payload is read as
    # base64url, so only the header check can refuse it.
    assert side.accepts(issuer.token())["sub"] == "user-1"
    side.refuses(issuer.token(header))


# JV-23: the Starlette dependency's edges (the transport itself is in
# tests/e2e/test_checklist_verify_rows.py, over HTTP)


def test_jv23_a_realm_that_would_break_the_challenge_is_refused(issuer: Issuer) -> None:
    verifier = Verifier(ISSUER, AUDIENCE, jwks_uri=issuer.jwks_uri)
    for realm in ('no"quote', "no\\backslash", "no\nnewline"):
        with pytest.raises(ValueError, match="realm"):
            require_scopes(verifier, "read", realm=realm)


async def test_jv23_a_body_the_endpoint_streamed_first_is_no_error(issuer: Issuer) -> None:
    # An endpoint (or a middleware) that consumed the body as a stream, keeping no copy,
    # before asking for the token: the kit cannot look for a second token then, and
    # must not fail the request for it.
    verifier = Verifier(ISSUER, AUDIENCE, jwks_uri=issuer.jwks_uri)
    read = require_scopes(verifier, "read")

    async def notes(request: Request) -> Response:
        async for _ in request.stream():
            pass
        token = await read(request)
        return JSONResponse({"sub": token.subject})

    app = Starlette(routes=[Route("/notes", notes, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        answer = await client.post(
            "/notes",
            headers={"Authorization": f"Bearer {issuer.token()}"},
            data={"access_token": "x"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sub": "user-1"}
