"""The ASGI application: routes, the one place errors become HTTP, and the lifespan
that opens the engine once per worker process."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from keyturn.core.errors import KeyturnError, StoreUnavailable
from keyturn.observability.logs import configure_logging
from keyturn.observability.metrics import Metrics
from keyturn.observability.store_metrics import StoreMetrics
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.web import (
    api_docs,
    authorize,
    first_party,
    metadata,
    oauth_introspect,
    oauth_revoke,
    oauth_token,
    revocation_feed,
    session_events,
)
from keyturn.web import demo as demo_page
from keyturn.web.cors import AllowedOrigins, FirstPartyCORS, LoadClients
from keyturn.web.forms import BodyTooLarge
from keyturn.web.metrics import ObservedRequests, scrape
from keyturn.web.operation import OPERATIONS, UNAVAILABLE, Operation, described, status_answer
from keyturn.web.responses import error_response, json_response, plain_error
from keyturn.web.security_headers import SecurityHeaders
from keyturn.wiring import open_engine

log = logging.getLogger("keyturn.web")

Handler = Callable[[Request, Engine], Awaitable[Response]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run `handler` with the engine; turn every failure into an RFC-shaped answer. The
    wrapper keeps the handler's name and its operations (`web.operation.described`)."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        engine: Engine = request.app.state.engine
        try:
            return await handler(request, engine)
        except KeyturnError as error:
            if error.detail:
                log.info("refused %s: %s", error.code, error.detail)
            basic = request.headers.get("authorization", "").lower().startswith("basic")
            return error_response(error, basic_auth_used=basic)
        except BodyTooLarge:
            return plain_error(413, "invalid_request", "The request body is too large.")
        except ClientDisconnect:
            # The client left, or the request timeout closed it, before its body was
            # complete: nothing was done, and the answer reaches no one.
            log.info("client disconnected before the request body was complete")
            return plain_error(400, "invalid_request", "The request body was not completed.")
        except Exception:
            # Never a stack trace to the caller: an id to find it in the log.
            incident = secrets.token_hex(8)
            log.exception("unexpected error, incident %s", incident)
            return plain_error(500, "server_error", f"Unexpected error; incident {incident}.")

    return run


@described(get=Operation(OPERATIONS, "The process is up", {"200": status_answer("Up.", "ok")}))
async def healthz(_request: Request, _engine: Engine) -> Response:
    return json_response({"status": "ok"})


@described(
    get=Operation(
        OPERATIONS,
        "The database answers",
        {"200": status_answer("Ready.", "ready"), "503": UNAVAILABLE},
    )
)
async def readyz(_request: Request, engine: Engine) -> Response:
    try:
        await engine.store.ping()
    except StoreUnavailable:
        return plain_error(
            503, "temporarily_unavailable", "The database is unreachable.", {"Retry-After": "2"}
        )
    return json_response({"status": "ready"})


async def http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)  # noqa: S101 - registered for HTTPException only
    headers = dict(error.headers or {})
    code = "invalid_request" if error.status_code < 500 else "server_error"
    return plain_error(error.status_code, code, str(error.detail), headers)


def _clients(scope: Scope) -> LoadClients:
    engine: Engine = scope["app"].state.engine
    return engine.admin.list_clients


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    demo: bool = False,
    own_process: bool = False,
) -> Starlette:
    """The application; it opens its own engine from `settings` unless given one.
    `demo` adds the demo page at `/` (`keyturn serve --demo`). `own_process`: the
    process is keyturn's alone (a `keyturn serve` worker), so it may tune the process's
    garbage collector once started."""
    metrics = Metrics.for_this_process()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = engine or await open_engine(settings, observers=[StoreMetrics(metrics)])
        if own_process:
            # Everything alive now (modules, the app, the engine, its caches) lives as
            # long as the process: leave it out of every later collection, so a full
            # collection under load scans only what requests made, not the whole heap.
            gc.freeze()
        try:
            yield
        finally:
            if engine is None:
                await app.state.engine.close()

    routes = [
        # The two refresh endpoints first: the router tries routes in order.
        Route("/oauth/token", endpoint(oauth_token.token), methods=["POST"]),
        Route("/auth/refresh", endpoint(first_party.refresh), methods=["POST"]),
        Route("/healthz", endpoint(healthz), methods=["GET"]),
        Route("/readyz", endpoint(readyz), methods=["GET"]),
        Route(
            "/.well-known/oauth-authorization-server",
            endpoint(metadata.authorization_server),
            methods=["GET"],
        ),
        Route("/.well-known/jwks.json", endpoint(metadata.jwks), methods=["GET"]),
        Route("/oauth/authorize", endpoint(authorize.authorize), methods=["GET", "POST"]),
        Route("/oauth/revoke", endpoint(oauth_revoke.revoke), methods=["POST"]),
        Route("/oauth/introspect", endpoint(oauth_introspect.introspect), methods=["POST"]),
        Route("/auth/login", endpoint(first_party.login), methods=["POST"]),
        Route("/auth/logout", endpoint(first_party.logout), methods=["POST"]),
        Route("/auth/logout-all", endpoint(first_party.logout_all), methods=["POST"]),
        Route("/auth/sessions", endpoint(first_party.list_sessions), methods=["GET"]),
        Route("/auth/sessions/{sid}", endpoint(first_party.end_session), methods=["DELETE"]),
        Route(
            "/auth/sessions/{sid}/events",
            endpoint(session_events.session_events),
            methods=["GET"],
        ),
        Route("/auth/password", endpoint(first_party.change_password), methods=["POST"]),
        Route("/auth/revocations", endpoint(revocation_feed.revocations), methods=["GET"]),
        Route(
            "/metrics",
            endpoint(scrape(metrics, settings.metrics_token, public=settings.metrics_public)),
            methods=["GET"],
        ),
        Route("/openapi.json", endpoint(api_docs.openapi_json), methods=["GET"]),
        Route("/docs", endpoint(api_docs.docs_page), methods=["GET"]),
        *api_docs.asset_routes(endpoint),
        *demo_page.asset_routes(demo_page.CLIENT_ASSETS),
    ]
    if demo:
        routes += [
            Route("/", endpoint(demo_page.page), methods=["GET"]),
            Route("/demo/api/me", endpoint(demo_page.me), methods=["GET"]),
            *demo_page.asset_routes(demo_page.DEMO_ASSETS),
        ]
    origins = AllowedOrigins(settings.allowed_origins_cache_seconds)
    middleware = [
        Middleware(ObservedRequests, routes=routes, metrics=metrics),  # outermost: sees all
        Middleware(SecurityHeaders),
        Middleware(FirstPartyCORS, origins=origins, load=_clients),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )


def app_from_environment() -> Starlette:
    """The factory `keyturn serve` gives the server: settings from the environment."""
    settings = Settings()
    configure_logging(settings)  # in each worker: a spawned process starts unconfigured
    return create_app(settings, own_process=True)


def demo_app_from_environment() -> Starlette:
    """The factory of `keyturn serve --demo`."""
    settings = Settings()
    configure_logging(settings)
    return create_app(settings, demo=True, own_process=True)
