"""The access-token check of a resource server (RFC 9068 §4, RFC 8725)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from keyturn.crypto.access_tokens import InvalidAccessToken
from keyturn.crypto.access_tokens import verify as verify_jwt
from keyturn.verify.keyset import KeySet, max_age

METADATA_PATH = "/.well-known/oauth-authorization-server"
MAX_LEEWAY = 60
"""The most clock leeway a `Verifier` takes, in seconds. keyturn's revocation feed keeps
a revoked session listed this long past its last token's `exp` (and a little more), so
no leeway the kit allows lets a revoked session's token back in."""


class TokenRejected(Exception):
    """Not a valid, current access token for this API: answer 401 `invalid_token`.
    `reason` is for the log, never for the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InsufficientScope(Exception):
    """A valid token without a scope the call needs: answer 403 `insufficient_scope`."""

    def __init__(self, missing: frozenset[str]) -> None:
        self.missing = missing
        super().__init__("missing scope: " + " ".join(sorted(missing)))


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched and none are cached: answer 503."""


@dataclass(frozen=True)
class AccessToken:
    """A verified access token."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    session_id: str | None
    expires_at: datetime
    claims: dict[str, Any] = field(repr=False)
    jkt: str | None = None
    """The thumbprint of the key the token is bound to (`cnf.jkt`, RFC 9449 §6.1), or
    None for a bearer token."""

    def require_scopes(self, *needed: str) -> None:
        missing = frozenset(needed) - self.scopes
        if missing:
            raise InsufficientScope(missing)


class Verifier:
    """Verifies access tokens of one issuer for one audience. Thread-safe, and usable
    from sync (`verify`) and async (`verify_async`) code alike.

    `revoked`, if given, is asked about the token's `sid` on every call (a local set,
    such as `keyturn.verify.revocations.RevocationFeed.revoked`): never a network call.
    `leeway` (at most `MAX_LEEWAY`) is how far `exp`, `nbf` and `iat` may be off.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        leeway: int = 30,
        refetch_interval: float = 30.0,
        jwks_uri: str | None = None,
        timeout: float = 5.0,
        revoked: Callable[[str], bool] | None = None,
        http: httpx.Client | None = None,
        async_http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway is between 0 and {MAX_LEEWAY} seconds")
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway
        self._refetch_interval = refetch_interval
        self._jwks_uri = jwks_uri
        self._revoked = revoked
        self._http = http or httpx.Client(timeout=timeout)
        self._async_http = async_http
        self._timeout = timeout
        self._clock = clock
        self._keys = KeySet()
        self._fresh_until = 0.0
        self._fetched_at: float | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    # The check

    def verify(self, token: str) -> AccessToken:
        """The token, if it is a valid bearer token. A DPoP-bound token (one with
        `cnf.jkt`) is refused here: it is good only with a proof of its key
        (RFC 9449 §7.1), which `keyturn.verify.dpop` checks."""
        if self._needs_keys(token):
            with self._thread_lock:
                if self._needs_keys(token):
                    self._fetch_sync()
        return self._check(token, bound=False)

    async def verify_async(self, token: str) -> AccessToken:
        """`verify` for async code."""
        await self._load_keys_async(token)
        return self._check(token, bound=False)

    async def _verify_bound_async(self, token: str) -> AccessToken:
        """The token if it is valid and DPoP-bound; for `keyturn.verify.dpop` alone, which
        then checks the request's proof against `AccessToken.jkt`."""
        await self._load_keys_async(token)
        return self._check(token, bound=True)

    async def _load_keys_async(self, token: str) -> None:
        if self._needs_keys(token):
            if self._async_lock is None:
                self._async_lock = asyncio.Lock()
            async with self._async_lock:
                if self._needs_keys(token):
                    await self._fetch_async()

    def _check(self, token: str, *, bound: bool) -> AccessToken:
        if not self._keys.keys and self._fetched_at is not None:
            raise KeysUnavailable(f"no usable keys from {self.issuer}")
        try:
            claims = verify_jwt(
                token,
                self._keys.keys,
                issuer=self.issuer,
                audience=self.audience,
                now=datetime.fromtimestamp(self._clock(), UTC),
                leeway=self._leeway,
            )
        except InvalidAccessToken as error:
            raise TokenRejected(str(error)) from None
        sid = claims.get("sid")
        session_id = sid if isinstance(sid, str) else None
        if session_id is not None and self._revoked is not None and self._revoked(session_id):
            raise TokenRejected("session revoked")
        jkt = _confirmation(claims)
        # RFC 9449 §7.1: a bound token is refused as a bearer token (whoever holds it
        # would not need the key), and an unbound one under the DPoP scheme.
        if bound and jkt is None:
            raise TokenRejected("bearer token presented with the DPoP scheme")
        if not bound and jkt is not None:
            raise TokenRejected("DPoP-bound token presented as a bearer token")
        return AccessToken(
            subject=claims["sub"],
            client_id=claims["client_id"],
            scopes=frozenset(str(claims.get("scope", "")).split()),
            session_id=session_id,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            claims=claims,
            jkt=jkt,
        )

    # The keys

    def _needs_keys(self, token: str) -> bool:
        now = time.monotonic()
        if self._fetched_at is None or now >= self._fresh_until:
            return self._fetched_at is None or now - self._fetched_at >= self._refetch_interval
        kid = _kid_of(token)
        # An unknown kid may be a key published since our last fetch: look once, but
        # not more often than refetch_interval, so forged kids cannot flood the issuer.
        return (
            kid is not None
            and kid not in self._keys.keys
            and now - self._fetched_at >= self._refetch_interval
        )

    def _fetch_sync(self) -> None:
        try:
            if self._jwks_uri is None:
                self._jwks_uri = self._discovered(self._http.get(self._metadata_url()))
            self._accept(self._http.get(self._jwks_uri))
        except (httpx.HTTPError, ValueError) as error:
            self._failed(error)

    async def _fetch_async(self) -> None:
        http = self._async_http or httpx.AsyncClient(timeout=self._timeout)
        try:
            if self._jwks_uri is None:
                self._jwks_uri = self._discovered(await http.get(self._metadata_url()))
            self._accept(await http.get(self._jwks_uri))
        except (httpx.HTTPError, ValueError) as error:
            self._failed(error)
        finally:
            if self._async_http is None:
                await http.aclose()

    def _metadata_url(self) -> str:
        return self.issuer.rstrip("/") + METADATA_PATH

    def _discovered(self, response: httpx.Response) -> str:
        response.raise_for_status()
        metadata = response.json()
        # RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
            raise ValueError("the metadata names another issuer")
        uri = metadata.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise ValueError("the metadata has no jwks_uri")
        return uri

    def _accept(self, response: httpx.Response) -> None:
        response.raise_for_status()
        keys = KeySet.from_jwks(response.json())
        now = time.monotonic()
        self._fetched_at = now
        if keys.keys:
            self._keys = keys
        self._fresh_until = now + max_age(response.headers.get("cache-control"))

    def _failed(self, error: Exception) -> None:
        # Keep the keys we have; try again after refetch_interval, not on every call.
        now = time.monotonic()
        self._fetched_at = now
        self._fresh_until = min(self._fresh_until, now + self._refetch_interval)
        if not self._keys.keys:
            raise KeysUnavailable(f"cannot fetch the keys of {self.issuer}: {error}") from None


def _confirmation(claims: dict[str, Any]) -> str | None:
    """The `cnf.jkt` of a DPoP-bound token (RFC 9449 §6.1), None when it has no `cnf`.

    A `cnf` this kit cannot check (another confirmation method, such as RFC 8705's
    certificate binding, or a malformed one) refuses the token: treating it as a bearer
    token would drop the sender constraint its issuer asked for (RFC 7800 §3)."""
    if "cnf" not in claims:
        return None
    cnf = claims["cnf"]
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise TokenRejected("unsupported confirmation (cnf) claim")
    return jkt


def _kid_of(token: str) -> str | None:
    """The `kid` a token's header names, read without trusting it."""
    head = token.split(".", 1)[0] if isinstance(token, str) else ""
    if not head or len(head) > 1024:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None
