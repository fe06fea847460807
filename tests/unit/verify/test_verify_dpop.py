"""DPoP-bound access tokens at a resource server (RFC 9449 §7): `keyturn.verify.dpop` and
its Starlette/FastAPI dependency. The issuer's tokens and the client's proofs are signed
by PyJWT; the issuer's keys are served by an in-process transport."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.core.errors import StoreUnavailable
from keyturn.storage.dpop_replay import MemoryProofReplayCache
from keyturn.verify import AccessToken, DpopTokenVerifier, TokenRejected, Verifier
from keyturn.verify.starlette import request_uri, require_dpop_scopes, require_scopes
from support.dpop_proofs import NOW, URI, Client, ath

ISSUER = "https://auth.example.com"
AUDIENCE = "https://api.example.com"
JWKS_URI = ISSUER + "/jwks"
ALGS = 'algs="ES256 EdDSA RS256 PS256"'


class Issuer:
    """The authorization server: one ES256 key, tokens signed by PyJWT."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = {**json.loads(ECAlgorithm.to_jwk(self.key.public_key())), "kid": "k1"}
        self.jwk.update({"alg": "ES256", "use": "sig"})
        self.reachable = True

    def token(self, jkt: str | None = None, **claims: Any) -> str:
        body: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": AUDIENCE,
            "exp": int(NOW.timestamp()) + 300,
            "iat": int(NOW.timestamp()),
            "jti": secrets.token_hex(8),
            "client_id": "spa",
            "scope": "read",
        }
        if jkt is not None:
            body["cnf"] = {"jkt": jkt}
        body.update(claims)
        return jwt.encode(body, self.key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "k1"})

    def serve(self, request: httpx.Request) -> httpx.Response:
        if not self.reachable:
            raise httpx.ConnectError("down")
        return httpx.Response(200, json={"keys": [self.jwk]})


def clock() -> float:
    return NOW.timestamp()


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def verifier(issuer: Issuer) -> Verifier:
    transport = httpx.MockTransport(issuer.serve)
    return Verifier(
        ISSUER,
        AUDIENCE,
        jwks_uri=JWKS_URI,
        http=httpx.Client(transport=transport),
        async_http=httpx.AsyncClient(transport=transport),
        clock=clock,
    )


@pytest.fixture
def dpop(verifier: Verifier) -> DpopTokenVerifier:
    return DpopTokenVerifier(verifier, clock=clock)


@pytest.fixture
def client() -> Client:
    return Client()


def proof_for(client: Client, token: str, **changes: Any) -> str:
    return client.proof(**{"htm": "GET", "htu": URI, "ath": ath(token), **changes})


async def check(
    dpop: DpopTokenVerifier, token: str, proofs: list[str], **request: str
) -> AccessToken:
    return await dpop.verify(
        token, proofs=proofs, method=request.get("method", "GET"), uri=request.get("uri", URI)
    )


# The kit's functions


