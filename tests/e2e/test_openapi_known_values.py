"""Generated requests that carry what a real caller holds, so they reach past
authentication: the seeded clients' ids and secrets, the users' passwords, live refresh
tokens and access tokens, the registered redirect URIs, a PKCE challenge whose verifier
is known, the sign-in form's CSRF cookie, session ids.

Schemathesis generates each request from the OpenAPI description; then, at random, known
values replace some of the generated ones (all of them in about half the requests, so
that the successes are reached too). A started server on each store answers; no answer
may be a 5xx, every answer must match the description, and every operation must have
succeeded at least once: tokens issued on all three grants, codes, cookies, introspection
of live tokens, sessions ended.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.cookiejar
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from test_openapi import CHECKS, _report

from conftest import APP_REDIRECT, LOOPBACK_REDIRECT, ORIGIN, WEB_REDIRECT, Server, start_server
from keyturn.settings import Settings
from keyturn.wiring import open_engine
from support.engine import PASSWORD

EXAMPLES_PER_OPERATION = int(os.environ.get("KEYTURN_FUZZ_KNOWN_EXAMPLES", "60"))
MINIMUM_REQUESTS = 10 * EXAMPLES_PER_OPERATION
COOKIE = "__Host-keyturn_rt_spa"  # the cookie client's own refresh cookie
CSRF_COOKIE = "keyturn_csrf"  # the server's issuer is plain HTTP
CSRF = "c" * 43
VERIFIER = "known-verifier-" + "v" * 40
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).decode()[:43]
PASSWORD_USER = "carol"  # the only user whose password the generated requests may change
REDIRECTS = {
    "app": [APP_REDIRECT, LOOPBACK_REDIRECT, "http://127.0.0.1:53682/native-cb"],
    "web": [WEB_REDIRECT],
}
KEEP = "<generated>"
"""A choice that leaves the generated value in place."""
Pick = Callable[[list[Any]], Any]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    unlimited = {
        "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_CLIENT_AUTH_FAILURES_PER_MINUTE": "100000000",
        "KEYTURN_REVOCATION_FEED_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_LOGIN_FAILURES_PER_ACCOUNT": "100000000",
    }
    for started in start_server(request, tmp_path_factory, unlimited):
        asyncio.run(_add_user(started, PASSWORD_USER))
        yield started


async def _add_user(server: Server, name: str) -> None:
    engine = await open_engine(Settings(**{**server.settings.model_dump(), "issuer": server.base}))
    try:
        await engine.admin.add_user(name, PASSWORD)
    finally:
        await engine.close()


@dataclass
class Known:
    """What the caller holds, updated from the answers as they come."""

    server: Server
    refresh: dict[str, list[str]] = field(default_factory=dict)
    access: list[str] = field(default_factory=list)
    codes: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(code, client id, redirect_uri as sent in the authorization request)"""
    cursors: list[str] = field(default_factory=list)
    password: dict[str, str] = field(default_factory=dict)

    def basic(self, client_id: str) -> str:
        pair = f"{client_id}:{self.server.secrets[client_id]}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def login(self, client_id: str = "native", username: str = "alice") -> dict[str, Any]:
        """A login over HTTP; its tokens join the pools. The cookie client `spa` signs in
        as its page would (the CSRF header, its origin) and gets its token in a cookie."""
        confidential = client_id in self.server.secrets
        answer = httpx.post(
            f"{self.server.base}/auth/login",
            json={
                "client_id": client_id,
                "username": username,
                "password": self.password.get(username, PASSWORD),
                **({"client_secret": self.server.secrets[client_id]} if confidential else {}),
            },
            headers={"X-Keyturn-CSRF": "1", "Origin": ORIGIN} if client_id == "spa" else {},
        )
        assert answer.status_code == 200, answer.text
        tokens: dict[str, Any] = answer.json()
        cookie = next(
            (v for v in answer.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")), ""
        )
        in_cookie = cookie.partition("=")[2].partition(";")[0]
        self.keep(client_id, tokens.get("refresh_token") or in_cookie, tokens["access_token"])
        return tokens

    def keep(self, client_id: str, refresh_token: str | None, access_token: str | None) -> None:
        if refresh_token:
            self.refresh.setdefault(client_id, []).append(refresh_token)
        if access_token:
            self.access.append(access_token)

    def latest(self, client_id: str) -> str:
        if not self.refresh.get(client_id):
            if client_id in ("web", "app"):
                self.exchange(client_id, *self.code(client_id))
            else:
                self.login(client_id)
        return self.refresh[client_id][-1]

    def code(self, client_id: str) -> tuple[str, str | None]:
        """An authorization code from the sign-in form, as a browser gets one, and the
        redirect URI the request named (`app` has several, so it must name one)."""
        redirect_uri = REDIRECTS[client_id][0] if client_id == "app" else None
        with httpx.Client(base_url=self.server.base) as browser:
            query = {
                "response_type": "code",
                "client_id": client_id,
                "code_challenge": CHALLENGE,
                "code_challenge_method": "S256",
                **({"redirect_uri": redirect_uri} if redirect_uri else {}),
            }
            page = browser.get("/oauth/authorize", params=query)
            assert page.status_code == 200, page.text
            form = {
                **query,
                "username": "alice",
                "password": PASSWORD,
                "csrf_token": browser.cookies[CSRF_COOKIE],
            }
            answer = browser.post("/oauth/authorize", data=form)
        assert answer.status_code == 303, answer.text
        return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0], redirect_uri

    def exchange(self, client_id: str, code: str, redirect_uri: str | None) -> None:
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER}
        if redirect_uri is not None:
            form["redirect_uri"] = redirect_uri
        headers = {}
        if client_id in self.server.secrets:
            headers["Authorization"] = self.basic(client_id)
        else:
            form["client_id"] = client_id
        answer = httpx.post(f"{self.server.base}/oauth/token", data=form, headers=headers)
        assert answer.status_code == 200, answer.text
        tokens = answer.json()
        self.keep(client_id, tokens["refresh_token"], tokens["access_token"])


