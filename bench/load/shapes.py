"""The refresh request each kind of endpoint takes, and what counts as a good answer.

`oauth`: RFC 6749 §6, `POST` form-encoded `grant_type=refresh_token&refresh_token=RT`
with `client_id` in the body (a public client) or HTTP Basic (a confidential one);
the answer is RFC 6749 §5.1 JSON carrying `access_token` and, with rotation, a new
`refresh_token`.

`simplejwt`: djangorestframework-simplejwt's refresh view, `POST` JSON
`{"refresh": RT}` answered by `{"access": ..., "refresh": ...}`.

A good answer is 200 with an access token and a refresh token that differs from the
one presented; anything else is an error of a named kind, and the kind says whether
the chain is dead (a 4xx: the token was refused) or may be retried (5xx, transport).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from bench.load.http import Response

ShapeName = Literal["oauth", "simplejwt"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to refresh."""

    url: str
    shape: ShapeName = "oauth"
    client_id: str | None = None
    client_secret: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80


@dataclass(frozen=True, slots=True)
class Outcome:
    """A rotated token, or the kind of error and whether the chain is dead."""

    token: str | None
    error: str | None = None
    dead: bool = False


class Shape:
    """Builds request bytes for a token and judges the response."""

    def __init__(self, endpoint: Endpoint) -> None:
        parts = urlsplit(endpoint.url)
        path = parts.path or "/"
        self.shape = endpoint.shape
        self.access_field = "access_token" if endpoint.shape == "oauth" else "access"
        self.refresh_field = "refresh_token" if endpoint.shape == "oauth" else "refresh"
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json"]
        if endpoint.shape == "oauth":
            lines.append("Content-Type: application/x-www-form-urlencoded")
            suffix = ""
            if endpoint.client_secret is not None:
                pair = f"{quote(endpoint.client_id or '', safe='')}:"
                pair += quote(endpoint.client_secret, safe="")
                lines.append(f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}")
            elif endpoint.client_id is not None:
                suffix = f"&client_id={quote(endpoint.client_id, safe='')}"
            self._before, self._after = "grant_type=refresh_token&refresh_token=", suffix
        else:
            lines.append("Content-Type: application/json")
            self._before, self._after = '{"refresh": "', '"}'
        self._head = "\r\n".join(lines) + "\r\n"

    def request(self, token: str) -> bytes:
        value = quote(token, safe="") if self.shape == "oauth" else token
        body = f"{self._before}{value}{self._after}".encode()
        return f"{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    def judge(self, response: Response, presented: str) -> Outcome:
        try:
            answer = json.loads(response.body) if response.body else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return Outcome(None, f"HTTP {response.status} not JSON", response.status < 500)
        if response.status != 200:
            code = answer.get("error") or answer.get("code") or answer.get("detail") or ""
            return Outcome(None, f"HTTP {response.status} {code}".strip(), response.status < 500)
        token = answer.get(self.refresh_field)
        if not isinstance(token, str) or not token:
            return Outcome(None, "no refresh token", dead=True)
        if token == presented:
            return Outcome(None, "same refresh token", dead=True)
        if not answer.get(self.access_field):
            return Outcome(None, "no access token", dead=True)
        return Outcome(token)
