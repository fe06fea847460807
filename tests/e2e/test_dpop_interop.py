"""DPoP (RFC 9449) clients that keyturn did not write, unmodified, against a started
server on SQLite and PostgreSQL:

- requests-oauth2client (PyPI, pinned in pyproject's dev extra; a test-only client, not
  a runtime dependency of keyturn): its `OAuth2Client(dpop_bound_access_tokens=True)`
  makes the proofs with the ES256 `DPoPKey` it generates, answers the server's
  `use_dpop_nonce` challenges itself, at the token endpoint and at the resource, and its
  `OAuth2AccessTokenAuth` refreshes an expired token under a proof of the same key and
  then calls the resource with `Authorization: DPoP` and a proof carrying `ath`;
- oauth4webapi (npm, installed by `npm ci` from the committed lock) under Node, driven
  by `js/dpop_loop.mjs`: its `DPoP(client, keyPair)` handle makes the proofs and keeps
  the nonces; the library leaves retrying after `isDPoPNonceError` to the application,
  and the script retries once, as its documentation shows.

Each one completes the authorization code grant with PKCE, the code exchanged under a
proof with no nonce yet (so the server's nonce challenge comes first and the library
recovers from it), which opens a session bound to the library's key; rotates 20 times,
every access token carrying `cnf.jkt` equal to the RFC 7638 thumbprint of that key
(computed here from the public JWK the library exposes, and compared with the library's
own) and `token_type` DPoP; calls `GET /auth/sessions` with each bound access token.
Then the live refresh token is stolen: presented by a second instance of the library
with another key, or with no proof at all by a plain HTTP client. Either is
`invalid_grant`, the legitimate client's next refresh is refused too, and the audit
trail records `reuse_key_mismatch` for the session.

Nothing here makes a proof by hand: what a library sends is what it made, and neither
needed a workaround. What they do not do: requests-oauth2client does not read
`dpop_signing_alg_values_supported` from the metadata (it signs with its configured
`dpop_alg`, ES256 by default, which keyturn offers), and it sends `dpop_jkt` (RFC 9449
§10) with the authorization request, which keyturn accepts and ignores (the session is
bound by the proof at the token endpoint); oauth4webapi does not retry by itself after a
`use_dpop_nonce` refusal (see above).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from requests import Response
from requests.adapters import HTTPAdapter
from requests_oauth2client import (
    DPoPKey,
    DPoPToken,
    InvalidGrant,
    OAuth2AccessTokenAuth,
    OAuth2Client,
)
from test_client_libraries import JS, Verifier, callback_for, node_client  # noqa: F401
from test_dpop_token_endpoint import session_of, theft_reasons

from conftest import APP_REDIRECT, Server, start_server
from support.dpop_proofs import thumbprint

ACCESS_TOKEN_TTL = 2
"""Shorter than requests-oauth2client's 20 s leeway: its auth handler refreshes before
every call, because the token is about to expire as it sees it."""
ROTATIONS = 20
THEFTS = ["another_key", "no_proof"]
TOKEN = "/oauth/token"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(
        request, tmp_path_factory, {"KEYTURN_ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL)}
    )


def check_bound(verify: Verifier, access_token: str, jkt: str) -> dict[str, Any]:
    """The claims of a valid access token for `app`, bound to the key of thumbprint
    `jkt`."""
    claims = verify(access_token)
    assert claims["cnf"] == {"jkt": jkt}
    return claims


def assert_theft_ended(server: Server, access_token: str) -> None:
    session = session_of(server, access_token)
    assert session.revoked
    assert theft_reasons(server, access_token) == ["reuse_key_mismatch"]


class Exchanges(HTTPAdapter):
    """A `requests` transport that notes each answer that went over it: method, path,
    status, OAuth error, and the thumbprint of the key its DPoP proof was made with.
    It sits under the library's own response hooks, so it sees the requests a hook
    resends too (requests-oauth2client resends a nonce-challenged resource request
    from its hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, int, str | None, str | None]] = []
        self.session = requests.Session()
        self.session.mount("http://", self)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        response = super().send(request, *args, **kwargs)
        proof = request.headers.get("DPoP")
        jkt = thumbprint(jwt.get_unverified_header(proof)["jwk"]) if proof else None
        error = None
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            error = body.get("error") if isinstance(body, dict) else None
        path = (request.path_url or "").split("?")[0]
        self.seen.append((request.method or "", path, response.status_code, error, jkt))
        return response

    def at(self, path: str) -> list[tuple[int, str | None, str | None]]:
        return [(status, err, jkt) for _, p, status, err, jkt in self.seen if p == path]


def library_client(server: Server, exchanges: Exchanges) -> OAuth2Client:
    """requests-oauth2client configured from keyturn's metadata, DPoP on."""
    return OAuth2Client.from_discovery_endpoint(
        f"{server.base}/.well-known/oauth-authorization-server",
        issuer=server.base,
        client_id="app",
        redirect_uri=APP_REDIRECT,
        dpop_bound_access_tokens=True,
        session=exchanges.session,
        testing=True,  # the test server is plain HTTP
    )


