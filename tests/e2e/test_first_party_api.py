"""The first-party API over real HTTP: login, refresh, logout, sessions, password; body
and cookie delivery; CSRF (SL, CK, PW, IV rows)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from conftest import ORIGIN, Server
from support.engine import PASSWORD
from support.token_endpoint import assert_error

COOKIE = "__Host-keyturn_rt_spa"  # the cookie client's own refresh cookie
CSRF = {"X-Keyturn-CSRF": "1", "Origin": ORIGIN}


def call(server: Server, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, timeout=30, **kwargs)


def login(server: Server, client_id: str = "native", **extra: Any) -> httpx.Response:
    headers = CSRF if client_id == "spa" else {}
    body = {"username": "alice", "password": PASSWORD, "client_id": client_id, **extra}
    return call(server, "/auth/login", body, headers=headers)


def cookie_of(response: httpx.Response) -> str:
    match = re.search(rf"{COOKIE}=([^;]*)", response.headers["set-cookie"])
    assert match is not None
    return match.group(1)


def with_cookie(value: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}", **headers}


def test_login_body_delivery_returns_both_tokens(server: Server) -> None:
    response = login(server)
    assert response.status_code == 200
    body = response.json()
    assert {"access_token", "refresh_token", "token_type", "expires_in", "scope"} <= set(body)
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


def test_ck01_ck02_cookie_delivery_sets_a_host_cookie_and_no_body_token(server: Server) -> None:
    response = login(server, "spa")
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=kt_rt_")
    for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower()
    assert "domain" not in cookie.lower()
    max_age = int(re.search(r"Max-Age=(\d+)", cookie, re.I).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 15 * 86400  # the idle lifetime: KEYTURN_SESSION_IDLE_TTL default
    assert len(cookie.split(";")[0]) <= 4096


def test_ck03_cookie_refresh_rotates_the_cookie(server: Server) -> None:
    first = cookie_of(login(server, "spa"))
    response = call(
        server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(first, **CSRF)
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert cookie_of(response) != first
    assert "refresh_token" not in response.json()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": ORIGIN},
        {"X-Keyturn-CSRF": "1", "Origin": "https://evil.example"},
        {"X-Keyturn-CSRF": "1", "Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_ck04_ck05_cross_site_or_headerless_refresh_is_403_and_rotates_nothing(
    server: Server, headers: dict[str, str]
) -> None:
    cookie = cookie_of(login(server, "spa"))
    refused = call(
        server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(cookie, **headers)
    )
    assert_error(refused, 403, "invalid_request")
    assert "set-cookie" not in refused.headers
    ok = call(server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(cookie, **CSRF))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_ck06_simple_content_types_are_refused(server: Server, content_type: str) -> None:
    response = httpx.post(
        f"{server.base}/auth/login",
        content=f'{{"username":"alice","password":"{PASSWORD}","client_id":"native"}}',
        headers={"Content-Type": content_type},
    )
    assert_error(response, 400, "invalid_request")


def test_ck07_logout_clears_the_cookie_and_ends_the_session(server: Server) -> None:
    cookie = cookie_of(login(server, "spa"))
    response = call(
        server, "/auth/logout", {"client_id": "spa"}, headers=with_cookie(cookie, **CSRF)
    )
    assert response.status_code == 204
    cleared = response.headers["set-cookie"].lower()
    for attribute in (
        f"{COOKIE.lower()}=",
        "max-age=0",
        "path=/",
        "secure",
        "httponly",
        "samesite=strict",
    ):
        assert attribute in cleared
    again = call(server, "/auth/refresh", {"client_id": "spa"}, headers=with_cookie(cookie, **CSRF))
    assert_error(again, 400, "invalid_grant")


def test_ck08_cookie_and_body_token_together_are_refused(server: Server) -> None:
    cookie = cookie_of(login(server, "spa"))
    response = call(
        server,
        "/auth/refresh",
        {"client_id": "spa", "refresh_token": cookie},
        headers=with_cookie(cookie, **CSRF),
    )
    assert_error(response, 400, "invalid_request")


def test_ck10_refresh_token_in_the_url_is_refused(server: Server) -> None:
    token = login(server).json()["refresh_token"]
    response = httpx.post(
        f"{server.base}/auth/refresh?refresh_token={token}", json={"client_id": "native"}
    )
    assert_error(response, 400, "invalid_request")


def test_rt06_a_first_party_token_rotates_at_the_oauth_endpoint_too(server: Server) -> None:
    token = login(server).json()["refresh_token"]
    oauth = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "native"},
    )
    assert oauth.status_code == 200
    nxt = oauth.json()["refresh_token"]
    first_party = call(server, "/auth/refresh", {"client_id": "native", "refresh_token": nxt})
    assert first_party.status_code == 200
    third = first_party.json()["refresh_token"]
    assert (
        call(server, "/auth/refresh", {"client_id": "native", "refresh_token": third}).status_code
        == 200
    )
    stale = call(server, "/auth/refresh", {"client_id": "native", "refresh_token": token})
    assert_error(stale, 400, "invalid_grant")


def test_sl01_sl02_logout_ends_the_session_and_repeats_harmlessly(server: Server) -> None:
    body = login(server).json()
    rt, at = body["refresh_token"], body["access_token"]
    assert (
        call(server, "/auth/logout", {"client_id": "native", "refresh_token": rt}).status_code
        == 204
    )
    assert (
        call(server, "/auth/logout", {"client_id": "native", "refresh_token": rt}).status_code
        == 204
    )
    assert_error(
        call(server, "/auth/refresh", {"client_id": "native", "refresh_token": rt}),
        400,
        "invalid_grant",
    )
    sessions = httpx.get(f"{server.base}/auth/sessions", headers={"Authorization": f"Bearer {at}"})
    assert_error(sessions, 401, "invalid_token")


def test_sl03_logout_all_ends_every_session_of_the_user_only(server: Server) -> None:
    tokens = [login(server).json() for _ in range(3)]
    at = tokens[0]["access_token"]
    listed = httpx.get(
        f"{server.base}/auth/sessions", headers={"Authorization": f"Bearer {at}"}
    ).json()
    assert sum(1 for s in listed if s["current"]) == 1
    assert (
        call(server, "/auth/logout-all", headers={"Authorization": f"Bearer {at}"}).status_code
        == 204
    )
    for t in tokens:
        refused = call(
            server, "/auth/refresh", {"client_id": "native", "refresh_token": t["refresh_token"]}
        )
        assert_error(refused, 400, "invalid_grant")


def test_ending_one_device_by_id(server: Server) -> None:
    this, other = login(server).json(), login(server).json()
    auth = {"Authorization": f"Bearer {this['access_token']}"}
    listed = httpx.get(f"{server.base}/auth/sessions", headers=auth).json()
    target = next(s["sid"] for s in listed if not s["current"])
    assert httpx.delete(f"{server.base}/auth/sessions/{target}", headers=auth).status_code == 204
    unknown = httpx.delete(
        f"{server.base}/auth/sessions/00000000-0000-4000-8000-000000000000", headers=auth
    )
    assert unknown.status_code == 404
    assert_error(
        call(
            server,
            "/auth/refresh",
            {"client_id": "native", "refresh_token": other["refresh_token"]},
        ),
        400,
        "invalid_grant",
    )


def test_pw03_login_failures_are_indistinguishable(server: Server) -> None:
    answers = set()
    for username, password in (("nobody", PASSWORD), ("alice", "wrong password")):
        response = call(
            server,
            "/auth/login",
            {"username": username, "password": password, "client_id": "native"},
        )
        assert response.status_code == 401
        answers.add(response.text)
    assert len(answers) == 1


def test_pw04_oversized_password_is_refused_quickly(server: Server) -> None:
    response = call(
        server, "/auth/login", {"username": "alice", "password": "x" * 5000, "client_id": "native"}
    )
    assert_error(response, 400, "invalid_request")
    huge = call(
        server,
        "/auth/login",
        {"username": "alice", "password": "x" * (1 << 20), "client_id": "native"},
    )
    assert huge.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        '{"username": ["a"], "password": "x", "client_id": "native"}',
        '{"username": "alice", "password": {"$ne": null}, "client_id": "native"}',
        '{"username": null, "password": "x", "client_id": "native"}',
        '{"password": "x", "client_id": "native"}',
        '{"username":"alice","username":"bob","password":"x","client_id":"native"}',
        "[" * 5000 + "]" * 5000,
        '{"username": "a\\u0000", "password": "x", "client_id": "native"}',
        '{"username": "\\ud800", "password": "x", "client_id": "native"}',
    ],
)
def test_iv03_hostile_json_is_invalid_request(server: Server, body: str) -> None:
    response = httpx.post(
        f"{server.base}/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_request")


def test_sl04_password_change_keeps_this_session_and_ends_the_others(server: Server) -> None:
    # bob, so the shared alice of other tests keeps her password.
    def bob_login(password: str) -> httpx.Response:
        return call(
            server, "/auth/login", {"username": "bob", "password": password, "client_id": "native"}
        )

    this, other = bob_login(PASSWORD).json(), bob_login(PASSWORD).json()
    auth = {"Authorization": f"Bearer {this['access_token']}"}
    wrong = call(
        server,
        "/auth/password",
        {"current_password": "nope", "new_password": "a new long passphrase"},
        headers=auth,
    )
    assert wrong.status_code == 401
    weak = call(
        server,
        "/auth/password",
        {"current_password": PASSWORD, "new_password": "password1"},
        headers=auth,
    )
    assert_error(weak, 400, "invalid_request")
    changed = call(
        server,
        "/auth/password",
        {"current_password": PASSWORD, "new_password": "a new long passphrase"},
        headers=auth,
    )
    assert changed.status_code == 200
    assert changed.json() == {"sessions_ended": 1}
    assert (
        call(
            server, "/auth/refresh", {"client_id": "native", "refresh_token": this["refresh_token"]}
        ).status_code
        == 200
    )
    assert_error(
        call(
            server,
            "/auth/refresh",
            {"client_id": "native", "refresh_token": other["refresh_token"]},
        ),
        400,
        "invalid_grant",
    )
    assert bob_login("a new long passphrase").status_code == 200
    assert bob_login(PASSWORD).status_code == 401
