"""The `DPoP` request header (RFC 9449 §4.1) and the `DPoP-Nonce` response header
(§8) at keyturn's own endpoints.

The token endpoint and the first-party login and refresh read the proof here, first
of all: `proof_key` verifies it (nonce included) before a client, a code or a refresh
token is looked at, so a refused proof or a nonce challenge changes nothing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.core.errors import InvalidToken
from keyturn.core.models import Session
from keyturn.service.dpop_proofs import ProofRequest
from keyturn.service.engine import Engine
from keyturn.service.inspection import InsufficientScope
from keyturn.web.errors import (
    DpopScopeRefused,
    DpopTokenRefused,
    ResourceNonceRequired,
    ResourceProofRefused,
)

HEADER = "dpop"
NONCE_HEADER = "DPoP-Nonce"


def app_path(request: Request) -> str:
    """The request's path below the issuer, as the client sent it (percent-encoding
    kept), without the query: what a proof's `htu` names after the issuer."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.scope["path"]
    path = path.split("?", 1)[0]
    root = request.scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def proof_request(request: Request) -> ProofRequest:
    """Every `DPoP` header field of the request (all of them: two are refused, not one
    picked), with its method and path."""
    return ProofRequest(tuple(request.headers.getlist(HEADER)), request.method, app_path(request))


async def proof_key(request: Request, engine: Engine) -> str | None:
    """The thumbprint of the key of the request's valid DPoP proof; None without a
    `DPoP` header. Raises `InvalidDpopProof` or `UseDpopNonce` (400)."""
    if HEADER not in request.headers:
        return None  # the bearer hot path: nothing more to look at
    return await engine.dpop.key_of(proof_request(request))


def with_nonce(response: Response, engine: Engine, key: str | None) -> Response:
    """`response` with a fresh `DPoP-Nonce` when the request carried a proof and the
    server uses nonces: the client's next proof has a current nonce and needs no
    challenge (RFC 9449 §8.2)."""
    if key is not None:
        nonce = engine.dpop.nonce()
        if nonce is not None:
            response.headers[NONCE_HEADER] = nonce
    return response


def authorization(request: Request) -> tuple[str, str | None]:
    """The scheme (lower case) and token of the `Authorization` header."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower(), (token.strip() or None)


async def current_session(request: Request, engine: Engine) -> Session:
    """The live session of the access token the request came with, for the account
    API: `Bearer <token>` for an unbound token, `DPoP <token>` with a proof of its key
    for a bound one (RFC 9449 §7.1). A token not for keyturn's account answers 401
    `invalid_token`, a good one whose client may not act here 403
    `insufficient_scope` (`Inspection.bearer_session`); each refusal is challenged in
    the scheme the request used."""
    scheme, token = authorization(request)
    if scheme not in ("bearer", "dpop"):
        token = None
    proof = proof_request(request) if scheme == "dpop" else None
    try:
        return await engine.inspection.bearer_session(token, proof)
    except UseDpopNonce as challenge:
        raise ResourceNonceRequired(challenge.nonce, detail=challenge.detail) from None
    except InvalidDpopProof as refused:
        raise ResourceProofRefused(detail=refused.detail) from None
    except InsufficientScope as refused:
        if proof is None:
            raise
        raise DpopScopeRefused(detail=refused.detail) from None
    except InvalidToken as refused:
        if proof is None:
            raise
        raise DpopTokenRefused(detail=refused.detail) from None
