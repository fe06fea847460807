"""The access-token check of a resource server (RFC 9068 §4, RFC 8725)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from keyturn.crypto.access_tokens import InvalidAccessToken
from keyturn.verify.jwt_check import PreparedKeys, UnknownKid, verified_claims
from keyturn.verify.keyset import KeySet, max_age
from keyturn.verify.signatures import prepare
from keyturn.verify.token_cache import DEFAULT_SIZE, CachedToken, TokenCache

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


_new = object.__new__
_set = object.__setattr__
_tuple = tuple.__new__


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

    @classmethod
    def _of(
        cls,
        claims: dict[str, Any],
        session_id: str | None,
        expires_at: datetime,
        jkt: str | None,
    ) -> AccessToken:
        """The token of verified `claims`. A frozen dataclass's `__init__` sets each field
        through `object.__setattr__`, which cost a tenth of the budget of a verification
        beside its signature; this sets the same fields at once, on a fresh instance."""
        token = _new(cls)
        _set(
            token,
            "__dict__",
            {
                "subject": claims["sub"],
                "client_id": claims["client_id"],
                # `scope` is a string: `claim_times` checked it.
                "scopes": frozenset(claims.get("scope", "").split()),
                "session_id": session_id,
                "expires_at": expires_at,
                "claims": claims,
                "jkt": jkt,
            },
        )
        return token

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
    `cache_size` bounds how many verified tokens are remembered so a token seen again
    costs no signature check (0: none); `exp`, `nbf`, `iat`, the revocation lookup and
    the DPoP binding are still checked on every call (`keyturn.verify.token_cache`).
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
        cache_size: int = DEFAULT_SIZE,
    ) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway is between 0 and {MAX_LEEWAY} seconds")
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway
        self._refetch_interval = refetch_interval
        self._jwks_uri = jwks_uri
        self._revoked = revoked
        self._http = http  # None: a client of its own for each fetch, closed after it
        self._async_http = async_http
        self._timeout = timeout
        self._clock = clock
        self._keys = KeySet()
        self._prepared = PreparedKeys({})
        self._cache = TokenCache(cache_size)
        self._fresh_until = 0.0
        self._fetched_at: float | None = None
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    # The check

    def verify(self, token: str) -> AccessToken:
        """The token, if it is a valid bearer token. A DPoP-bound token (one with
        `cnf.jkt`) is refused here: it is good only with a proof of its key
        (RFC 9449 §7.1), which `keyturn.verify.dpop` checks."""
        if time.monotonic() >= self._fresh_until and self._keys_stale():
            with self._thread_lock:
                if self._keys_stale():
                    self._fetch_sync()
        try:
            return self._check(token, bound=False)
        except _UnknownKey:
            # An unknown kid may be a key published since our last fetch: look once,
            # but not more often than refetch_interval, so forged kids cannot flood
            # the issuer.
            if not self._may_refetch():
                raise
            with self._thread_lock:
                if self._may_refetch():
                    self._fetch_sync()
        return self._check(token, bound=False)

    async def verify_async(self, token: str) -> AccessToken:
        """`verify` for async code."""
        return await self._verify_async(token, bound=False)

    async def _verify_bound_async(self, token: str) -> AccessToken:
        """The token if it is valid and DPoP-bound; for `keyturn.verify.dpop` alone, which
        then checks the request's proof against `AccessToken.jkt`."""
        return await self._verify_async(token, bound=True)

    async def _verify_async(self, token: str, *, bound: bool) -> AccessToken:
        if time.monotonic() >= self._fresh_until and self._keys_stale():
            await self._fetch_async_once(self._keys_stale)
        try:
            return self._check(token, bound=bound)
        except _UnknownKey:
            if not self._may_refetch():
                raise
            await self._fetch_async_once(self._may_refetch)
        return self._check(token, bound=bound)

    async def _fetch_async_once(self, needed: Callable[[], bool]) -> None:
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if needed():
                await self._fetch_async()

    def _check(self, token: str, *, bound: bool) -> AccessToken:
        now = self._clock()
        cached = self._cache.get(token) if isinstance(token, str) else None
        if cached is not None:
            try:
                return self._current(cached, now, bound=bound)
            except TokenRejected:
                if cached.expires <= now - self._leeway:
                    self._cache.discard(token)
                raise
        # Cold: every check, then the cache. (One function, not two: this is the hot
        # path of a resource server, and a call costs a share of its budget.)
        if not self._keys.keys and self._fetched_at is not None:
            raise KeysUnavailable(f"no usable keys from {self.issuer}")
        # Read before the keys: an entry verified under keys that change meanwhile is
        # not kept (`TokenCache.put`).
        generation = self._cache.generation
        try:
            claims, expires, not_before = verified_claims(
                token, self._prepared, self.issuer, self.audience, now, self._leeway
            )
        except UnknownKid as error:
            raise _UnknownKey(str(error)) from None
        except InvalidAccessToken as error:
            raise TokenRejected(str(error)) from None
        sid = claims.get("sid")
        access = AccessToken._of(
            claims,
            sid if isinstance(sid, str) else None,
            datetime.fromtimestamp(expires, UTC),
            _confirmation(claims) if "cnf" in claims else None,
        )
        # The dates were checked with the claims; what else each call checks, now.
        self._admitted(access, bound)
        # `CachedToken(...)` without its Python-level `__new__`.
        self._cache.put(token, _tuple(CachedToken, (access, expires, not_before)), generation)
        return access

    def _current(self, entry: CachedToken, now: float, *, bound: bool) -> AccessToken:
        """The token of `entry`, verified, if it is still good now: what can change
        between two presentations of one token is checked on each."""
        if entry.expires <= now - self._leeway:
            raise TokenRejected("expired")
        if entry.not_before > now + self._leeway:
            raise TokenRejected("not yet valid")
        return self._admitted(entry.access, bound)

    def _admitted(self, access: AccessToken, bound: bool) -> AccessToken:
        """`access`, unless its session is revoked or it is presented the wrong way."""
        session_id = access.session_id
        if session_id is not None and self._revoked is not None and self._revoked(session_id):
            raise TokenRejected("session revoked")
        # RFC 9449 §7.1: a bound token is refused as a bearer token (whoever holds it
        # would not need the key), and an unbound one under the DPoP scheme.
        if bound and access.jkt is None:
            raise TokenRejected("bearer token presented with the DPoP scheme")
        if not bound and access.jkt is not None:
            raise TokenRejected("DPoP-bound token presented as a bearer token")
        return access

    # The keys

    def _keys_stale(self) -> bool:
        """No keys fetched yet, or the set's `max-age` is over and a fetch may be made."""
        if self._fetched_at is None:
            return True
        now = time.monotonic()
        return now >= self._fresh_until and now - self._fetched_at >= self._refetch_interval

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= (
            self._refetch_interval
        )

    def _fetch_sync(self) -> None:
        # Keys are fetched rarely (cached, refetched at most every refetch_interval): a
        # client of its own per fetch leaves no connection open between them.
        http = self._http or httpx.Client(timeout=self._timeout)
        try:
            if self._jwks_uri is None:
                self._jwks_uri = self._discovered(http.get(self._metadata_url()))
            self._accept(http.get(self._jwks_uri))
        except (httpx.HTTPError, ValueError) as error:
            self._failed(error)
        finally:
            if self._http is None:
                http.close()

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
            self._use(keys)
        self._fresh_until = now + max_age(response.headers.get("cache-control"))

    def _use(self, keys: KeySet) -> None:
        changed = _published(keys) != _published(self._keys)
        self._prepared = PreparedKeys(
            {kid: (alg, prepare(alg, key)) for kid, (alg, key) in keys.keys.items()}
        )
        self._keys = keys
        if changed:
            # A token verified under a key no longer published (or published anew under
            # the same kid) is checked again against the new set.
            self._cache.clear()

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


class _UnknownKey(TokenRejected):
    """Refused for a kid not in the key set: the set may be fetched again."""


def _published(keys: KeySet) -> dict[str, tuple[str, dict[str, Any]]]:
    return {kid: (alg, dict(key.as_dict())) for kid, (alg, key) in keys.keys.items()}
