"""The authorization code grant (RFC 6749 §4.1 with PKCE, RFC 7636; OAuth 2.1 §4.1):
check the request, log the user in, hand out a code, and exchange it once."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.authorization import (
    AuthorizationRequest,
    Params,
    check_authorization_request,
    client_and_redirect,
)
from keyturn.core.codes import password_changed_since, replay_ends_session
from keyturn.core.dpop_binding import admitted_key
from keyturn.core.errors import InvalidGrant, InvalidRequest, UnauthorizedClient
from keyturn.core.ids import ClientId
from keyturn.core.models import AuthorizationCode, Client, GrantType, RevocationReason
from keyturn.core.ports import Clock, Randomness, Store
from keyturn.crypto.pkce import verifier_matches
from keyturn.service.config import EngineConfig
from keyturn.service.context import NO_CONTEXT, RequestContext
from keyturn.service.ending import SessionEnding
from keyturn.service.issuing import issue_for_session, new_session
from keyturn.service.login import Login
from keyturn.service.results import IssuedTokens
from keyturn.service.tokens import Tokens

CODE_PREFIX = "kt_ac_"
MAX_CODE_LENGTH = 128


def code_hash(code: str) -> str:
    """What the store keeps of a code: its SHA-256, so a read of the table issues
    nothing."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