def _sid(access_token: str) -> str:
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims.get("sid", ""))


@dataclass
class Choices:
    """The known values of one request: all valid, or all but one (`wrong`, the index of
    the one `choose` that takes another value), so a refusal is about one thing."""

    pick: Pick
    wrong: int
    made: int = 0

    def choose(self, valid: Any, *others: Any) -> Any:
        """`valid`, or for the `wrong` choice one of `others` (KEEP if there are none)."""
        self.made += 1
        return self.pick(list(others) or [KEEP]) if self.made - 1 == self.wrong else valid


def _put(target: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        target.pop(name, None)
    elif value != KEEP:
        target[name] = value


def _client_auth(
    case: schemathesis.Case, known: Known, body: dict[str, Any], client_id: str
) -> None:
    """Authenticate as `client_id` the way it is registered: Basic for a confidential
    client, `client_id` in the body for a public one; KEEP leaves the generated ones."""
    if client_id == KEEP:
        return
    body.pop("client_secret", None)
    if client_id in known.server.secrets:
        case.headers["Authorization"] = known.basic(client_id)
        body.pop("client_id", None)
    else:
        case.headers.pop("Authorization", None)
        body["client_id"] = client_id


def steer_authorize(case: schemathesis.Case, known: Known, c: Choices) -> None:
    params = case.query if case.method == "GET" else case.body
    client_id = c.choose(c.pick(["web", "app"]), "native")
    _put(params, "client_id", client_id)
    if client_id in REDIRECTS:
        registered = c.pick(REDIRECTS[client_id])
        given_uri = registered if client_id == "app" else c.pick([registered, None])
        _put(params, "redirect_uri", c.choose(given_uri))
    _put(params, "response_type", c.choose("code", "token"))
    _put(params, "code_challenge", c.choose(CHALLENGE, "too-short", None))
    _put(params, "code_challenge_method", c.choose("S256", "plain"))
    _put(params, "scope", c.choose(c.pick([None, "read"]), "admin"))
    if case.method == "POST":
        _put(params, "username", c.choose("alice", "bob"))
        _put(params, "password", c.choose(PASSWORD, "wrong password"))
        _put(params, "csrf_token", c.choose(CSRF, None))
        case.cookies[CSRF_COOKIE] = c.choose(CSRF, "d" * 43)


def steer_token(case: schemathesis.Case, known: Known, c: Choices) -> None:
    body = case.body
    grant = c.pick(["refresh_token", "authorization_code", "client_credentials"])
    if grant == "authorization_code":
        client_id = c.pick(["web", "app"])
        if not known.codes:
            code, redirect_uri = known.code(client_id)
            known.codes.append((code, client_id, redirect_uri))
        code, for_client, redirect_uri = known.codes.pop()
        _client_auth(case, known, body, c.choose(for_client, "conf"))
        _put(body, "code", c.choose(code))
        _put(body, "code_verifier", c.choose(VERIFIER, "x" * 43))
        _put(body, "redirect_uri", c.choose(redirect_uri, WEB_REDIRECT))
    elif grant == "refresh_token":
        client_id = c.choose(c.pick(["conf", "native"]), "conf2")
        owner = c.choose(client_id, "native" if client_id == "conf" else "conf")
        owner = owner if owner in ("conf", "native") else client_id
        _client_auth(case, known, body, client_id)
        _put(body, "refresh_token", c.choose(known.latest(owner)))
        _put(body, "scope", c.choose(c.pick([None, "read"])))
    else:
        _client_auth(case, known, body, c.choose("cc", "conf", "native"))
        _put(body, "scope", c.choose(c.pick([None, "write"])))
    _put(body, "grant_type", c.choose(grant))


def steer_inspection(case: schemathesis.Case, known: Known, c: Choices) -> None:
    body = case.body
    caller = c.choose(c.pick(["conf", "rs"]), "cc")
    _client_auth(case, known, body, caller)
    access = known.access[-1] if known.access else KEEP
    token = c.pick([known.latest("conf"), access])
    _put(body, "token", c.choose(token))


def steer_login(case: schemathesis.Case, known: Known, c: Choices) -> None:
    body = case.body
    client_id = c.choose(c.pick(["native", "spa", "conf"]), "cc")
    _put(body, "client_id", client_id)
    _put(body, "client_secret", known.server.secrets.get(client_id))
    _put(body, "username", c.choose(c.pick(["alice", "bob"])))
    _put(body, "password", c.choose(PASSWORD, "wrong password"))
    _put(body, "scope", c.choose(c.pick([None, "read write"])))
    _put(body, "previous_refresh_token", c.choose(None))
    _put(body, "device_name", c.choose(None))
    case.cookies.pop(COOKIE, None)
    if client_id == "spa":
        case.headers["X-Keyturn-CSRF"] = "1"
        _put(case.headers, "Origin", c.choose(ORIGIN, "https://evil.test"))


def steer_refresh(case: schemathesis.Case, known: Known, c: Choices) -> None:
    body = case.body
    client_id = c.choose(c.pick(["native", "spa", "conf"]), "cc")
    _put(body, "client_id", client_id)
    _put(body, "client_secret", known.server.secrets.get(client_id))
    _put(body, "scope", c.choose(None, "read"))
    token = known.latest(client_id if client_id in ("native", "spa", "conf") else "native")
    if client_id == "spa":
        body.pop("refresh_token", None)
        case.cookies[COOKIE] = token
        case.headers["X-Keyturn-CSRF"] = c.choose("1", None)
    else:
        case.cookies.pop(COOKIE, None)
        _put(body, "refresh_token", c.choose(token))


def steer_bearer(case: schemathesis.Case, known: Known, c: Choices) -> None:
    username = PASSWORD_USER if case.path == "/auth/password" else "alice"
    # A pooled token may be anyone's: never one that could change another's password.
    fresh = c.choose("fresh", "pooled" if case.path != "/auth/password" else "garbage")
    if fresh == "fresh":
        token = known.login("native", username)["access_token"]
        case.headers["Authorization"] = f"Bearer {token}"
    elif fresh == "pooled" and known.access:
        token = known.access[-1]
        case.headers["Authorization"] = f"Bearer {token}"
    else:
        token = ""
        case.headers["Authorization"] = "Bearer not-a-token"
    sids = [sid for sid in map(_sid, known.access) if sid]
    if case.path in ("/auth/sessions/{sid}", "/auth/sessions/{sid}/events") and sids:
        own = _sid(token) if token else KEEP
        _put(case.path_parameters, "sid", c.choose(c.pick([own, c.pick(sids)])))
    if case.path == "/auth/password":
        body = case.body
        current = known.password.get(PASSWORD_USER, PASSWORD)
        _put(body, "current_password", c.choose(current, "wrong password"))
        new = c.pick([f"a new passphrase {len(known.access)}", "password"])
        _put(body, "new_password", c.choose(new))


def steer_revocations(case: schemathesis.Case, known: Known, c: Choices) -> None:
    client_id = c.choose("rs", "conf")
    if client_id != KEEP:
        case.headers["Authorization"] = known.basic(client_id)
    if known.cursors:
        _put(case.query, "since", c.choose(c.pick(known.cursors)))


STEERING: dict[tuple[str, str], Callable[[schemathesis.Case, Known, Choices], None]] = {
    ("GET", "/oauth/authorize"): steer_authorize,
    ("POST", "/oauth/authorize"): steer_authorize,
    ("POST", "/oauth/token"): steer_token,
    ("POST", "/oauth/revoke"): steer_inspection,
    ("POST", "/oauth/introspect"): steer_inspection,
    ("POST", "/auth/login"): steer_login,
    ("POST", "/auth/refresh"): steer_refresh,
    ("POST", "/auth/logout"): steer_refresh,
    ("POST", "/auth/logout-all"): steer_bearer,
    ("GET", "/auth/sessions"): steer_bearer,
    ("DELETE", "/auth/sessions/{sid}"): steer_bearer,
    ("GET", "/auth/sessions/{sid}/events"): steer_bearer,
    ("POST", "/auth/password"): steer_bearer,
    ("GET", "/auth/revocations"): steer_revocations,
}
SUCCESS = {
    ("GET", "/oauth/authorize"): {200, 302},
    ("POST", "/oauth/authorize"): {303, 302, 401, 403},
    ("POST", "/oauth/token"): {200},
    ("POST", "/oauth/revoke"): {200},
    ("POST", "/oauth/introspect"): {200},
    ("POST", "/auth/login"): {200, 401},
    ("POST", "/auth/refresh"): {200},
    ("POST", "/auth/logout"): {204},
    ("POST", "/auth/logout-all"): {204},
    ("GET", "/auth/sessions"): {200},
    ("DELETE", "/auth/sessions/{sid}"): {204, 404},
    ("GET", "/auth/sessions/{sid}/events"): {200, 404},
    ("POST", "/auth/password"): {200, 401},
    ("GET", "/auth/revocations"): {200},
}
"""The answers each steered operation must have given at least once."""


def learn(known: Known, case: schemathesis.Case, status: int, headers: Any, body: bytes) -> None:
    """Keep what a successful answer handed out."""
    if status == 303 and case.path == "/oauth/authorize":
        code = parse_qs(urlsplit(headers["location"][0]).query)["code"][0]
        known.codes.append((code, case.body["client_id"], case.body.get("redirect_uri")))
    if status != 200 or not body.startswith(b"{"):
        return
    answer = json.loads(body)
    if case.path == "/auth/revocations":
        known.cursors.append(answer["cursor"])
    if case.path == "/auth/password":
        known.password[PASSWORD_USER] = case.body["new_password"]
    if "access_token" not in answer:
        return
    client_id = case.body.get("client_id") if isinstance(case.body, dict) else None
    if client_id is None:
        secret_of = {known.basic(c): c for c in known.server.secrets}
        client_id = secret_of.get(case.headers.get("Authorization", ""), "")
    cookie = next((v for v in headers.get("set-cookie", []) if v.startswith(f"{COOKIE}=")), "")
    refresh = answer.get("refresh_token") or cookie.partition("=")[2].partition(";")[0]
    known.keep(client_id, refresh or None, answer["access_token"])


def _send(
    operation: Any,
    key: tuple[str, str],
    known: Known,
    session: requests.Session,
    answered: Counter[tuple[str, str, int]],
) -> None:
    """Send EXAMPLES_PER_OPERATION generated, steered requests to one operation."""
    steer = STEERING[key]

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE), data=st.data())
    def call(case: schemathesis.Case, data: st.DataObject) -> None:
        if case.method != "GET" and not isinstance(case.body, dict):
            case.body = {}
        # The choices come from one drawn seed: how many there are depends on what the
        # caller holds, and Hypothesis wants the same draws on every run.
        choices = random.Random(data.draw(st.integers(0, 2**32 - 1)))  # noqa: S311 - not a secret
        # Every other request honest (no wrong choice); the others take turns at making
        # each of the (up to twelve) choices wrong.
        sent = sum(n for (m, p, _), n in answered.items() if (m, p) == key)
        wrong = -1 if sent % 2 == 0 else (sent // 2) % 12
        steer(case, known, Choices(choices.choice, wrong))
        response = case.call(session=session, timeout=30)
        answered[(*key, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)
        learn(known, case, response.status_code, response.headers, response.content)

    call()


def test_requests_with_known_credentials_reach_every_success_and_conform(
    server: Server,
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    known = Known(server)
    session = requests.Session()
    # Each request carries exactly the cookies its case names, never one kept from before.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    answered: Counter[tuple[str, str, int]] = Counter()
    started = time.monotonic()

    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in STEERING:
            _send(operation, key, known, session, answered)

    for (method, path), wanted in SUCCESS.items():
        got = {status for m, p, status in answered if (m, p) == (method, path)}
        assert wanted <= got, f"{method} {path} answered only {sorted(got)}"
    total = sum(answered.values())
    print(f"schemathesis sent {total} requests with known values: {dict(answered)}")
    assert total >= MINIMUM_REQUESTS
    statuses: Counter[int] = Counter()
    for (_, _, status), n in answered.items():
        statuses[status] += n
    seconds = round(time.monotonic() - started, 1)
    _report(
        server,
        total,
        statuses,
        seconds,
        section="known_values",
        examples=EXAMPLES_PER_OPERATION,
    )