@pytest.mark.parametrize("theft", THEFTS)
def test_requests_oauth2client_dpop_code_pkce_rotations_and_key_mismatch_theft(
    server: Server, theft: str
) -> None:
    exchanges = Exchanges()
    client = library_client(server, exchanges)
    verify = Verifier(server)

    # keyturn:account: the resource the bound tokens are used at is the account API.
    authorization = client.authorization_request(scope="read keyturn:account", nonce=None)
    key = authorization.dpop_key
    assert isinstance(key, DPoPKey)
    jkt = thumbprint(dict(key.public_jwk))
    assert key.dpop_jkt == jkt
    assert parse_qs(urlsplit(str(authorization.uri)).query)["dpop_jkt"] == [jkt]
    callback = authorization.validate_callback(callback_for(str(authorization.uri)))
    token = client.authorization_code(callback)

    assert isinstance(token, DPoPToken)
    assert token.token_type == "DPoP"
    sid = check_bound(verify, token.access_token, jkt)["sid"]
    # The proof without a nonce was challenged; the library retried with the nonce, and
    # the code it exchanged was still good.
    assert exchanges.at(TOKEN) == [(400, "use_dpop_nonce", jkt), (200, None, jkt)]

    auth = OAuth2AccessTokenAuth(client, token)
    refresh_tokens = [token.refresh_token]
    for _ in range(ROTATIONS):
        answer = exchanges.session.get(f"{server.base}/auth/sessions", auth=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        assert [s["sid"] for s in answer.json() if s["current"]] == [sid]
        current = auth.token
        assert isinstance(current, DPoPToken)
        assert current.dpop_key is key
        assert current.token_type == "DPoP"
        assert check_bound(verify, current.access_token, jkt)["sid"] == sid
        refresh_tokens.append(current.refresh_token)
    assert len(set(refresh_tokens)) == ROTATIONS + 1, "every refresh rotated"
    # Each refresh proved the same key, with the nonce learnt from the challenge.
    assert exchanges.at(TOKEN)[2:] == [(200, None, jkt)] * ROTATIONS
    resource = exchanges.at("/auth/sessions")
    # The library keeps the resource's nonce apart from the token endpoint's: the
    # first call is challenged (401, `WWW-Authenticate: DPoP`) and its hook resends.
    assert resource == [(401, "use_dpop_nonce", jkt)] + [(200, None, jkt)] * ROTATIONS

    assert auth.token is not None
    stolen, live_access = auth.token.refresh_token, auth.token.access_token
    assert isinstance(stolen, str)
    if theft == "another_key":
        thief_calls = Exchanges()
        thief = library_client(server, thief_calls)
        with pytest.raises(InvalidGrant):
            thief.refresh_token(stolen)  # DPoP on: a key of its own is generated
        # Its first proof is challenged for the nonce, which consumes nothing; its
        # second is a valid proof of another key, so the token is refused as stolen.
        (_, _, thief_jkt), _ = presented = thief_calls.at(TOKEN)
        assert presented == [(400, "use_dpop_nonce", thief_jkt), (400, "invalid_grant", thief_jkt)]
        assert thief_jkt not in (None, jkt)
    else:
        answer = requests.post(
            server.base + TOKEN,
            data={"grant_type": "refresh_token", "refresh_token": stolen, "client_id": "app"},
            timeout=30,
        )
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_grant"
    with pytest.raises(InvalidGrant):
        client.refresh_token(auth.token)
    assert_theft_ended(server, live_access)


@pytest.mark.usefixtures("node_client")
@pytest.mark.parametrize("theft", THEFTS)
def test_oauth4webapi_dpop_code_pkce_rotations_and_key_mismatch_theft(
    server: Server, theft: str
) -> None:
    process = subprocess.Popen(
        [
            "node",
            str(JS / "dpop_loop.mjs"),
            server.base,
            "app",
            APP_REDIRECT,
            str(ROTATIONS),
            {"another_key": "other_key", "no_proof": "no_proof"}[theft],
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert process.stdout is not None
    assert process.stdin is not None
    first_line = process.stdout.readline()
    if not first_line:
        raise AssertionError(process.stderr.read() if process.stderr else "node printed nothing")
    process.stdin.write(callback_for(json.loads(first_line)["authorize"]) + "\n")
    process.stdin.flush()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])

    jkt = thumbprint(result["jwk"])
    assert result["jkt"] == jkt
    assert "ES256" in result["algs"], "the metadata offers the alg the key was made for"
    assert result["code_challenges"] == 1, "the code exchange was challenged for a nonce"
    assert result["token_types"] == ["DPoP"] * (ROTATIONS + 1)
    assert result["library_token_types"] == ["dpop"] * (ROTATIONS + 1)
    verify = Verifier(server)
    for access_token in result["access_tokens"]:
        check_bound(verify, access_token, jkt)
    assert len(set(result["refresh_tokens"])) == ROTATIONS + 1, "every refresh rotated"
    assert result["resource_statuses"] == [200] * ROTATIONS
    # The handle keeps the last DPoP-Nonce per origin; the resource shares the token
    # endpoint's, so its nonce was known and no resource call was challenged.
    assert result["challenges"]["resource"] == 0
    assert result["thief"] == "invalid_grant"
    # A new handle has no nonce yet: challenged once, which consumes nothing; then a
    # valid proof of another key, refused as theft.
    assert result["thief_challenges"] == (1 if theft == "another_key" else 0)
    if theft == "another_key":
        assert result["thief_jkt"] not in (None, jkt)
    assert result["challenges"]["token"] == 1 + result["thief_challenges"]
    assert result["after"] == "invalid_grant"
    assert_theft_ended(server, result["access_tokens"][-1])
