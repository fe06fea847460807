"""Unmodified OAuth client libraries that keyturn did not write, against a started
server on SQLite and PostgreSQL: Authlib's httpx client, requests-oauthlib, and
oauth4webapi from the npm registry under Node. Each completes the authorization code
grant with PKCE (driving the sign-in form like a browser), refreshes again and again
keeping every rotated refresh token through its own token-update hook, has each access
token verified by PyJWT's JWKS client (or oauth4webapi's RFC 9068 validator), and sees
a replayed old refresh token end the session.

The server here issues access tokens that live 2 seconds, so the libraries refresh
because the token expired, not because a test told them to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from oauthlib.oauth2 import InvalidGrantError
from requests_oauthlib import OAuth2Session

from conftest import APP_REDIRECT, Server, start_server
from support.authorize import sign_in
from support.availability import missing
from support.engine import PASSWORD

with warnings.catch_warnings():
    # Authlib warns at import that its httpx integration will move to "httpx2"; the
    # integration is what this test uses, unmodified.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

ACCESS_TOKEN_TTL = 2
FAST_ROTATIONS = 25
"""Authlib and oauth4webapi: Authlib refreshes any token within 60 s of its expiry, so
every call refreshes; oauth4webapi is told to refresh."""
WAITED_ROTATIONS = 21
"""requests-oauthlib refreshes only a token past its expiry: each rotation waits."""
JS = Path(__file__).parent / "js"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(
        request, tmp_path_factory, {"KEYTURN_ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL)}
    )


class Verifier:
    """A resource server's check of an access token: PyJWT with its JWKS client."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.keys = jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json")
        self.seen: set[str] = set()

    def __call__(self, token: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            self.keys.get_signing_key_from_jwt(token).key,
            algorithms=["ES256"],
            audience=self.server.base,
            issuer=self.server.base,
            leeway=5,
            options={"require": ["exp", "iat", "sub", "jti", "client_id"]},
        )
        assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
        assert claims["client_id"] == "app"
        assert claims["jti"] not in self.seen
        self.seen.add(claims["jti"])
        return claims


def callback_for(url: str) -> str:
    """Sign in as alice on the page at `url`, as a browser; the redirect back."""
    with httpx.Client(timeout=30) as browser:
        answer = sign_in(browser, url, "alice", PASSWORD)
    assert answer.status_code == 303, answer.text
    location: str = answer.headers["location"]
    return location


def test_authlib_httpx_client_code_pkce_then_rotations_through_update_token(
    server: Server,
) -> None:
    token_endpoint = f"{server.base}/oauth/token"
    saved: list[dict[str, Any]] = []

    def update_token(token: dict[str, Any], refresh_token: str | None = None, **_: Any) -> None:
        saved.append(dict(token))

    verify = Verifier(server)
    with OAuth2Client(
        client_id="app",
        token_endpoint_auth_method="none",
        scope="read keyturn:account",  # it calls the account API
        redirect_uri=APP_REDIRECT,
        code_challenge_method="S256",
        token_endpoint=token_endpoint,
        update_token=update_token,
        timeout=30,
    ) as client:
        code_verifier = generate_token(48)
        url, state = client.create_authorization_url(
            f"{server.base}/oauth/authorize", code_verifier=code_verifier
        )
        token = client.fetch_token(
            token_endpoint,
            authorization_response=callback_for(url),
            code_verifier=code_verifier,
            state=state,
        )
        verify(token["access_token"])
        first = token["refresh_token"]
        for rotation in range(1, FAST_ROTATIONS + 1):
            answer = client.get(f"{server.base}/auth/sessions")
            assert answer.status_code == 200, answer.text
            assert len(saved) == rotation, "update_token is called once per refresh"
            verify(saved[-1]["access_token"])
        refresh_tokens = [first, *(t["refresh_token"] for t in saved)]
        assert len(set(refresh_tokens)) == FAST_ROTATIONS + 1, "every refresh rotated"
        # Replaying the first refresh token is reuse: the session ends.
        with pytest.raises(OAuthError) as replay:
            client.refresh_token(token_endpoint, refresh_token=first)
        assert replay.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as after:
            client.refresh_token(token_endpoint, refresh_token=refresh_tokens[-1])
        assert after.value.error == "invalid_grant"


def test_requests_oauthlib_code_pkce_then_rotations_through_token_updater(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oauthlib refuses plain-HTTP token endpoints unless told this is a test setup.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    token_endpoint = f"{server.base}/oauth/token"
    saved: list[dict[str, Any]] = []
    verify = Verifier(server)
    session = OAuth2Session(
        "app",
        redirect_uri=APP_REDIRECT,
        scope=["read", "keyturn:account"],  # it calls the account API
        pkce="S256",
        auto_refresh_url=token_endpoint,
        auto_refresh_kwargs={"client_id": "app"},
        token_updater=lambda token: saved.append(dict(token)),
    )
    url, _ = session.authorization_url(f"{server.base}/oauth/authorize")
    token = session.fetch_token(
        token_endpoint, authorization_response=callback_for(url), include_client_id=True
    )
    verify(token["access_token"])
    first = token["refresh_token"]
    for rotation in range(1, WAITED_ROTATIONS + 1):
        # Let the access token expire for real, as oauthlib sees it (it rounds the
        # issue time to the nearest second, so its expiry may be up to 0.5 s later).
        time.sleep(max(0.0, float(session.token["expires_at"]) - time.time()) + 0.05)
        answer = session.get(f"{server.base}/auth/sessions", timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(saved) == rotation, "token_updater is called once per refresh"
        verify(saved[-1]["access_token"])
    refresh_tokens = [first, *(t["refresh_token"] for t in saved)]
    assert len(set(refresh_tokens)) == WAITED_ROTATIONS + 1
    with pytest.raises(InvalidGrantError):
        session.refresh_token(token_endpoint, refresh_token=first, client_id="app")
    with pytest.raises(InvalidGrantError):
        session.refresh_token(token_endpoint, refresh_token=refresh_tokens[-1], client_id="app")
    assert isinstance(session, requests.Session)


@pytest.fixture(scope="module")
def node_client() -> Path:
    """oauth4webapi installed from the committed lock file (`npm ci`)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing("Node.js and npm", "PATH", "install Node.js 20 or newer")
    if not (JS / "node_modules" / "oauth4webapi").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return JS / "refresh_loop.mjs"


def test_oauth4webapi_under_node_code_pkce_then_rotations(
    server: Server, node_client: Path
) -> None:
    process = subprocess.Popen(
        ["node", str(node_client), server.base, "app", APP_REDIRECT, str(FAST_ROTATIONS)],
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
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rotations"] == FAST_ROTATIONS
    assert result["validated"] == FAST_ROTATIONS + 1
    assert len(result["subjects"]) == 1
    assert result["replay"] == "invalid_grant"
    assert result["after"] == "invalid_grant"
