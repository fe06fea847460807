"""GET /metrics, and the middleware that counts, times and logs every request.

Requests are labelled by route template (`/auth/sessions/{sid}`), never by raw path:
a label value per session id would grow without bound. The access log writes the
same fields and never the query string or the body, where a careless client may put
a token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyturn.observability.logs import AccessLog, RequestFields, bind_request, unbind_request
from keyturn.observability.metrics import UNMATCHED_ROUTE, Metrics, method_label
from keyturn.service.engine import Engine
from keyturn.web.errors import NO_STORE
from keyturn.web.operation import (
    BEARER,
    NO_STORE_HEADER,
    OPERATIONS,
    Operation,
    described,
    error,
    json_answer,
    text_answer,
)
from keyturn.web.responses import plain_error

SCRAPE = Operation(
    OPERATIONS,
    "Prometheus metrics",
    {
        "200": text_answer("The text exposition format.", "text/plain"),
        "401": json_answer(
            "The metrics token is missing or wrong, or none is configured (one answer for all).",
            error("invalid_token"),
            {**NO_STORE_HEADER, **BEARER},
        ),
    },
    description="Closed by default: only for `Authorization: Bearer` with "
    "`KEYTURN_METRICS_TOKEN`, or for anyone if `KEYTURN_METRICS_PUBLIC` is set. Unset, "
    "every scrape is refused.",
)


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route `scope` goes to; a route that matches the path
    but not the method (a 405) counts as its route."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE and isinstance(route, Route):
            return route.path
    return UNMATCHED_ROUTE


class ObservedRequests:
    """ASGI middleware: `keyturn_http_requests_total`, the latency histogram and one
    `keyturn.access` record per HTTP request. Both are written before the last body
    chunk is sent, so a client that has its answer finds it counted."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], metrics: Metrics) -> None:
        self._app = app
        self._routes = routes
        self._metrics = metrics
        self._access = AccessLog()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Paths without parameters are their own template: a dict lookup, not a scan.
        self._fixed = {r.path: r.path for r in routes if isinstance(r, Route) and "{" not in r.path}

    def _series(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of these labels (looked up once:
        `labels()` costs more than the update). Templates, methods and statuses are
        closed sets, so this stays small."""
        key = (route, method, status)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (
                self._metrics.http_requests.labels(route, method, str(status)),
                self._metrics.http_duration.labels(route, method),
            )
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        fields = RequestFields(
            request_id=secrets.token_hex(8),
            method=method_label(scope["method"]),
            route=self._fixed.get(scope["path"]) or route_template(self._routes, scope),
        )
        started = time.perf_counter()
        status = 500
        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            elapsed = time.perf_counter() - started
            counter, histogram = self._series(fields.route, fields.method, status)
            counter.inc()
            histogram.observe(elapsed)
            client = scope.get("client")
            self._access.write(fields, status, elapsed, client[0] if client else None)

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not observed
            ):
                observe()
            await send(message)

        bound = bind_request(fields)
        try:
            await self._app(scope, receive, send_observed)
        finally:
            if not observed:  # failed, or ended without a body
                observe()
            unbind_request(bound)


def scrape(
    metrics: Metrics, token: SecretStr | None, *, public: bool
) -> Callable[[Request, Engine], Awaitable[Response]]:
    """The /metrics handler: for anyone if `public`, else only for `Authorization:
    Bearer <token>`; with neither, for nobody (the shipped default)."""
    # Closed without a token: the rotation and login counters move with every use of a
    # session, so an open scrape tells a thief holding a copied refresh token when its
    # owner rotated. Without a token, the presented one is compared with a random
    # secret of this process: the refusal does the same work either way.
    secret = token.get_secret_value() if token is not None else secrets.token_urlsafe(32)
    expected = _digest(secret.encode())

    @described(get=SCRAPE)
    async def handler(request: Request, _engine: Engine) -> Response:
        if not public and not _bearer_matches(request, expected):
            # One answer for every refusal: no header, a wrong scheme, a wrong token, or
            # no token configured at all. 401 rather than 404: the path is in the API
            # description anyway, and a scraper's operator is told what is missing.
            return plain_error(
                401,
                "invalid_token",
                "The metrics endpoint needs its bearer token.",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        body = await asyncio.to_thread(metrics.render)  # reads every worker's files
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers=dict(NO_STORE))

    return handler


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _bearer_matches(request: Request, expected: bytes) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    # Digests of equal length, compared in constant time: neither the token's length
    # nor how much of it a guess got right shows in the time taken.
    matches = hmac.compare_digest(_digest(presented.strip().encode()), expected)
    return scheme.lower() == "bearer" and matches
