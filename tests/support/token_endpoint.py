"""The token, revocation and introspection endpoints as a test calls them over HTTP,
and the checklist's error answer (RFC 6749 §5.2) as a test asserts it."""

from __future__ import annotations

import re
from typing import Any, Protocol

import httpx


class Server(Protocol):
    """A started keyturn server: its base URL and its clients' secrets."""

    @property
    def base(self) -> str: ...

    @property
    def secrets(self) -> dict[str, str]: ...


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ALLOWED_DESCRIPTION = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")


def post(server: Server, data: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base}/oauth/token", data=data, timeout=30, **kwargs)


def refresh(server: Server, token: str, client_id: str = "native", **extra: str) -> httpx.Response:
    return post(
        server,
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id, **extra},
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """E(status, code) of the checklist: JSON, no-store, RFC 6749 §5.2 characters."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert ALLOWED_DESCRIPTION.match(body.get("error_description", ""))
    assert "Traceback" not in response.text
    assert "kt_rt_" not in response.text
    return body


def revoke(server: Server, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.base}/oauth/revoke", data=data, timeout=30, **kwargs)


def introspect(server: Server, token: str, client_id: str = "rs") -> dict[str, Any]:
    response = httpx.post(
        f"{server.base}/oauth/introspect",
        data={"token": token},
        auth=(client_id, server.secrets[client_id]),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body
