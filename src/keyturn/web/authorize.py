"""GET and POST /oauth/authorize (RFC 6749 §4.1.1-§4.1.2.1, RFC 7636, RFC 9207).

GET checks the request and shows the sign-in form; POST checks the request again, the
form's CSRF proof and the password, then sends the browser back to the client with a
code (303, RFC 9700 §4.12) or with an error. The user is asked for the password on
every authorization: keyturn keeps no browser session of its own.

CSRF: a random value in a cookie that only this endpoint's pages set, repeated in the
form (double submit), plus a refusal of any cross-site `Origin` or `Sec-Fetch-Site`.
The cookie is `__Host-` prefixed (so `Secure`) when the issuer is HTTPS; on a plain
HTTP issuer (local development) it cannot be `Secure` and goes without the prefix.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from keyturn.core.authorization import (
    MAX_STATE_LENGTH,
    AuthorizationRefused,
    AuthorizationRequest,
    with_query,
)
from keyturn.core.errors import (
    InvalidClient,
    InvalidRequest,
    KeyturnError,
    LoginFailed,
    RateLimited,
)
from keyturn.service.client_auth import MAX_CLIENT_ID_LENGTH
from keyturn.service.engine import Engine
from keyturn.service.login import MAX_USERNAME_LENGTH
from keyturn.web.context import request_context
from keyturn.web.errors import NO_STORE, STATUS
from keyturn.web.forms import FORM, BodyTooLarge, media_type, parse_params, read_limited
from keyturn.web.limits import limit_login_address
from keyturn.web.metadata import CODE_CHALLENGE_METHODS, RESPONSE_TYPES
from keyturn.web.operation import (
    BODY_LIMIT,
    NO_STORE_HEADER,
    OAUTH,
    RETRY_AFTER,
    Operation,
    Schema,
    described,
    form_body,
    html_answer,
)
from keyturn.web.pages import error_page, login_page

CSRF_FIELD = "csrf_token"
CSRF_COOKIE = "keyturn_csrf"
SECURE_PREFIX = "__Host-"
CSRF_MAX_AGE = 3600
MAX_QUERY = 8 * 1024
_CSRF_LENGTH = 43


def csrf_cookie_name(issuer: str) -> str:
    return SECURE_PREFIX + CSRF_COOKIE if issuer.startswith("https://") else CSRF_COOKIE


# The description of this endpoint (`web.openapi`)

PARAMETERS = [
    ("response_type", True, {"type": "string", "const": RESPONSE_TYPES[0]}),
    ("client_id", True, {"type": "string", "maxLength": MAX_CLIENT_ID_LENGTH}),
    ("redirect_uri", False, {"type": "string", "format": "uri"}),
    ("scope", False, {"type": "string"}),
    ("state", False, {"type": "string", "maxLength": MAX_STATE_LENGTH}),
    ("code_challenge", True, {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}),
    ("code_challenge_method", True, {"type": "string", "const": CODE_CHALLENGE_METHODS[0]}),
]
REDIRECTED: Schema = {
    "description": "An error sent back to the client.",
    "headers": {
        "Location": {
            "required": True,
            "description": "The client's redirect URI with `error`, `error_description`, "
            "`state` and `iss` (RFC 6749 §4.1.2.1, RFC 9207).",
            "schema": {"type": "string"},
        }
    },
}
USER_PAGES = {
    "400": html_answer(
        "An unknown client or an unregistered redirect URI (never redirected), or a "
        "malformed request or form."
    ),
    "413": html_answer(f"The form is larger than {BODY_LIMIT}."),
    "414": html_answer(f"The query is longer than {MAX_QUERY // 1024} KiB."),
    "429": html_answer("Too many sign-in attempts.", RETRY_AFTER),
    "503": html_answer("The database did not answer: sign-in unavailable."),
}
SETS_CSRF = {
    "Set-Cookie": {
        "required": True,
        "description": "The CSRF cookie the form's `csrf_token` repeats: "
        f"`{SECURE_PREFIX}{CSRF_COOKIE}` on an HTTPS issuer, `{CSRF_COOKIE}` on plain HTTP "
        "(local development), `HttpOnly`, `SameSite=Strict`, an hour.",
        "schema": {"type": "string", "pattern": f"^({SECURE_PREFIX})?{CSRF_COOKIE}="},
    }
}
CSRF_COOKIES = [
    {
        "name": name,
        "in": "cookie",
        "required": False,
        "description": f"The CSRF cookie set by the sign-in page (double submit): {issuers}.",
        "schema": {"type": "string"},
    }
    for name, issuers in (
        (csrf_cookie_name("https://"), "HTTPS issuers"),
        (csrf_cookie_name("http://"), "plain-HTTP issuers"),
    )
]
FORM_FIELDS = {
    **{name: schema for name, _, schema in PARAMETERS},
    "username": {"type": "string", "maxLength": MAX_USERNAME_LENGTH},
    "password": {"type": "string", "maxLength": 1024},
    CSRF_FIELD: {"type": "string", "description": "The value of the page's CSRF cookie."},
}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@described(
    get=Operation(
        OAUTH,
        "Authorization request: the sign-in page (RFC 6749 §4.1.1, RFC 7636)",
        {
            "200": html_answer(
                "The sign-in form; sets the CSRF cookie.", {**NO_STORE_HEADER, **SETS_CSRF}
            ),
            "302": REDIRECTED,
            **USER_PAGES,
        },
        parameters=[
            {"name": name, "in": "query", "required": required, "schema": schema}
            for name, required, schema in PARAMETERS
        ],
    ),
    post=Operation(
        OAUTH,
        "Sign in and get a code (RFC 6749 §4.1.2)",
        {
            "302": REDIRECTED,
            "303": {
                "description": "Signed in: back to the client with a code.",
                "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
            },
            "401": html_answer("Wrong username or password: the form again."),
            "403": html_answer("The CSRF check failed (missing cookie, another site)."),
            **USER_PAGES,
        },
        description="The sign-in form posted back with the CSRF cookie. Success is a "
        "303 to the redirect URI with `code`, `state` and `iss`.",
        parameters=CSRF_COOKIES,
        body=form_body(FORM_FIELDS),
    ),
)
async def authorize(request: Request, engine: Engine) -> Response:
    try:
        return await _authorize(request, engine)
    except BodyTooLarge:
        return _page(413, "Request too large", "The submitted form is too large.")
    except RateLimited as error:
        response = _page(429, "Too many attempts", "Too many sign-in attempts; wait and retry.")
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    except KeyturnError as error:
        # A failing database is a 503 page here, never a code that was not stored.
        return _page(STATUS.get(type(error), 500), "Sign-in unavailable", error.public)


async def _authorize(request: Request, engine: Engine) -> Response:
    if request.method in ("GET", "HEAD"):
        raw = request.scope.get("query_string", b"")
        if len(raw) > MAX_QUERY:
            return _page(414, "Request too large", "The authorization request is too long.")
    else:
        if request.url.query:
            return _page(400, "Invalid request", "Send the form in the body, not the URL.")
        raw = await read_limited(request.stream(), request.headers.get("content-length"))
        if media_type(request.headers.get("content-type"))[0] != FORM:
            return _page(400, "Invalid request", "The form must be form-encoded.")
    try:
        params = parse_params(raw)
        auth = await engine.authorization.check(params)
    except AuthorizationRefused as refused:
        return _refusal(engine, refused)
    except InvalidRequest as error:
        return _page(400, "Invalid request", error.public)
    if request.method in ("GET", "HEAD"):
        return _form(request, engine, auth, status=200)
    return await _sign_in(request, engine, auth, params)


async def _sign_in(
    request: Request, engine: Engine, auth: AuthorizationRequest, params: dict[str, list[str]]
) -> Response:
    def one(name: str) -> str:
        values = params.get(name, [])
        return values[0] if len(values) == 1 else ""

    username, password = one("username"), one("password")
    if not _same_origin_post(request, engine) or not _csrf_matches(
        request, engine, one(CSRF_FIELD)
    ):
        return _form(
            request,
            engine,
            auth,
            status=403,
            error="This form expired or came from another site. Sign in again.",
        )
    await limit_login_address(engine, request)
    if not username or not password:
        return _form(
            request, engine, auth, status=400, error="Enter your username and password.",
            username=username,
        )  # fmt: skip
    try:
        code = await engine.authorization.grant_code(
            auth, username, password, request_context(request)
        )
    except LoginFailed:
        return _form(
            request, engine, auth, status=401, error="Wrong username or password.",
            username=username,
        )  # fmt: skip
    except InvalidRequest as error:
        return _form(request, engine, auth, status=400, error=error.public)
    target = with_query(
        auth.redirect_uri, {"code": code, "state": auth.state, "iss": engine.config.issuer}
    )
    return RedirectResponse(target, status_code=303, headers=dict(NO_STORE))


def _refusal(engine: Engine, refused: AuthorizationRefused) -> Response:
    """RFC 6749 §4.1.2.1: back to the client when its redirect URI is verified, else a
    page for the user."""
    error = refused.error
    if refused.redirect_uri is None:
        heading = "Unknown application" if isinstance(error, InvalidClient) else "Invalid request"
        return _page(400, heading, error.public)
    target = with_query(
        refused.redirect_uri,
        {
            "error": error.code,
            "error_description": error.public,
            "state": refused.state,
            "iss": engine.config.issuer,
        },
    )
    return RedirectResponse(target, status_code=302, headers=dict(NO_STORE))


def _form(
    request: Request,
    engine: Engine,
    auth: AuthorizationRequest,
    *,
    status: int,
    error: str | None = None,
    username: str = "",
) -> Response:
    name = csrf_cookie_name(engine.config.issuer)
    token = request.cookies.get(name, "")
    # One value per browser, kept across tabs: a second tab must not void the first.
    if len(token) != _CSRF_LENGTH or not token.replace("-", "").replace("_", "").isalnum():
        token = secrets.token_urlsafe(32)
    fields = {**auth.form_fields(), CSRF_FIELD: token}
    html = login_page(
        action=request.url.path,
        client=auth.client.id,
        scope=" ".join(sorted(auth.scope)),
        fields=fields,
        error=error,
        username=username,
    )
    response = _html(status, html)
    # The form posts here and the answer redirects to the client: CSP form-action
    # covers that redirect too, so the client's origin is allowed, and only it.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action 'self' {_source(auth.redirect_uri)}; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    # Same-origin referrers only: the form post then carries its real Origin (under
    # no-referrer it would be "null"), and the client never sees this page's URL.
    response.headers["Referrer-Policy"] = "same-origin"
    response.set_cookie(
        name,
        token,
        max_age=CSRF_MAX_AGE,
        path="/",
        secure=engine.config.issuer.startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return response


def _source(uri: str) -> str:
    """The CSP source expression of a redirect URI: its origin, or its scheme for a
    private-use scheme (`com.example.app:`)."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


def _same_origin_post(request: Request, engine: Engine) -> bool:
    origin = request.headers.get("origin")
    if origin is not None and origin != origin_of(engine.config.issuer):
        return False
    site = request.headers.get("sec-fetch-site")
    return site in (None, "same-origin", "none")


def _csrf_matches(request: Request, engine: Engine, submitted: str) -> bool:
    cookie = request.cookies.get(csrf_cookie_name(engine.config.issuer), "")
    return len(cookie) == _CSRF_LENGTH and hmac.compare_digest(
        cookie.encode("utf-8", "surrogatepass"), submitted.encode("utf-8", "surrogatepass")
    )


def _page(status: int, heading: str, message: str) -> Response:
    return _html(status, error_page(heading, message))


def _html(status: int, html: str) -> Response:
    return HTMLResponse(html, status_code=status, headers=dict(NO_STORE))
