"""Protecting Starlette and FastAPI routes with `keyturn.verify`.

FastAPI:

    read = require_scopes(verifier, "read")

    @app.get("/notes")
    async def notes(token: AccessToken = Depends(read)) -> list[Note]: ...

Starlette: `token = await read(request)` at the top of an endpoint. Failures are
`HTTPException`s answered as RFC 6750 §3 asks: 401 with `WWW-Authenticate: Bearer
error="invalid_token"`, 403 with `error="insufficient_scope"`, 400 with
`error="invalid_request"` for a token sent both in the header and in a form body, and 503
when the issuer's keys cannot be had. Only the `Authorization` header carries a token: one
in the query string is ignored (OAuth 2.1 §5.1.2), as is one in a form body alone.

DPoP-bound tokens (RFC 9449) need `require_dpop_scopes(DpopTokenVerifier(verifier),
...)`, which takes them under the `DPoP` scheme with a proof, and bearer tokens too
unless told not to; `require_scopes` refuses a bound token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, quote

from starlette.exceptions import HTTPException
from starlette.requests import Request

from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.core.errors import StoreUnavailable
from keyturn.verify.dpop import DpopTokenVerifier
from keyturn.verify.verifier import (
    AccessToken,
    InsufficientScope,
    KeysUnavailable,
    TokenRejected,
    Verifier,
)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header (RFC 6750 §2.1), or `None`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _token_in_body(request: Request) -> bool:
    """Whether the request also carries an `access_token` form parameter (RFC 6750 §2.2:
    a form-encoded body of a method that has one). The body read here stays readable by
    the endpoint."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if request.method in ("GET", "HEAD") or media_type != "application/x-www-form-urlencoded":
        return False
    try:
        body = (await request.body()).decode("latin-1")
    except RuntimeError:
        # Read already without its bytes kept: FastAPI parses a form so before the
        # dependencies run, and keeps the form.
        try:
            return "access_token" in await request.form()
        except (AssertionError, RuntimeError):  # no form kept, and none to be had
            return False
    return any(name == "access_token" for name, _ in parse_qsl(body, keep_blank_values=True))


def require_scopes(
    verifier: Verifier, *scopes: str, realm: str | None = None
) -> Callable[[Request], Awaitable[AccessToken]]:
    """A dependency that verifies the request's bearer token and that it carries every
    one of `scopes`; it returns the token and keeps it as `request.state.access_token`.
    `realm`, if given, is named in every challenge (RFC 6750 §3)."""
    wanted = " ".join(scopes)
    if realm is not None and ('"' in realm or "\\" in realm or not realm.isprintable()):
        raise ValueError("a realm is printable and has no quote or backslash")
    scheme = "Bearer" if realm is None else f'Bearer realm="{realm}"'
    separator = " " if realm is None else ", "

    def challenge(params: str) -> dict[str, str]:
        return {"WWW-Authenticate": scheme + separator + params}

    async def dependency(request: Request) -> AccessToken:
        token = bearer_token(request)
        if token is None:
            # RFC 6750 §3.1: no error code when the request carried no token at all; a
            # token in the query string is none (OAuth 2.1 §5.1.2: it MUST be ignored).
            raise HTTPException(401, "Bearer token required.", {"WWW-Authenticate": scheme})
        try:
            verified = await verifier.verify_async(token)
            verified.require_scopes(*scopes)
        except TokenRejected:
            raise HTTPException(
                401, _PUBLIC["invalid_token"], challenge('error="invalid_token"')
            ) from None
        except InsufficientScope:
            raise HTTPException(
                403,
                _PUBLIC["insufficient_scope"],
                challenge(f'error="insufficient_scope", scope="{wanted}"'),
            ) from None
        except KeysUnavailable:
            raise HTTPException(503, "The token issuer cannot be reached.") from None
        if await _token_in_body(request):
            # RFC 6750 §3.1: a request that "uses more than one method to include an
            # access token" is invalid_request. Looked for only once the header's token
            # is good, so no caller without one can make the kit read a body.
            raise HTTPException(
                400, _PUBLIC["invalid_request"], challenge('error="invalid_request"')
            )
        request.state.access_token = verified
        return verified

    return dependency


