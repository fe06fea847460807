"""The refresh grant: rotate a refresh token (RFC 6749 §6, RFC 9700 §4.14.2).

Both surfaces (`/oauth/token` and `/auth/refresh`) call `Refresher.refresh`; the rules
themselves live in `keyturn.core.rotation`, never here.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import assert_never

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidClient, InvalidGrant, InvalidScope, UnauthorizedClient
from keyturn.core.ids import ClientId
from keyturn.core.models import (
    Attempted,
    Client,
    GrantType,
    Presentation,
    RevocationReason,
    RotationAttempt,
    Session,
    User,
)
from keyturn.core.ports import Clock, Store
from keyturn.core.rotation import (
    Presented,
    Refusal,
    Refuse,
    Replay,
    Revoke,
    Rotate,
    UserState,
    decide,
)
from keyturn.core.scopes import Scope
from keyturn.crypto.refresh_codec import RefreshClaims
from keyturn.service.client_auth import ClientAuthenticator, ClientCredentials
from keyturn.service.config import EngineConfig, ReuseScope
from keyturn.service.context import NO_CONTEXT, RequestContext
from keyturn.service.issuing import issue_for_session
from keyturn.service.results import IssuedTokens
from keyturn.service.tokens import Tokens

# A lost compare-and-swap means another request rotated (or revoked) the session
# between our read and our write; re-reading settles it (it becomes a replay, a
# reuse or a refusal), so more than a couple of rounds means something is wrong.
_MAX_ATTEMPTS = 3


class Refresher:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        clock: Clock,
        config: EngineConfig,
        clients: ClientAuthenticator,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._clock = clock
        self._config = config
        self._clients = clients

    async def refresh(
        self,
        refresh_token: str,
        client: Client,
        requested_scope: Scope | None = None,
        context: RequestContext = NO_CONTEXT,
    ) -> IssuedTokens:
        """Exchange a refresh token presented by the already-authenticated `client`.

        Raises `InvalidGrant`, `InvalidScope`, `UnauthorizedClient`, `InvalidClient`
        or `StoreUnavailable`. A revocation decided on the way is committed before the
        error is raised; a token is minted only after the state that makes it valid
        is committed (I2).
        """
        _may_refresh(client)
        # Rule 1: checksum and MAC before any database work.
        claims = await self._tokens.decode_refresh(refresh_token)
        loaded = None
        if requested_scope is None:
            attempted = await self._attempt(claims, client)
            if isinstance(attempted, Session):
                return await self._issue_rotated(attempted, client)
            loaded = _loaded(attempted)
        return await self._rotate(claims, client, loaded, requested_scope, context)

    async def refresh_for(
        self,
        credentials: ClientCredentials,
        refresh_token: str,
        requested_scope: Scope | None = None,
        context: RequestContext = NO_CONTEXT,
    ) -> IssuedTokens:
        """`refresh` for a client still to be authenticated, as `/oauth/token` receives
        it: the client, the session and its user are read in one query. The answers are
        those of `ClientAuthenticator.authenticate` then `refresh`: a client that fails
        to authenticate gets `InvalidClient` whatever the token."""
        self._clients.check_shape(credentials)
        try:
            claims = await self._tokens.decode_refresh(refresh_token)
        except InvalidGrant:
            # Nothing to read the client with: it is authenticated alone, and answers first.
            _may_refresh(await self._clients.authenticate(credentials))
            raise
        known = self._clients.remembered(credentials.client_id)
        if known is not None and requested_scope is None:
            # The hot path, one round trip: authenticated against the client as this
            # process last read it, and the attempt's guard holds the database to that
            # very client (enabled, same secret), so nothing is read first.
            client = await self._clients.check(credentials, known)
            _may_refresh(client)
            attempted = await self._attempt(claims, client)
            if isinstance(attempted, Session):
                return await self._issue_rotated(attempted, client)
            read = attempted
        else:
            read = await self._store.get_presentation(
                ClientId(credentials.client_id), claims.session_id
            )
        client = await self._clients.check(credentials, read.client)
        _may_refresh(client)
        return await self._rotate(claims, client, _loaded(read), requested_scope, context)

    async def _attempt(self, claims: RefreshClaims, client: Client) -> Attempted:
        """Rotate `claims` if the session is exactly as a rotation needs it, reading and
        writing in one store operation; otherwise only read (see `Store.attempt_rotation`)."""
        return await self._store.attempt_rotation(
            RotationAttempt(
                session_id=claims.session_id,
                client_id=client.id,
                client_secret_hash=client.secret_hash,
                salt=claims.salt,
                generation=claims.generation,
                at=self._clock.now(),
                idle_ttl=self._config.rotation_policy(client).session_idle_ttl,
            )
        )

    async def _issue_rotated(self, rotated: Session, client: Client) -> IssuedTokens:
        """The tokens of a rotation the store committed: the successor's refresh token,
        an access token of the session's scope (no narrower scope was asked for)."""
        return await self._issue(rotated, client, rotated.generation, rotated.scope)

    async def _issue(
        self, session: Session, client: Client, generation: int, scope: Scope
    ) -> IssuedTokens:
        return await issue_for_session(
            self._tokens, self._clock, self._config, session, client, generation, scope
        )

    async def _rotate(
        self,
        claims: RefreshClaims,
        client: Client,
        loaded: tuple[Session, User] | None,
        requested_scope: Scope | None,
        context: RequestContext,
    ) -> IssuedTokens:
        """Decide and commit the rotation of `claims`; `loaded` is the session and user
        already read for the first round (None: read them here)."""
        for attempt in range(_MAX_ATTEMPTS):
            if attempt or loaded is None:
                loaded = await self._store.get_session_with_user(claims.session_id)
            if loaded is None or not self._tokens.salt_matches(claims, loaded[0]):
                raise InvalidGrant(detail="unknown session")
            session, user = loaded
            now = self._clock.now()
            decision = decide(
                session,
                UserState(enabled=user.enabled, password_changed_at=user.password_changed_at),
                Presented(claims.generation, client.id, requested_scope),
                self._config.rotation_policy(client),
                now,
            )
            match decision:
                case Refuse(why=why):
                    await self._alert(why, session, claims.generation, client, context)
                    if why is Refusal.SCOPE_TOO_WIDE:
                        raise InvalidScope
                    raise InvalidGrant(detail=why.value)
                case Revoke(reason=reason):
                    await self._revoke(session, reason, claims.generation, context)
                    raise InvalidGrant(detail=reason.value)
                case Replay(generation=generation, scope=scope):
                    return await self._issue(session, client, generation, scope)
                case Rotate() as rotate:
                    advanced = await self._store.advance_generation(
                        session.id, rotate.from_generation, now, rotate.idle_expires_at
                    )
                    if advanced:
                        # Committed: only now may the successor leave this process.
                        rotated = _rotated(session, rotate, now)
                        return await self._issue(
                            rotated, client, rotate.to_generation, rotate.scope
                        )
                    # Lost the race: re-read; this presentation is now a replay.
                case _:
                    assert_never(decision)
        raise InvalidGrant(detail="rotation contention")

    async def _revoke(
        self,
        session: Session,
        reason: RevocationReason,
        generation: int,
        context: RequestContext,
    ) -> None:
        now = self._clock.now()
        is_reuse = reason is RevocationReason.REUSE_DETECTED
        event = SecurityEvent(
            type=EventType.REUSE_DETECTED if is_reuse else EventType.SESSION_REVOKED,
            at=now,
            user_id=session.user_id,
            client_id=session.client_id,
            session_id=session.id,
            generation=generation,
            reason=reason.value,
            device=context.device,
            detail=f"live generation {session.generation}" if is_reuse else None,
        )
        if is_reuse and self._config.reuse_revokes is ReuseScope.USER:
            await self._store.revoke_user_sessions(session.user_id, reason, now, event)
        else:
            await self._store.revoke_session(session.id, reason, now, event)

    async def _alert(
        self,
        why: Refusal,
        session: Session,
        generation: int,
        client: Client,
        context: RequestContext,
    ) -> None:
        kinds = {
            Refusal.FOREIGN_CLIENT: EventType.FOREIGN_CLIENT_PRESENTED,
            Refusal.FUTURE_GENERATION: EventType.FUTURE_GENERATION_PRESENTED,
        }
        kind = kinds.get(why)
        if kind is None:
            return
        await self._store.record(
            SecurityEvent(
                type=kind,
                at=self._clock.now(),
                user_id=session.user_id,
                client_id=client.id,
                session_id=session.id,
                generation=generation,
                reason=why.value,
                device=context.device,
                detail=f"session client {session.client_id}, live generation {session.generation}",
            )
        )


def _may_refresh(client: Client) -> None:
    if not client.enabled:
        raise InvalidClient(detail="client disabled")
    if GrantType.REFRESH_TOKEN not in client.grant_types:
        raise UnauthorizedClient(detail="client lacks the refresh_token grant")


def _loaded(read: Presentation) -> tuple[Session, User] | None:
    return (read.session, read.user) if read.session and read.user else None


def _rotated(session: Session, rotate: Rotate, now: datetime) -> Session:
    """The session as `advance_generation` just committed it."""
    return replace(
        session,
        generation=rotate.to_generation,
        rotated_at=now,
        last_used_at=now,
        idle_expires_at=rotate.idle_expires_at,
    )
