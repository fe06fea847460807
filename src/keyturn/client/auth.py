"""`RefreshingAuth`: the httpx authentication flow of the client kit, sync and async.

The rules it keeps, each against a way apps log their users out at random:

- one refresh in flight: every thread (or task) that finds the access token due waits
  for the one refresh already under way, and then uses its result (two concurrent
  refreshes of one token would look like a replay to a strict server);
- the rotated refresh token is saved before anything uses it, so a crash never leaves
  the store holding a token the server has already rotated out past its grace window;
- a refresh whose answer is lost (a network error, a timeout, a 5xx or a 429) is
  retried with the same refresh token after a bounded backoff: the server's retry
  window hands back the same successor. It never forgets the tokens;
- `invalid_grant` is final: the tokens are forgotten and `LoginRequired` raised;
- with DPoP (`dpop=True`, RFC 9449), every token request and every API call made with
  a DPoP-bound access token carries a proof of one key, the store's: a lost answer is
  retried with the same key (the server's key continuity answers it with the live
  token), and a `use_dpop_nonce` challenge is answered once with the nonce it names.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus

import httpx

from keyturn.client.dpop import DpopKey, Nonces
from keyturn.client.errors import GrantRefused, LoginRequired, RefreshFailed, RefreshUnavailable
from keyturn.client.stores import DpopKeyStore, MemoryStore, RefreshTokenStore

TokenHook = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class _Access:
    token: str
    refresh_at: float
    """When to refresh ahead of expiry (wall clock)."""
    dpop: bool = False
    """Bound to the kit's DPoP key (`token_type` DPoP): sent as `DPoP <token>` with a
    proof, never as a bearer token."""


@dataclass(frozen=True)
class _Outcome:
    """What one refresh request came to: tokens, a final refusal, or a retryable miss."""

    body: Mapping[str, Any] | None = None
    refused: Exception | None = None
    retry: str | None = None
    retry_after: float | None = None
    """Seconds the server asked to wait (`Retry-After` of a 429 or 503)."""


class RefreshingAuth(httpx.Auth):
    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        store: RefreshTokenStore | None = None,
        scope: str | None = None,
        revocation_endpoint: str | None = None,
        refresh_at: float = 0.8,
        jitter: float = 0.05,
        attempts: int = 4,
        backoff: float = 0.25,
        max_backoff: float = 5.0,
        on_tokens: TokenHook | None = None,
        http: httpx.Client | None = None,
        async_http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        dpop: bool = False,
        dpop_key: DpopKey | None = None,
    ) -> None:
        """`refresh_at` is the fraction of an access token's lifetime after which it
        is refreshed ahead of expiry (± `jitter`, so a fleet does not refresh in step).
        A refresh whose answer is lost (network error, timeout, 5xx, 429) is tried
        `attempts` times in all with the same refresh token, waiting `backoff`, then
        twice that, and so on, never more than `max_backoff` (nor more than that when
        the server's `Retry-After` asks for longer). The first retry leaves within
        `timeout + 1.5 * backoff` of a request whose answer was lost: keep it inside
        the client's retry window (10 s for a `browser` client; unbounded for `native`
        and `agent`). `on_tokens` sees every token response, after the refresh token in
        it has been saved.

        `dpop=True` (or a `dpop_key`) sends a DPoP proof (RFC 9449) with every token
        request, and with every API call whose access token is DPoP-bound. The key is
        `dpop_key`, else the store's (`FileStore`: a 0600 file beside the token;
        `MemoryStore`: in memory), generated on first use; a store that keeps no key
        (`CallbackStore`) needs `dpop_key`, or a restart would lose the key the session
        is bound to, and the server would end the session at the next refresh."""
        if not 0 < refresh_at <= 1 or not 0 <= jitter < refresh_at:
            raise ValueError("refresh_at is in (0, 1] and jitter in [0, refresh_at)")
        self.token_endpoint = token_endpoint
        self.revocation_endpoint = revocation_endpoint
        self.client_id = client_id
        self._secret = client_secret
        self._store = store or MemoryStore()
        self._scope = scope
        self._fraction = refresh_at
        self._jitter = jitter
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._on_tokens = on_tokens
        self._http = http
        self._async_http = async_http
        self._timeout = timeout
        self._clock = clock
        self._access: _Access | None = None
        self._dpop = dpop or dpop_key is not None
        self._key = dpop_key
        self._key_lock = threading.Lock()
        if self._dpop and dpop_key is None and not _keeps_keys(self._store):
            raise ValueError("dpop=True needs a store that keeps the key, or dpop_key=")
        self.nonces = Nonces()
        """The latest `DPoP-Nonce` of each origin this kit has talked to."""
        self._thread_lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_locks = weakref.WeakKeyDictionary()
        self.refreshes = 0
        """Refresh requests sent (retries included)."""

    # Tokens

    @property
    def access_token(self) -> str | None:
        return self._access.token if self._access else None

    @property
    def dpop_key(self) -> DpopKey | None:
        """The key of the DPoP proofs (loaded or generated on first use); None without
        DPoP."""
        if not self._dpop:
            return None
        with self._key_lock:
            if self._key is None:
                store: DpopKeyStore = self._store  # type: ignore[assignment] # checked in __init__
                kept = store.load_key()
                if kept is None:
                    kept = store.add_key(DpopKey.generate().to_pem())
                self._key = DpopKey.from_pem(kept)
            return self._key

    def set_tokens(self, response: Mapping[str, Any]) -> None:
        """Adopt a token response (RFC 6749 §5.1) from a login or a code exchange."""
        self._adopt(response, previous=None)

    def forget(self) -> None:
        """Drop both tokens, here and in the store (the DPoP key is kept: the next login
        proves with it)."""
        self._access = None
        self._store.save(None)

    def _adopt(self, body: Mapping[str, Any], previous: str | None) -> None:
        # Saved first, before anything can fail or use it: the server has rotated, and
        # the predecessor answers only inside the client's retry window.
        # RFC 6749 §6: the server MAY issue a new refresh token; keep the old one if not.
        refresh = body.get("refresh_token") or previous
        if refresh is not None:
            self._store.save(str(refresh))
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise RefreshFailed("invalid_response", "no access_token in the token response")
        lifetime = body.get("expires_in")
        now = self._clock()
        if isinstance(lifetime, int | float) and lifetime > 0:
            spread = self._jitter * (2 * random.random() - 1)  # noqa: S311 - jitter, not a secret
            refresh_at = now + float(lifetime) * (self._fraction + spread)
        else:
            refresh_at = float("inf")  # no lifetime given: refresh on a 401 only
        bound = self._dpop and str(body.get("token_type", "")).lower() == "dpop"
        self._access = _Access(access, refresh_at, dpop=bound)
        if self._on_tokens is not None:
            self._on_tokens(body)

    def _due(self, stale: str | None) -> bool:
        """Whether a refresh is (still) needed: after a 401 only if no one has replaced
        the token that got it; else when there is no token or it is due."""
        if stale is not None:
            return self._access is None or self._access.token == stale
        return self._access is None or self._clock() >= self._access.refresh_at

    # The flow

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if self._due(None):
            self.refresh()
        used = self._authorize(request)
        response = yield request
        if self._resource_nonce_challenge(request, response):
            self._authorize(request)
            response = yield request
        if response.status_code == 401:
            self.refresh(stale=used)
            self._authorize(request)
            response = yield request
            self._learn_nonce(request, response)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._due(None):
            await self.refresh_async()
        used = self._authorize(request)
        response = yield request
        if self._resource_nonce_challenge(request, response):
            self._authorize(request)
            response = yield request
        if response.status_code == 401:
            await self.refresh_async(stale=used)
            self._authorize(request)
            response = yield request
            self._learn_nonce(request, response)

    def _authorize(self, request: httpx.Request) -> str:
        """Put the access token on `request`: `Bearer <token>`, or for a DPoP-bound
        token `DPoP <token>` with a fresh proof of the request's method and URL and
        the token's hash (RFC 9449 §7.1). Returns the token."""
        access = self._access
        if access is None:
            raise LoginRequired("no access token")
        key = self.dpop_key if access.dpop else None
        if key is None:
            request.headers["Authorization"] = f"Bearer {access.token}"
            request.headers.pop("DPoP", None)
            return access.token
        url = str(request.url)
        request.headers["Authorization"] = f"DPoP {access.token}"
        request.headers["DPoP"] = key.proof(
            request.method, url, nonce=self.nonces.get(url), access_token=access.token
        )
        return access.token

    def _learn_nonce(self, request: httpx.Request, response: httpx.Response) -> None:
        if self._dpop:
            self.nonces.learn(str(request.url), response.headers.get("dpop-nonce"))

    def _resource_nonce_challenge(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Learn the response's nonce; True when it is a resource server's nonce
        challenge to a proof (401, `WWW-Authenticate: DPoP error="use_dpop_nonce"`,
        RFC 9449 §9): the request is sent once more with a proof carrying it."""
        self._learn_nonce(request, response)
        return (
            "dpop" in request.headers
            and response.status_code == 401
            and "dpop-nonce" in response.headers
            and "use_dpop_nonce" in response.headers.get("www-authenticate", "")
        )

    # Refreshing, once however many callers need it

    def refresh(self, *, stale: str | None = None) -> None:
        with self._thread_lock:
            if not self._due(stale):
                return  # another thread refreshed while this one waited
            token = self._refresh_token()
            http = self._http or httpx.Client(timeout=self._timeout)
            try:
                for attempt in range(self._attempts):
                    outcome = self._send_sync(http, token)
                    if self._settle(outcome, token, attempt):
                        return
                    time.sleep(self._delay(attempt, outcome))
            finally:
                if self._http is None:
                    http.close()

    async def refresh_async(self, *, stale: str | None = None) -> None:
        async with self._async_lock():
            if not self._due(stale):
                return
            token = self._refresh_token()
            http = self._async_http or httpx.AsyncClient(timeout=self._timeout)
            try:
                for attempt in range(self._attempts):
                    outcome = await self._send_async(http, token)
                    if self._settle(outcome, token, attempt):
                        return
                    await asyncio.sleep(self._delay(attempt, outcome))
            finally:
                if self._async_http is None:
                    await http.aclose()

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._async_locks.get(loop)
        if lock is None:
            lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    def _refresh_token(self) -> str:
        token = self._store.load()
        if token is None:
            self._access = None
            raise LoginRequired("no refresh token saved")
        return token

    def _send_sync(self, http: httpx.Client, token: str) -> _Outcome:
        for answered_challenge in (False, True):
            self.refreshes += 1
            try:
                response = http.send(self._refresh_request(http, token), auth=self._auth())
            except httpx.TransportError as error:  # timeouts included: the answer is lost
                return _Outcome(retry=f"{type(error).__name__}: {error}")
            if answered_challenge or not self._token_nonce_challenge(response):
                break
        return self._read(response)

    async def _send_async(self, http: httpx.AsyncClient, token: str) -> _Outcome:
        for answered_challenge in (False, True):
            self.refreshes += 1
            try:
                response = await http.send(self._refresh_request(http, token), auth=self._auth())
            except httpx.TransportError as error:
                return _Outcome(retry=f"{type(error).__name__}: {error}")
            if answered_challenge or not self._token_nonce_challenge(response):
                break
        return self._read(response)

    def _refresh_request(self, http: httpx.Client | httpx.AsyncClient, token: str) -> httpx.Request:
        """The refresh request (RFC 6749 §6) for `token`, built anew for every try, each
        with a new proof of the same key (RFC 9449 §5): a retry of a lost answer is the
        same device, which the server's key continuity tells from a thief."""
        request = http.build_request("POST", self.token_endpoint, data=self._form(token))
        return self._prove(request)

    def _prove(self, request: httpx.Request) -> httpx.Request:
        """`request` to a token endpoint with a DPoP proof, when the kit uses DPoP."""
        key = self.dpop_key
        if key is not None:
            url = str(request.url)
            request.headers["DPoP"] = key.proof(request.method, url, nonce=self.nonces.get(url))
        return request

    def _token_nonce_challenge(self, response: httpx.Response) -> bool:
        """Learn the response's nonce; True when it is the token endpoint's nonce
        challenge (400 `use_dpop_nonce` with a `DPoP-Nonce`, RFC 9449 §8): the request
        is sent once more, at once, with a proof carrying it. The server checks the
        proof before the refresh token, so the challenged request consumed nothing."""
        if not self._dpop:
            return False
        self.nonces.learn(str(response.request.url), response.headers.get("dpop-nonce"))
        if response.status_code != 400 or "dpop-nonce" not in response.headers:
            return False
        try:
            body = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"

    def _settle(self, outcome: _Outcome, token: str, attempt: int) -> bool:
        """Apply an outcome; True when done, False to retry. Raises when final."""
        if outcome.body is not None:
            self._adopt(outcome.body, previous=token)
            return True
        if outcome.refused is not None:
            if isinstance(outcome.refused, LoginRequired):
                self.forget()
            raise outcome.refused
        if attempt + 1 >= self._attempts:
            raise RefreshUnavailable(f"refresh failed {self._attempts} times: {outcome.retry}")
        return False

    def _delay(self, attempt: int, outcome: _Outcome) -> float:
        """The wait before try `attempt + 2`: the doubled backoff with up to half again
        of jitter (clients that lost their answers together do not return in step), or
        the server's `Retry-After`; never more than `max_backoff`."""
        doubled = self._backoff * (2**attempt) * (1 + random.random() / 2)  # noqa: S311
        wait = max(doubled, outcome.retry_after or 0.0)
        return float(min(wait, self._max_backoff))

    def _form(self, token: str) -> dict[str, str]:
        form = {"grant_type": "refresh_token", "refresh_token": token}
        if self._secret is None:
            form["client_id"] = self.client_id  # a public client names itself
        if self._scope:
            form["scope"] = self._scope
        return form

    def _auth(self) -> httpx.Auth:
        # RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
        if self._secret is None:
            return httpx.Auth()  # a public client: no credentials, never the client's own
        return httpx.BasicAuth(quote_plus(self.client_id), quote_plus(self._secret))

    @staticmethod
    def _read(response: httpx.Response) -> _Outcome:
        if response.status_code >= 500 or response.status_code in (408, 429):
            return _Outcome(
                retry=f"HTTP {response.status_code}",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        try:
            body = response.json()
        except ValueError:
            return _Outcome(retry=f"HTTP {response.status_code} without a JSON body")
        if response.status_code == 200 and isinstance(body, dict):
            return _Outcome(body=body)
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        if error == "invalid_grant":
            return _Outcome(refused=LoginRequired(str(description or "the session has ended")))
        return _Outcome(refused=RefreshFailed(str(error or response.status_code), description))

    # Getting the first tokens

    def grant(self, params: Mapping[str, str]) -> Mapping[str, Any]:
        """Ask the token endpoint for tokens with `params` (an authorization code
        exchange, RFC 6749 §4.1.3: `grant_type`, `code`, `redirect_uri`,
        `code_verifier`; or any other grant), authenticated as the client and, with
        DPoP, with a proof (a nonce challenge answered once). The answer is adopted as
        by `set_tokens` and returned. Raises `GrantRefused` when refused."""
        with self._thread_lock:
            http = self._http or httpx.Client(timeout=self._timeout)
            try:
                for answered_challenge in (False, True):
                    response = http.send(self._grant_request(http, params), auth=self._auth())
                    if answered_challenge or not self._token_nonce_challenge(response):
                        break
            finally:
                if self._http is None:
                    http.close()
            return self._accept_grant(response)

    async def grant_async(self, params: Mapping[str, str]) -> Mapping[str, Any]:
        async with self._async_lock():
            http = self._async_http or httpx.AsyncClient(timeout=self._timeout)
            try:
                for answered_challenge in (False, True):
                    request = self._grant_request(http, params)
                    response = await http.send(request, auth=self._auth())
                    if answered_challenge or not self._token_nonce_challenge(response):
                        break
            finally:
                if self._async_http is None:
                    await http.aclose()
            return self._accept_grant(response)

    def login(self, url: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """POST `body` as JSON to a first-party login endpoint such as keyturn's
        `/auth/login` (`username`, `password`; the kit adds `client_id`), with a DPoP
        proof for `url` when the kit uses DPoP, so the session is bound to its key
        from the start. The answer is adopted and returned; `GrantRefused` if refused."""
        with self._thread_lock:
            http = self._http or httpx.Client(timeout=self._timeout)
            try:
                for answered_challenge in (False, True):
                    response = http.send(self._login_request(http, url, body))
                    if answered_challenge or not self._token_nonce_challenge(response):
                        break
            finally:
                if self._http is None:
                    http.close()
            return self._accept_grant(response)

    async def login_async(self, url: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        async with self._async_lock():
            http = self._async_http or httpx.AsyncClient(timeout=self._timeout)
            try:
                for answered_challenge in (False, True):
                    response = await http.send(self._login_request(http, url, body))
                    if answered_challenge or not self._token_nonce_challenge(response):
                        break
            finally:
                if self._async_http is None:
                    await http.aclose()
            return self._accept_grant(response)

    def _grant_request(
        self, http: httpx.Client | httpx.AsyncClient, params: Mapping[str, str]
    ) -> httpx.Request:
        form = dict(params)
        if self._secret is None:
            form.setdefault("client_id", self.client_id)
        return self._prove(http.build_request("POST", self.token_endpoint, data=form))

    def _login_request(
        self, http: httpx.Client | httpx.AsyncClient, url: str, body: Mapping[str, Any]
    ) -> httpx.Request:
        payload = {"client_id": self.client_id, **body}
        return self._prove(http.build_request("POST", url, json=payload))

    def _accept_grant(self, response: httpx.Response) -> Mapping[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            found = body if isinstance(body, dict) else {}
            error = str(found.get("error") or f"HTTP {response.status_code}")
            description = found.get("error_description")
            raise GrantRefused(response.status_code, error, description)
        self._adopt(body, previous=None)
        return body

    # Logging out

    def logout(self) -> None:
        """Revoke the refresh token at the server (RFC 7009; its session ends) and
        forget both tokens. The tokens are forgotten even if the server is unreachable."""
        token = self._store.load()
        try:
            if token is not None and self.revocation_endpoint is not None:
                http = self._http or httpx.Client(timeout=self._timeout)
                try:
                    http.post(
                        self.revocation_endpoint, data=self._revoke_form(token), auth=self._auth()
                    )
                finally:
                    if self._http is None:
                        http.close()
        finally:
            self.forget()

    async def logout_async(self) -> None:
        token = self._store.load()
        try:
            if token is not None and self.revocation_endpoint is not None:
                http = self._async_http or httpx.AsyncClient(timeout=self._timeout)
                try:
                    await http.post(
                        self.revocation_endpoint, data=self._revoke_form(token), auth=self._auth()
                    )
                finally:
                    if self._async_http is None:
                        await http.aclose()
        finally:
            self.forget()

    def _revoke_form(self, token: str) -> dict[str, str]:
        form = {"token": token, "token_type_hint": "refresh_token"}
        if self._secret is None:
            form["client_id"] = self.client_id
        return form


def _keeps_keys(store: RefreshTokenStore) -> bool:
    return callable(getattr(store, "load_key", None)) and callable(getattr(store, "add_key", None))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (RFC 9110 §10.2.3: seconds or a date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
