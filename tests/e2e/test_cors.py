"""CORS on the first-party API over real HTTP (CK-09): only the origins clients
registered are granted, each echoed exactly, with credentials, never `*`."""

from __future__ import annotations

import httpx
import pytest

from conftest import ORIGIN, Server
from support.engine import PASSWORD

EVIL = "https://evil.example"


def preflight(
    server: Server, path: str, origin: str, method: str = "POST", headers: str = ""
) -> httpx.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return httpx.options(f"{server.base}{path}", headers=request_headers, timeout=30)


def vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("vary", "").split(",") if v.strip()}


def cors_headers(response: httpx.Response) -> set[str]:
    return {name for name in response.headers if name.lower().startswith("access-control-")}


@pytest.mark.parametrize("path", ["/auth/login", "/auth/refresh", "/auth/logout"])
def test_ck09_preflight_from_an_unlisted_origin_is_granted_nothing(
    server: Server, path: str
) -> None:
    response = preflight(server, path, EVIL, headers="content-type,x-keyturn-csrf")
    assert response.status_code == 403
    assert cors_headers(response) == set()
    assert "origin" in vary(response)


def test_ck09_preflight_from_a_listed_origin_echoes_it_with_credentials(server: Server) -> None:
    response = preflight(server, "/auth/refresh", ORIGIN, headers="content-type,x-keyturn-csrf")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-methods"] == "GET, POST, DELETE"
    assert (
        response.headers["access-control-allow-headers"]
        == "Content-Type, Authorization, X-Keyturn-CSRF, DPoP"
    )
    assert "origin" in vary(response)


def test_ck09_preflight_for_a_session_delete_is_granted_to_a_listed_origin(
    server: Server,
) -> None:
    response = preflight(server, "/auth/sessions/abc", ORIGIN, "DELETE", "authorization")
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "DELETE" in response.headers["access-control-allow-methods"]


def test_ck09_an_origin_is_matched_exactly(server: Server) -> None:
    for near in (ORIGIN + ":443", ORIGIN.replace("https", "http"), "https://sub.app.test", "null"):
        response = preflight(server, "/auth/login", near)
        assert "access-control-allow-origin" not in response.headers, near


def test_ck09_actual_response_to_a_listed_origin_carries_the_origin_and_credentials(
    server: Server,
) -> None:
    response = httpx.post(
        f"{server.base}/auth/login",
        json={"username": "alice", "password": PASSWORD, "client_id": "spa"},
        headers={"Origin": ORIGIN, "X-Keyturn-CSRF": "1"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "origin" in vary(response)


def test_ck09_actual_error_response_to_a_listed_origin_is_readable_by_it(server: Server) -> None:
    response = httpx.get(
        f"{server.base}/auth/sessions", headers={"Origin": ORIGIN, "Authorization": "Bearer x"}
    )
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "WWW-Authenticate" in response.headers["access-control-expose-headers"]


def test_ck09_actual_response_to_an_unlisted_origin_grants_nothing(server: Server) -> None:
    response = httpx.post(
        f"{server.base}/auth/refresh",
        json={"client_id": "spa"},
        headers={"Origin": EVIL, "X-Keyturn-CSRF": "1", "Cookie": "__Host-keyturn_rt_spa=kt_rt_x"},
        timeout=30,
    )
    assert response.status_code == 403
    assert cors_headers(response) == set()
    assert "origin" in vary(response)


def test_ck09_never_a_wildcard(server: Server) -> None:
    answers = [
        preflight(server, "/auth/login", ORIGIN),
        preflight(server, "/auth/login", EVIL),
        httpx.post(f"{server.base}/auth/logout", json={"client_id": "spa"}),
        httpx.post(
            f"{server.base}/auth/logout", json={"client_id": "spa"}, headers={"Origin": EVIL}
        ),
    ]
    for response in answers:
        assert response.headers.get("access-control-allow-origin") != "*"


def test_ck09_no_cors_outside_the_first_party_api(server: Server) -> None:
    response = httpx.get(f"{server.base}/healthz", headers={"Origin": ORIGIN})
    assert cors_headers(response) == set()