def request_uri(request: Request, origin: str | None = None) -> str:
    """The request's URI as a DPoP proof's `htu` names it (RFC 9449 §4.2): `origin` (the
    API's public scheme and host, such as `https://api.example.com`), else the one the
    request reached, and the path as the client sent it, without the query.

    Behind a proxy that rewrites the scheme or `Host`, pass `origin`.
    """
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        path = raw.decode("latin-1").split("?", 1)[0]
    else:
        path = quote(request.scope.get("root_path", "") + request.scope["path"])
    base = origin if origin is not None else f"{request.url.scheme}://{request.url.netloc}"
    return base.rstrip("/") + path


def require_dpop_scopes(
    dpop: DpopTokenVerifier,
    *scopes: str,
    allow_bearer: bool = True,
    origin: str | None = None,
) -> Callable[[Request], Awaitable[AccessToken]]:
    """A dependency like `require_scopes` that also takes DPoP-bound tokens
    (`Authorization: DPoP <token>` with a `DPoP` proof header, RFC 9449 §7.1), and
    bearer tokens that are not bound unless `allow_bearer` is False. `origin` is the
    API's public origin, for the proofs' `htu` (`request_uri`).

    Failures are answered as RFC 9449 §7.1 and §9 ask: 401 with a `DPoP` challenge
    naming the error (`invalid_token`, `invalid_dpop_proof`, `use_dpop_nonce` with the
    nonce in `DPoP-Nonce`) and the accepted `algs`; 403 for a missing scope; 503 when the
    issuer's keys or a shared replay cache cannot be reached.
    """
    wanted = " ".join(scopes)
    algs = f'algs="{" ".join(dpop.algorithms)}"'
    challenge = f"Bearer, DPoP {algs}" if allow_bearer else f"DPoP {algs}"

    def refused(
        scheme: str, error: str, status: int = 401, *, nonce: str | None = None
    ) -> HTTPException:
        params = f'error="{error}"' + (f', scope="{wanted}"' if status == 403 else "")
        value = f"DPoP {params}, {algs}" if scheme == "dpop" else f"Bearer {params}"
        headers = {"WWW-Authenticate": value}
        if nonce is not None:
            headers["DPoP-Nonce"] = nonce  # RFC 9449 §9
        return HTTPException(status, _PUBLIC[error], headers)

    async def dependency(request: Request) -> AccessToken:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if (
            not token
            or scheme not in ("dpop", "bearer")
            or (scheme == "bearer" and not allow_bearer)
        ):
            # RFC 6750 §3.1, RFC 9449 §7.1: no error code when no usable credentials came.
            raise HTTPException(401, "Access token required.", {"WWW-Authenticate": challenge})
        try:
            if scheme == "dpop":
                verified = await dpop.verify(
                    token,
                    proofs=request.headers.getlist("dpop"),
                    method=request.method,
                    uri=request_uri(request, origin),
                )
            else:
                verified = await dpop.verifier.verify_async(token)
            verified.require_scopes(*scopes)
        except TokenRejected:
            raise refused(scheme, "invalid_token") from None
        except UseDpopNonce as error:
            raise refused(scheme, "use_dpop_nonce", nonce=error.nonce) from None
        except InvalidDpopProof:
            raise refused(scheme, "invalid_dpop_proof") from None
        except InsufficientScope:
            raise refused(scheme, "insufficient_scope", 403) from None
        except KeysUnavailable:
            raise HTTPException(503, "The token issuer cannot be reached.") from None
        except StoreUnavailable:
            raise HTTPException(503, "The DPoP replay cache cannot be reached.") from None
        if await _token_in_body(request):  # RFC 6750 §3.1, once the credentials are good
            raise refused(scheme, "invalid_request", 400)
        request.state.access_token = verified
        return verified

    return dependency


_PUBLIC = {
    "invalid_request": "The access token was sent more than once.",
    "invalid_token": "The access token is invalid or expired.",
    "invalid_dpop_proof": "The DPoP proof is invalid.",
    "use_dpop_nonce": "A DPoP proof with the server's nonce is required.",
    "insufficient_scope": "The access token lacks a scope this call needs.",
}
