"""Request limits at the edge: per client id on the OAuth endpoints (counted before
client authentication, so guessing a secret is throttled too), per peer address on
login. Each refusal is 429 with Retry-After and changes nothing."""

from __future__ import annotations

from starlette.requests import Request

from keyturn.core.errors import RateLimited
from keyturn.wiring import Engine

MINUTE = 60


async def limit_client(engine: Engine, client_id: str) -> None:
    per_minute = engine.settings.token_requests_per_minute
    retry = await engine.limiter.hit(f"client:{client_id[:128]}", per_minute, MINUTE)
    if retry is not None:
        raise RateLimited(retry, detail=f"client {client_id[:128]!r} over its limit")


async def limit_login_address(engine: Engine, request: Request) -> None:
    address = request.client.host if request.client else "unknown"
    per_minute = engine.settings.login_requests_per_minute
    retry = await engine.limiter.hit(f"login-ip:{address}", per_minute, MINUTE)
    if retry is not None:
        raise RateLimited(retry, detail="address over its login limit")