class Authorization:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        login: Login,
        clock: Clock,
        randomness: Randomness,
        config: EngineConfig,
        ending: SessionEnding,
    ) -> None:
        self._store = store
        self._ending = ending
        self._tokens = tokens
        self._login = login
        self._clock = clock
        self._random = randomness
        self._config = config

    async def check(self, params: Params) -> AuthorizationRequest:
        """The authorization request, checked (see `core.authorization`); raises
        `AuthorizationRefused`."""
        return check_authorization_request(params, await self._client_named(params))

    async def check_redirect(self, params: Params) -> tuple[Client, str]:
        """Only the client and its redirect URI: where a refusal may be sent."""
        client, redirect_uri, _ = client_and_redirect(params, await self._client_named(params))
        return client, redirect_uri

    async def _client_named(self, params: Params) -> Client | None:
        values = params.get("client_id", ())
        if len(values) != 1 or not values[0] or len(values[0]) > 256:
            return None
        return await self._store.get_client(ClientId(values[0]))

    async def grant_code(
        self,
        request: AuthorizationRequest,
        username: str,
        password: str,
        context: RequestContext = NO_CONTEXT,
    ) -> str:
        """Check the user's password and return a new authorization code for
        `request`. Raises `LoginFailed` or `RateLimited` like a first-party login."""
        user = await self._login.authenticate(username, password, request.client, context)
        now = self._clock.now()
        code = CODE_PREFIX + base64.urlsafe_b64encode(self._random.token_bytes(32)).rstrip(
            b"="
        ).decode("ascii")
        await self._store.add_authorization_code(
            AuthorizationCode(
                code_hash=code_hash(code),
                client_id=request.client.id,
                user_id=user.id,
                redirect_uri=request.redirect_uri,
                redirect_uri_given=request.redirect_uri_given,
                code_challenge=request.code_challenge,
                scope=request.scope,
                authenticated_at=now,
                created_at=now,
                expires_at=now + timedelta(seconds=self._config.authorization_code_ttl),
                device=context.device,
            ),
            SecurityEvent(
                type=EventType.LOGIN_SUCCEEDED,
                at=now,
                user_id=user.id,
                client_id=request.client.id,
                reason="authorization_code",
                device=context.device,
            ),
        )
        return code

    async def exchange(
        self,
        client: Client,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
        context: RequestContext = NO_CONTEXT,
        key_thumbprint: str | None = None,
    ) -> IssuedTokens:
        """RFC 6749 §4.1.3 and RFC 7636 §4.6: the tokens for a code, once.

        `client` is already authenticated. Every refusal is `invalid_grant`, and every
        refusal of an unused code burns it: a code is presented successfully once or
        never. A used code presented again ends the session it opened only when its own
        client presents it, with its verifier, before it expires; otherwise nothing
        changes and nothing is recorded (`core.codes.replay_ends_session`).
        `key_thumbprint`, the key of the request's verified DPoP proof, binds the access
        token and, for a public client, the session (RFC 9449 §5).
        """
        if GrantType.AUTHORIZATION_CODE not in client.grant_types:
            raise UnauthorizedClient("This client may not use the authorization code grant.")
        # Before the code is looked at: a request refused for its proof burns nothing,
        # and the client can send it again with one.
        dpop_key = admitted_key(client, key_thumbprint)
        if code is None:
            raise InvalidRequest("The code parameter is required.")
        if len(code) > MAX_CODE_LENGTH or not code.startswith(CODE_PREFIX):
            raise InvalidGrant(detail="not an authorization code")
        key = code_hash(code)
        found = await self._store.get_authorization_code(key)
        if found is None:
            raise InvalidGrant(detail="unknown authorization code")
        now = self._clock.now()
        if found.used:
            proven = verifier_matches(code_verifier, found.code_challenge)
            if replay_ends_session(found, client.id, proven, now):
                await self._end_what_it_issued(found, context)
                raise InvalidGrant(detail="authorization code used again")
            # Another client's, after its expiry or without its verifier: no race for
            # the code, so nothing to revoke and nothing to record
            # (`core.codes.replay_ends_session`).
            raise InvalidGrant(detail="used authorization code presented too late or elsewhere")
        refusal = self._refusal(found, client, redirect_uri, code_verifier, now)
        if refusal is not None:
            # A refused presentation burns the code (RFC 7636 §4.6 leaves it to us; a
            # stolen code must not survive a guess at its verifier).
            await self._store.redeem_authorization_code(
                key, now, None, self._refused(found, now, refusal)
            )
            raise InvalidGrant(detail=refusal)
        user = await self._store.get_user(found.user_id)
        if user is None or not user.enabled:
            await self._store.redeem_authorization_code(
                key, now, None, self._refused(found, now, "user gone")
            )
            raise InvalidGrant(detail="user disabled or deleted")
        if password_changed_since(found, user):
            await self._store.redeem_authorization_code(
                key, now, None, self._refused(found, now, "password_changed")
            )
            raise InvalidGrant(detail="password changed since the code was granted")
        session = await new_session(
            self._tokens,
            self._clock,
            self._random,
            self._config,
            user.id,
            client,
            found.scope,
            found.device,
            authenticated_at=found.authenticated_at,
            key_thumbprint=dpop_key,
        )
        won = await self._store.redeem_authorization_code(
            key,
            now,
            session,
            SecurityEvent(
                type=EventType.SESSION_CREATED,
                at=now,
                user_id=user.id,
                client_id=client.id,
                session_id=session.id,
                generation=0,
                reason="authorization_code",
                device=found.device,
            ),
        )
        if not won:
            # Two presentations raced and the other one won: this is the second use.
            again = await self._store.get_authorization_code(key)
            # This presentation passed `_refusal`, so its verifier is the code's.
            if again is not None and replay_ends_session(again, client.id, True, now):
                await self._end_what_it_issued(again, context)
            raise InvalidGrant(detail="authorization code used concurrently")
        return await issue_for_session(
            self._tokens, self._clock, self._config, session, client, 0, found.scope, dpop_key
        )

    def _refusal(
        self,
        code: AuthorizationCode,
        client: Client,
        redirect_uri: str | None,
        verifier: str | None,
        now: datetime,
    ) -> str | None:
        """Why the presentation of an unused code is refused, or `None`."""
        if now >= code.expires_at:
            return "authorization code expired"
        # RFC 6749 §4.1.3: "ensure that the authorization code was issued to the
        # authenticated confidential client, or ... to the public client".
        if code.client_id != client.id:
            return "authorization code of another client"
        # §4.1.3: redirect_uri is REQUIRED if it was in the authorization request, and
        # then "their values MUST be identical".
        if redirect_uri is None and code.redirect_uri_given:
            return "redirect_uri missing"
        if redirect_uri is not None and redirect_uri != code.redirect_uri:
            return "redirect_uri differs from the authorization request"
        if not verifier_matches(verifier, code.code_challenge):
            return "PKCE verifier missing or wrong"
        return None

    async def _end_what_it_issued(self, code: AuthorizationCode, context: RequestContext) -> None:
        """RFC 6749 §4.1.2: on a second use the server "SHOULD revoke (when possible)
        all tokens previously issued based on that authorization code"."""
        opened = await self._store.get_session(code.session_id) if code.session_id else None
        # Burnt by a refused presentation, its session purged or already ended: nothing
        # to end, and a row per presentation would only fill the audit table.
        if opened is not None and not opened.revoked:
            await self._ending.end(
                opened,
                RevocationReason.CODE_REPLAYED,
                context=context,
                detail="authorization code presented again",
            )

    @staticmethod
    def _refused(code: AuthorizationCode, now: datetime, why: str) -> SecurityEvent:
        return SecurityEvent(
            type=EventType.AUTHORIZATION_CODE_REFUSED,
            at=now,
            user_id=code.user_id,
            client_id=code.client_id,
            reason=why,
        )
