"""OAuth 2.0 Protected Resource Metadata (RFC 9728) for a Starlette or FastAPI API.

    resource = ProtectedResource(
        "https://mcp.example.com/mcp",
        authorization_servers=["https://auth.example.com"],
        scopes_supported=["mcp"],
    )
    resource.mount(app)

`mount` serves the metadata document at its well-known URL (RFC 9728 §3.1: the
well-known path inserted between the host and the resource's path, here
`/.well-known/oauth-protected-resource/mcp`), and makes the `Bearer` and `DPoP`
challenges of every 401 and 403 (`insufficient_scope`) name the document
(`resource_metadata`, RFC 9728 §5.1): a client that only knows the
API's URL, an MCP client among them, finds its authorization server from the first
refusal. The challenges of `keyturn.verify.starlette`'s dependencies get it, and those of
any other code in the application too.

The document is public: it says only what the challenges already point to. It is
answered to any origin (`Access-Control-Allow-Origin: *`, no credentials), since browser
clients read it cross-origin, and cached for `cache_seconds`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WELL_KNOWN = "/.well-known/oauth-protected-resource"
SCHEMES = frozenset({"bearer", "dpop"})
"""The schemes whose challenges name the document: those of OAuth access tokens."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_url(url: str, what: str, *, path_allowed: bool = True) -> str:
    """`url` if it is https (or http to a loopback host, for development) with a host,
    no fragment, no query and no user part (RFC 9728 §1.2, RFC 8414 §2)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))
    if not secure or not host or parts.fragment or parts.query or "@" in parts.netloc:
        raise ValueError(
            f"{what} must be an https URL (or http on a loopback host) with a host, "
            f"and no query, fragment or user: {url!r}"
        )
    if not path_allowed and parts.path not in ("", "/"):
        raise ValueError(f"{what} must have no path: {url!r}")
    return url


@dataclass(frozen=True)
class ProtectedResource:
    """What RFC 9728 §2 lets a resource server say of itself; `resource` is the
    resource identifier clients use (the `resource` parameter of RFC 8707, the `aud` of
    its tokens), and `authorization_servers` the issuers whose tokens it accepts."""

    resource: str
    authorization_servers: Sequence[str]
    scopes_supported: Sequence[str] = ()
    resource_name: str | None = None
    resource_documentation: str | None = None
    dpop_signing_alg_values_supported: Sequence[str] = ()
    dpop_bound_access_tokens_required: bool = False
    cache_seconds: int = 300
    _document: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _checked_url(self.resource, "the resource")
        if isinstance(self.authorization_servers, str) or not self.authorization_servers:
            raise ValueError("name at least one authorization server, as a list")
        for issuer in self.authorization_servers:
            _checked_url(issuer, "an authorization server")
        if self.resource_documentation is not None:
            _checked_url(self.resource_documentation, "the documentation")
        if self.cache_seconds < 0:
            raise ValueError("cache_seconds cannot be negative")
        object.__setattr__(self, "_document", json.dumps(self.document()).encode())

    @property
    def path(self) -> str:
        """Where the document is served on the resource's host (RFC 9728 §3.1)."""
        return WELL_KNOWN + urlsplit(self.resource).path.rstrip("/")

    @property
    def metadata_url(self) -> str:
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}{self.path}"

    def document(self) -> dict[str, Any]:
        """The metadata (RFC 9728 §2): only the members that have a value."""
        found: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": list(self.authorization_servers),
            # keyturn.verify reads the token from the Authorization header only.
            "bearer_methods_supported": ["header"],
        }
        if self.scopes_supported:
            found["scopes_supported"] = list(self.scopes_supported)
        if self.resource_name is not None:
            found["resource_name"] = self.resource_name
        if self.resource_documentation is not None:
            found["resource_documentation"] = self.resource_documentation
        if self.dpop_signing_alg_values_supported:
            found["dpop_signing_alg_values_supported"] = list(
                self.dpop_signing_alg_values_supported
            )
        if self.dpop_bound_access_tokens_required:
            found["dpop_bound_access_tokens_required"] = True
        return found

    def mount(self, app: Starlette) -> None:
        """Serve the document on `app` and name it in its challenges. Call it while
        setting the application up, before it serves (Starlette adds no middleware
        to a started application)."""
        app.add_route(self.path, self._serve, methods=["GET", "HEAD"], include_in_schema=False)
        app.add_middleware(_NameTheMetadata, url=self.metadata_url)

    async def _serve(self, _request: Request) -> Response:
        return Response(
            self._document,
            media_type="application/json",
            headers={
                "Cache-Control": f"max-age={self.cache_seconds}",
                "Access-Control-Allow-Origin": "*",
                "X-Content-Type-Options": "nosniff",
            },
        )


class _NameTheMetadata:
    """ASGI middleware: `resource_metadata="<url>"` in every Bearer and DPoP challenge of
    a 401 or a 403 (`insufficient_scope`, the step-up case) that lacks one."""

    def __init__(self, app: ASGIApp, url: str) -> None:
        self.app = app
        self.parameter = f'resource_metadata="{url}"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def naming(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                headers = [
                    (name, self._named(value) if name.lower() == b"www-authenticate" else value)
                    for name, value in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, naming)

    def _named(self, value: bytes) -> bytes:
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return value  # not a challenge this middleware can read: left as it was
        return with_parameter(text, self.parameter).encode("ascii")


def with_parameter(header: str, parameter: str) -> str:
    """`header` (one `WWW-Authenticate` value: challenges separated by commas, RFC 9110
    §11.6.1) with `parameter` added to each Bearer or DPoP challenge that lacks a
    parameter of that name. A challenge in another scheme, or one with a token68, is
    kept as it was."""
    name = parameter.partition("=")[0].lower()
    challenges: list[list[str]] = []  # [scheme, param, ...] per challenge
    for raw in _split_commas(header):
        element = raw.strip()
        if not element:
            continue
        head, _, rest = element.partition(" ")
        if "=" not in head and not rest.lstrip().startswith("="):
            # A scheme starts a challenge, maybe with its first parameter.
            challenges.append([head, *([rest.strip()] if rest.strip() else [])])
        elif challenges:
            challenges[-1].append(element)
        else:
            return header  # a parameter before any scheme: not a challenge list
    out = []
    for scheme, *given in challenges:
        names = {p.partition("=")[0].strip().lower() for p in given}
        token68 = any("=" not in p or p.endswith("=") for p in given)  # may end with '='
        params = given
        if scheme.lower() in SCHEMES and name not in names and not token68:
            params = [*given, parameter]
        out.append(scheme + (" " + ", ".join(params) if params else ""))
    return ", ".join(out)


def _split_commas(text: str) -> list[str]:
    """`text` split at the commas outside quoted strings (RFC 9110 §5.6.4)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts
