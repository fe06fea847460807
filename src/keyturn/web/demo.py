"""The demo served by `keyturn serve --demo`: a page at `/` that signs in as the
first-party browser client `demo-web`, and a protected endpoint for it to call.

The page is plain HTML; its behaviour is one ES module (`/static/demo/demo.js`) built
on the browser client `/static/keyturn.js`, which every keyturn serves, demo or not.
No inline script or style, so the page lives under the strict policy of
`web/security_headers.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from html import escape
from importlib import resources
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from keyturn.service.demo import DEMO_CLIENT_ID
from keyturn.service.engine import Engine
from keyturn.web.dpop import current_session
from keyturn.web.errors import NO_STORE
from keyturn.web.operation import BROWSER, Operation, described, text_answer
from keyturn.web.responses import json_response

JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"

CLIENT_ASSETS = {"/static/keyturn.js": ("keyturn.js", JAVASCRIPT)}
"""The browser client, served by every keyturn at a stable path."""
CLIENT_OPERATIONS = {
    "/static/keyturn.js": Operation(
        BROWSER,
        "The browser client (an ES module)",
        {"200": text_answer("JavaScript.", JAVASCRIPT.partition(";")[0])},
    )
}
"""The files the API description names: the browser client, not the demo's own."""
DEMO_ASSETS = {
    "/static/demo/demo.js": ("demo/demo.js", JAVASCRIPT),
    "/static/demo/demo.css": ("demo/demo.css", CSS),
}

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>keyturn demo</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/demo/demo.css">
<script type="module" src="/static/demo/demo.js"></script>
</head>
<body>
<main id="demo" data-client-id="$client_id" data-api="/demo/api/me">
<h1>keyturn demo</h1>
<p id="status" role="status" aria-live="polite">Loading…</p>

<section id="login-view" aria-labelledby="login-heading" hidden>
<h2 id="login-heading">Sign in</h2>
<p id="login-message" role="alert"></p>
<form id="login-form">
<p>
<label for="username">Username</label><br>
<input id="username" name="username" type="text" autocomplete="username"
 autocapitalize="none" spellcheck="false" required maxlength="256" value="demo">
</p>
<p>
<label for="password">Password</label><br>
<input id="password" name="password" type="password" autocomplete="current-password"
 required maxlength="1024">
</p>
<p><button type="submit">Sign in</button></p>
</form>
<p class="hint">The password is the one <code>keyturn serve --demo</code> printed at start.</p>
</section>

<section id="app-view" aria-labelledby="app-heading" hidden>
<h2 id="app-heading">Signed in as <span id="who"></span></h2>
<dl class="token">
<dt>Session</dt><dd><code id="session-id"></code></dd>
<dt>Access token</dt><dd><code id="token-id"></code> (in memory only)</dd>
<dt>Expires at</dt><dd><time id="token-expiry"></time></dd>
<dt>Remaining life</dt><dd><span id="countdown"></span></dd>
<dt>Refreshes so far</dt><dd><span id="refresh-count">0</span></dd>
</dl>
<p>keyturn refreshes the token by itself shortly before it expires; the refresh token
never leaves its httpOnly cookie.</p>

<h3>Protected API</h3>
<p><button type="button" id="call-api">Call <code>GET /demo/api/me</code></button></p>
<pre id="api-result" aria-live="polite"></pre>

<h3 id="sessions-heading">Your sessions</h3>
<p><button type="button" id="list-sessions">Reload the list</button></p>
<table aria-labelledby="sessions-heading">
<thead><tr><th scope="col">Session</th><th scope="col">Device</th>
<th scope="col">Started</th><th scope="col">Last used</th>
<th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
<tbody id="sessions"></tbody>
</table>

<p><button type="button" id="logout">Log out</button></p>
</section>
</main>
</body>
</html>
""")


@cache
def _asset(name: str) -> bytes:
    return resources.files("keyturn.web").joinpath("static", *name.split("/")).read_bytes()


def asset_routes(assets: dict[str, tuple[str, str]]) -> list[Route]:
    """Routes serving packaged files (read once) at fixed paths."""

    def serve(path: str, name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(_request: Request) -> Response:
            return Response(
                _asset(name), media_type=media_type, headers={"Cache-Control": "no-cache"}
            )

        if path in CLIENT_OPERATIONS:
            described(get=CLIENT_OPERATIONS[path])(handler)
        return handler

    return [
        Route(path, serve(path, name, media_type), methods=["GET"])
        for path, (name, media_type) in assets.items()
    ]


async def page(_request: Request, _engine: Engine) -> Response:
    html = _PAGE.substitute(client_id=escape(DEMO_CLIENT_ID))
    return HTMLResponse(html, headers=dict(NO_STORE))


async def me(request: Request, engine: Engine) -> Response:
    """Who the bearer access token speaks for, if its session is live: what a resource
    server of the demo would check before answering."""
    session = await current_session(request, engine)
    user = await engine.sessions.holder(session)
    return json_response(
        {
            "user": user.username,
            "sid": session.id,
            "client_id": session.client_id,
            "scope": " ".join(sorted(session.scope)),
            "session_started_at": session.created_at.isoformat(),
        },
        headers=dict(NO_STORE),
    )
