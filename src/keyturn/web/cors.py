"""CORS for the first-party API (`/auth/*`), with an allowlist read from the clients.

A browser app served from another origin of the same site (`app.example.com` calling
`auth.example.com`) needs CORS to call `/auth/*` with credentials. The allowed origins
are the union of the enabled clients' `allowed_origins`; each process reads them
through the engine and keeps them for `allowed_origins_cache_seconds` (30 s by
default), so a client registered or disabled is seen within that time.

- A preflight from a listed origin gets that exact origin back, with credentials, the
  methods and the headers the API takes; from any other origin it gets 403 and no
  `Access-Control-*` header, so the browser never sends the request.
- An actual request from a listed origin gets the origin and credentials back.
- Never `*`: a wildcard cannot go with credentials, and would name no one. Never
  `null`, nor any origin that is not a serialized https (or loopback http) origin,
  even one stored before registration refused them (`core.registration`).

CORS only decides what a page of another origin may read; it is not the CSRF defence.
A cookie-authenticated request still needs `X-Keyturn-CSRF: 1` and an `Origin` of its
own client (`web/first_party.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyturn.core.errors import StoreUnavailable
from keyturn.core.models import Client
from keyturn.core.registration import origin_problem
from keyturn.web.errors import NO_STORE, error_body

log = logging.getLogger("keyturn.web")

PATH_PREFIX = "/auth/"
ALLOW_METHODS = "GET, POST, DELETE"
ALLOW_HEADERS = "Content-Type, Authorization, X-Keyturn-CSRF, DPoP"
EXPOSE_HEADERS = "WWW-Authenticate, Retry-After, DPoP-Nonce"
MAX_AGE = "600"

LoadClients = Callable[[], Awaitable[Iterable[Client]]]


class AllowedOrigins:
    """The union of the enabled clients' allowed origins, re-read after `ttl` seconds.
    One reader at a time: a burst of requests after expiry reads the clients once."""

    def __init__(self, ttl: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._origins: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._read_at is not None and self._monotonic() - self._read_at < self._ttl

    async def get(self, load: LoadClients) -> frozenset[str]:
        if self._fresh():
            return self._origins
        async with self._lock:
            if not self._fresh():
                clients = await load()
                # A row stored before registration checked origins may hold `null` or
                # `*`: never granted (`null` is sent by sandboxed frames and `data:`
                # pages, so it names anyone).
                self._origins = frozenset(
                    origin
                    for c in clients
                    if c.enabled
                    for origin in c.allowed_origins
                    if origin_problem(origin) is None
                )
                self._read_at = self._monotonic()
            return self._origins


class FirstPartyCORS:
    """ASGI middleware answering CORS for `/auth/*`. `load` reads the clients; it is
    called with the ASGI scope, which carries the application and its engine."""

    def __init__(
        self,
        app: ASGIApp,
        origins: AllowedOrigins,
        load: Callable[[Scope], LoadClients],
    ) -> None:
        self.app = app
        self.origins = origins
        self.load = load

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        allowed = origin is not None and origin in await self._allowed(scope)
        if preflight:
            await self._preflight(origin if allowed else None, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response = MutableHeaders(scope=message)
                response.add_vary_header("Origin")
                if allowed and origin is not None:
                    response["Access-Control-Allow-Origin"] = origin
                    response["Access-Control-Allow-Credentials"] = "true"
                    response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _allowed(self, scope: Scope) -> frozenset[str]:
        try:
            return await self.origins.get(self.load(scope))
        except StoreUnavailable:
            # Fail closed: without the list, no origin is granted; same-origin pages
            # need no CORS and keep working.
            log.warning("CORS allowlist unavailable: the database is unreachable")
            return frozenset()

    @staticmethod
    async def _preflight(origin: str | None, send: Send) -> None:
        headers = [(b"vary", b"Origin")]
        headers += [(k.lower().encode(), v.encode()) for k, v in NO_STORE.items()]
        if origin is None:
            body = error_body("invalid_request", "Cross-origin request refused.")
            status = 403
            headers.append((b"content-type", b"application/json"))
        else:
            body = b""
            status = 204
            headers += [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", MAX_AGE.encode()),
            ]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