async def test_a_bound_token_with_a_proof_of_its_key_is_accepted(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    token = issuer.token(client.jkt)
    verified = await check(dpop, token, [proof_for(client, token)])
    assert (verified.subject, verified.jkt, verified.scopes) == ("user-1", client.jkt, {"read"})


async def test_a_bound_token_presented_as_a_bearer_token_is_refused(
    verifier: Verifier, issuer: Issuer, client: Client
) -> None:
    # RFC 9449 §7.1: whoever stole it would not need the key.
    token = issuer.token(client.jkt)
    with pytest.raises(TokenRejected, match="presented as a bearer token"):
        await verifier.verify_async(token)
    with pytest.raises(TokenRejected, match="presented as a bearer token"):
        verifier.verify(token)
    unbound = issuer.token()
    assert verifier.verify(unbound).jkt is None


async def test_an_unbound_token_under_the_dpop_scheme_is_refused(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    token = issuer.token()
    with pytest.raises(TokenRejected, match="bearer token presented with the DPoP scheme"):
        await check(dpop, token, [proof_for(client, token)])


@pytest.mark.parametrize(
    "cnf",
    [
        "jkt",
        [],
        {},
        {"jkt": ""},
        {"jkt": 5},
        {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
    ],
)
async def test_a_confirmation_the_kit_cannot_check_refuses_the_token(
    dpop: DpopTokenVerifier, verifier: Verifier, issuer: Issuer, client: Client, cnf: object
) -> None:
    # Treating it as a bearer token would drop the binding its issuer asked for.
    token = issuer.token(cnf=cnf)
    with pytest.raises(TokenRejected, match="unsupported confirmation"):
        verifier.verify(token)
    with pytest.raises(TokenRejected, match="unsupported confirmation"):
        await check(dpop, token, [proof_for(client, token)])


async def test_a_proof_by_another_key_than_the_tokens_is_refused(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    token = issuer.token(client.jkt)
    thief = Client()
    with pytest.raises(InvalidDpopProof) as raised:
        await check(dpop, token, [proof_for(thief, token)])
    assert "not the key the token is bound to" in raised.value.detail


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"ath": None}, "ath missing"),
        ({"ath": ath("another token")}, "ath does not match"),
        ({"htm": "POST"}, "htm does not match"),
        ({"htu": "https://api.example.com/other"}, "htu does not match"),
        ({"iat": int(NOW.timestamp()) - 3600}, "iat too old"),
    ],
)
async def test_a_proof_not_made_for_this_request_and_token_is_refused(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client, changes: dict[str, Any], detail: str
) -> None:
    token = issuer.token(client.jkt)
    with pytest.raises(InvalidDpopProof) as raised:
        await check(dpop, token, [proof_for(client, token, **changes)])
    assert detail in raised.value.detail


async def test_a_replayed_proof_is_refused(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    token = issuer.token(client.jkt)
    proof = proof_for(client, token)
    await check(dpop, token, [proof])
    with pytest.raises(InvalidDpopProof, match="jti already used"):
        await check(dpop, token, [proof])


@pytest.mark.parametrize("count", [0, 2])
async def test_a_request_without_exactly_one_proof_is_refused(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client, count: int
) -> None:
    token = issuer.token(client.jkt)
    with pytest.raises(InvalidDpopProof, match="DPoP header fields"):
        await check(dpop, token, [proof_for(client, token) for _ in range(count)])


async def test_a_refused_token_does_not_use_up_its_proof(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    token = issuer.token(client.jkt)
    proof = proof_for(client, token)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(TokenRejected):
        await check(dpop, forged, [proof])
    assert (await check(dpop, token, [proof])).jkt == client.jkt


async def test_a_shared_replay_cache_is_used_even_when_empty(
    verifier: Verifier, issuer: Issuer, client: Client
) -> None:
    shared = MemoryProofReplayCache(clock=lambda: NOW)
    first = DpopTokenVerifier(verifier, replay_cache=shared, clock=clock)
    second = DpopTokenVerifier(verifier, replay_cache=shared, clock=clock)
    token = issuer.token(client.jkt)
    proof = proof_for(client, token)
    await check(first, token, [proof])
    assert len(shared) == 1
    with pytest.raises(InvalidDpopProof, match="jti already used"):
        await check(second, token, [proof])


async def test_the_own_replay_cache_is_bounded(
    verifier: Verifier, issuer: Issuer, client: Client
) -> None:
    dpop = DpopTokenVerifier(verifier, max_proofs=1, clock=clock)
    token = issuer.token(client.jkt)
    await check(dpop, token, [proof_for(client, token)])
    # Full of a live proof: a new one is refused rather than the live one forgotten.
    with pytest.raises(InvalidDpopProof, match="jti already used"):
        await check(dpop, token, [proof_for(client, token)])


async def test_nonces_when_asked_for(verifier: Verifier, issuer: Issuer, client: Client) -> None:
    plain = DpopTokenVerifier(verifier, clock=clock)
    assert plain.nonce() is None
    dpop = DpopTokenVerifier(verifier, nonce_key=b"k" * 32, clock=clock)
    token = issuer.token(client.jkt)
    with pytest.raises(UseDpopNonce) as raised:
        await check(dpop, token, [proof_for(client, token, jti="j")])
    assert raised.value.nonce == dpop.nonce()
    # RFC 9449 §9: the client retries with the nonce; the refused proof was not kept.
    retried = proof_for(client, token, jti="j", nonce=dpop.nonce())
    assert (await check(dpop, token, [retried])).jkt == client.jkt


def test_the_accepted_algorithms_are_the_verifiers(verifier: Verifier) -> None:
    assert DpopTokenVerifier(verifier).algorithms == ("ES256", "EdDSA", "RS256", "PS256")
    assert DpopTokenVerifier(verifier, algorithms=["EdDSA"]).algorithms == ("EdDSA",)


# The Starlette and FastAPI dependency


def app_with(route: Callable[[Request], Any]) -> httpx.AsyncClient:
    async def notes(request: Request) -> JSONResponse:
        token = await route(request)
        assert request.state.access_token is token
        return JSONResponse({"sub": token.subject, "jkt": token.jkt})

    return serve(Starlette(routes=[Route("/notes", notes)]))


def serve(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


LOCAL = "http://testserver/notes"


def dpop_headers(client: Client, token: str, htu: str = LOCAL, **changes: Any) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof_for(client, token, htu=htu, **changes)}


async def test_the_dependency_accepts_a_bound_token_with_its_proof(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    http = app_with(require_dpop_scopes(dpop, "read"))
    token = issuer.token(client.jkt)
    response = await http.get("/notes", headers=dpop_headers(client, token))
    assert response.status_code == 200
    assert response.json() == {"sub": "user-1", "jkt": client.jkt}


async def test_the_dependency_takes_unbound_bearer_tokens_unless_told_not_to(
    dpop: DpopTokenVerifier, issuer: Issuer
) -> None:
    bearer = {"Authorization": f"Bearer {issuer.token()}"}
    response = await app_with(require_dpop_scopes(dpop, "read")).get("/notes", headers=bearer)
    assert response.json() == {
        "sub": "user-1",
        "jkt": None,
    }
    strict = app_with(require_dpop_scopes(dpop, "read", allow_bearer=False))
    response = await strict.get("/notes", headers=bearer)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f"DPoP {ALGS}"


@pytest.mark.parametrize("authorization", [None, "", "DPoP", "DPoP   ", "Basic dXNlcjpwYXNz"])
async def test_a_request_without_usable_credentials_is_challenged_without_an_error_code(
    dpop: DpopTokenVerifier, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await app_with(require_dpop_scopes(dpop, "read")).get("/notes", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f"Bearer, DPoP {ALGS}"


async def test_a_bound_token_as_bearer_is_refused_by_both_dependencies(
    dpop: DpopTokenVerifier, verifier: Verifier, issuer: Issuer, client: Client
) -> None:
    bearer = {"Authorization": f"Bearer {issuer.token(client.jkt)}"}
    for route in (require_dpop_scopes(dpop, "read"), require_scopes(verifier, "read")):
        response = await app_with(route).get("/notes", headers=bearer)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_an_unbound_token_under_the_dpop_scheme_is_answered_invalid_token(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    http = app_with(require_dpop_scopes(dpop, "read"))
    response = await http.get("/notes", headers=dpop_headers(client, issuer.token()))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'DPoP error="invalid_token", {ALGS}'


async def test_a_bad_proof_is_answered_invalid_dpop_proof(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    http = app_with(require_dpop_scopes(dpop, "read"))
    token = issuer.token(client.jkt)
    for headers in (
        dpop_headers(client, token, htm="POST"),
        dpop_headers(Client(), token),
        {"Authorization": f"DPoP {token}"},
    ):
        response = await http.get("/notes", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == f'DPoP error="invalid_dpop_proof", {ALGS}'
        assert response.text == "The DPoP proof is invalid."


async def test_a_missing_nonce_is_answered_with_one(
    verifier: Verifier, issuer: Issuer, client: Client
) -> None:
    dpop = DpopTokenVerifier(verifier, nonce_key=b"k" * 32, clock=clock)
    http = app_with(require_dpop_scopes(dpop, "read"))
    token = issuer.token(client.jkt)
    response = await http.get("/notes", headers=dpop_headers(client, token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'DPoP error="use_dpop_nonce", {ALGS}'
    nonce = response.headers["dpop-nonce"]
    assert nonce == dpop.nonce()
    response = await http.get("/notes", headers=dpop_headers(client, token, nonce=nonce))
    assert response.status_code == 200


async def test_a_missing_scope_is_answered_403_under_the_scheme_used(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    http = app_with(require_dpop_scopes(dpop, "read", "admin"))
    token = issuer.token(client.jkt)
    response = await http.get("/notes", headers=dpop_headers(client, token))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        f'DPoP error="insufficient_scope", scope="read admin", {ALGS}'
    )
    response = await http.get("/notes", headers={"Authorization": f"Bearer {issuer.token()}"})
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="read admin"'
    )


async def test_unreachable_keys_or_replay_cache_answer_503(
    verifier: Verifier, issuer: Issuer, client: Client
) -> None:
    class Down:
        async def first_use(self, jti_key: str, expires_at: datetime) -> bool:
            raise StoreUnavailable(detail="down")

    token = issuer.token(client.jkt)
    cacheless = DpopTokenVerifier(verifier, replay_cache=Down(), clock=clock)
    response = await app_with(require_dpop_scopes(cacheless, "read")).get(
        "/notes", headers=dpop_headers(client, token)
    )
    assert (response.status_code, response.text) == (
        503,
        "The DPoP replay cache cannot be reached.",
    )
    issuer.reachable = False
    keyless = DpopTokenVerifier(
        Verifier(
            ISSUER,
            AUDIENCE,
            jwks_uri=JWKS_URI,
            async_http=httpx.AsyncClient(transport=httpx.MockTransport(issuer.serve)),
            clock=clock,
        ),
        clock=clock,
    )
    response = await app_with(require_dpop_scopes(keyless, "read")).get(
        "/notes", headers=dpop_headers(client, token)
    )
    assert (response.status_code, response.text) == (503, "The token issuer cannot be reached.")


async def test_behind_a_proxy_the_public_origin_makes_the_htu(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    token = issuer.token(client.jkt)
    proxied = app_with(require_dpop_scopes(dpop, "read", origin=AUDIENCE + "/"))
    response = await proxied.get("/notes", headers=dpop_headers(client, token, htu=URI))
    assert response.status_code == 200
    direct = app_with(require_dpop_scopes(dpop, "read"))
    response = await direct.get("/notes", headers=dpop_headers(client, token, htu=URI))
    assert response.status_code == 401


def test_request_uri_keeps_the_path_as_sent_and_drops_the_query() -> None:
    sent = Request(
        {
            "type": "http",
            "scheme": "https",
            "method": "GET",
            "path": "/notes/a b",
            "raw_path": b"/notes/a%20b",
            "query_string": b"page=2",
            "headers": [(b"host", b"api.example.com")],
        }
    )
    assert request_uri(sent) == "https://api.example.com/notes/a%20b"
    assert request_uri(sent, "https://public.example") == "https://public.example/notes/a%20b"
    # A server that gives no raw path: the decoded one, encoded again.
    bare = Request({**sent.scope, "raw_path": None, "root_path": "/api"})
    assert request_uri(bare) == "https://api.example.com/api/notes/a%20b"


async def test_the_dependency_works_in_fastapi(
    dpop: DpopTokenVerifier, issuer: Issuer, client: Client
) -> None:
    app = FastAPI()
    read = require_dpop_scopes(dpop, "read")

    @app.get("/notes")
    async def notes(token: AccessToken = Depends(read)) -> dict[str, Any]:  # noqa: B008
        return {"jkt": token.jkt}

    token = issuer.token(client.jkt)
    response = await serve(app).get("/notes", headers=dpop_headers(client, token))
    assert response.json() == {"jkt": client.jkt}
