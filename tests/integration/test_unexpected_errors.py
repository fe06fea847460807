"""IV-06: an unexpected exception is a 500 `server_error` with an incident id, no
traceback in the body, and the traceback in the log under the same id."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from keyturn.web.app import create_app
from support.engine import engine_with, seed, settings


async def test_iv06_unexpected_error_is_500_with_an_incident_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await engine_with()
    await seed(engine)

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("database driver exploded at /srv/secret/path")

    engine.refresher.refresh_for = broken  # type: ignore[method-assign]
    app = create_app(settings(), engine)
    caplog.set_level(logging.ERROR, logger="keyturn.web")
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://keyturn") as client:
                response = await client.post(
                    "/oauth/token",
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": "kt_rt_x",
                        "client_id": "native",
                    },
                )
    finally:
        await engine.close()
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "server_error"
    incident = re.search(r"incident ([0-9a-f]{16})", body["error_description"])
    assert incident is not None
    assert "Traceback" not in response.text
    assert "/srv/secret/path" not in response.text
    assert response.headers["cache-control"] == "no-store"
    logged = [r for r in caplog.records if incident.group(1) in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
