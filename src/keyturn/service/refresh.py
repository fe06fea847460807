"""The refresh grant: rotate a refresh token (RFC 6749 §6, RFC 9700 §4.14.2).

Both surfaces (`/oauth/token` and `/auth/refresh`) call `Refresher.refresh`; the rules
themselves live in `keyturn.core.rotation`, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol, assert_never, runtime_checkable

from keyturn.core.audit import EventType, SecurityEvent, live_generation_note
from keyturn.core.dpop_binding import admitted_key
from keyturn.core.errors import InvalidClient, InvalidGrant, InvalidScope, UnauthorizedClient
from keyturn.core.ids import ClientId
from keyturn.core.models import (
    Attempted,
    Client,
    GrantType,
    NotRotated,
    Presentation,
    RevocationReason,
    Rotated,
    RotationAttempt,
    Session,
    User,
)
from keyturn.core.ports import Clock, Store
from keyturn.core.rotation import (
    Decision,
    Keep,
    Presented,
    RefreshOutcome,
    Refusal,
    Refuse,
    Replay,
    Revoke,
    Rotate,
    UserState,
    decide,
    outcome_of,
)
from keyturn.core.scopes import Scope, parse_scope
from keyturn.crypto.refresh_codec import RefreshClaims
from keyturn.service.client_auth import ClientAuthenticator, ClientCredentials
from keyturn.service.config import EngineConfig
from keyturn.service.context import NO_CONTEXT, RequestContext
from keyturn.service.ending import SessionEnding
from keyturn.service.issuing import issue_for_session
from keyturn.service.results import IssuedTokens
from keyturn.service.tokens import Tokens

# A lost compare-and-swap means another request rotated, replayed or revoked the
# session between our read and our write; re-reading settles it. Replays of one
# generation by many tabs at once each write the replay log, so a few rounds are normal.
_MAX_ATTEMPTS = 8


@runtime_checkable
class RefreshObserver(Protocol):
    def refreshed(self, client_id: ClientId, outcome: RefreshOutcome) -> None:
        """A presentation of a refresh token by `client_id` came to `outcome`, committed.
        Called on the request path: it must be cheap and must not raise."""
        ...


class Refresher:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        clock: Clock,
        config: EngineConfig,
        clients: ClientAuthenticator,
        ending: SessionEnding,
        observers: Sequence[RefreshObserver] = (),
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._clock = clock
        self._config = config
        self._clients = clients
        self._ending = ending
        self._observers = tuple(observers)

    def _observe(self, client: Client, outcome: RefreshOutcome) -> None:
        for observer in self._observers:
            observer.refreshed(client.id, outcome)

    async def refresh(
        self,
        refresh_token: str,
        client: Client,
        requested_scope: Scope | None = None,
        context: RequestContext = NO_CONTEXT,
        key_thumbprint: str | None = None,
    ) -> IssuedTokens:
        """Exchange a refresh token presented by the already-authenticated `client`.

        `key_thumbprint` is that of the request's DPoP proof, already verified (RFC
        9449 §4.3), or None without one. A session bound to a key is rotated only with
        a proof of that key; without one, or with another, it ends (`decide`).

        Raises `InvalidGrant`, `InvalidScope`, `UnauthorizedClient`, `InvalidClient`,
        `InvalidDpopProof` or `StoreUnavailable`. A revocation decided on the way is
        committed before the error is raised; a token is minted only after the state
        that makes it valid is committed (I2).
        """
        _may_refresh(client)
        key = admitted_key(client, key_thumbprint)
        # Rule 1: checksum and MAC before any database work.
        claims = await self._decode(refresh_token, client)
        loaded = None
        if requested_scope is None and self._rotates(client):
            # Safe with a key or without: the attempt's guard never rotates a bound
            # session, which goes on to `decide` and its key check below.
            match await self._attempt(claims, client, context):
                case Rotated(session):
                    return await self._issue_rotated(session, client, key)
                case NotRotated(read):
                    loaded = _loaded(read)
        return await self._rotate(claims, client, loaded, requested_scope, context, key)

    async def refresh_for(
        self,
        credentials: ClientCredentials,
        refresh_token: str,
        scope: str | None = None,
        context: RequestContext = NO_CONTEXT,
        key_thumbprint: str | None = None,
    ) -> IssuedTokens:
        """`refresh` for a client still to be authenticated, as `/oauth/token` receives
        it, with the `scope` parameter as sent: the client, the session and its user are
        read in one query. The answers are those of `ClientAuthenticator.authenticate`,
        then the scope's syntax (`InvalidScope`), then `refresh`: a client that fails to
        authenticate gets `InvalidClient` whatever the token and the scope."""
        self._clients.check_shape(credentials)
        try:
            claims = await self._tokens.decode_refresh(refresh_token)
        except InvalidGrant:
            # Nothing to read the client with: it is authenticated alone, and answers first.
            client = await self._clients.authenticate(credentials)
            parse_scope(scope)
            _may_refresh(client)
            self._observe(client, RefreshOutcome.INVALID_TOKEN)
            raise
        known = self._clients.remembered(credentials.client_id)
        if known is not None and scope is None and self._rotates(known):
            # The hot path, one round trip: authenticated against the client as this
            # process last read it, and the attempt's guard holds the database to that
            # very client (enabled, same secret), so nothing is read first.
            client = await self._clients.check(credentials, known)
            _may_refresh(client)
            key = admitted_key(client, key_thumbprint)
            # The attempt's guard refuses a session bound to a DPoP key (`dpop_jkt IS
            # NULL`): such a session is read, and `decide` checks the proof's key.
            match await self._attempt(claims, client, context):
                case Rotated(session):
                    return await self._issue_rotated(session, client, key)
                case NotRotated(read):
                    pass  # decided on below, as a presentation read on its own is
        else:
            read = await self._store.get_presentation(
                ClientId(credentials.client_id), claims.session_id
            )
        client = await self._clients.check(credentials, read.client)
        requested_scope = parse_scope(scope)
        _may_refresh(client)
        key = admitted_key(client, key_thumbprint)
        return await self._rotate(claims, client, _loaded(read), requested_scope, context, key)

    async def _decode(self, refresh_token: str, client: Client) -> RefreshClaims:
        try:
            return await self._tokens.decode_refresh(refresh_token)
        except InvalidGrant:
            self._observe(client, RefreshOutcome.INVALID_TOKEN)
            raise

    def _rotates(self, client: Client) -> bool:
        """Whether the one-round-trip attempt may serve `client`: it rotates, and a
        client whose tokens do not rotate must not be rotated."""
        return self._config.rotation_policy(client).rotate

    async def _attempt(
        self, claims: RefreshClaims, client: Client, context: RequestContext
    ) -> Attempted:
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
                ip=context.device.ip,
            )
        )

    async def _issue_rotated(
        self, rotated: Session, client: Client, key: str | None
    ) -> IssuedTokens:
        """The tokens of a rotation the store committed: the successor's refresh token,
        an access token of the session's scope (no narrower scope was asked for)."""
        self._observe(client, RefreshOutcome.ROTATED)
        return await self._issue(rotated, client, rotated.generation, rotated.scope, key)

    async def _issue(
        self, session: Session, client: Client, generation: int, scope: Scope, key: str | None
    ) -> IssuedTokens:
        """Mint for `session`. The access token is bound to the request's proof key
        (RFC 9449 §5), even when the session is not: a session opened without a proof
        is never bound later (`docs/decisions.md`), but this access token still is.
        For a bound session `decide` has made sure `key` is the session's own."""
        return await issue_for_session(
            self._tokens, self._clock, self._config, session, client, generation, scope, key
        )

    async def _rotate(
        self,
        claims: RefreshClaims,
        client: Client,
        loaded: tuple[Session, User] | None,
        requested_scope: Scope | None,
        context: RequestContext,
        key: str | None,
    ) -> IssuedTokens:
        """Decide and commit the rotation of `claims`; `loaded` is the session and user
        already read for the first round (None: read them here); `key` the thumbprint
        of the request's DPoP proof."""
        for attempt in range(_MAX_ATTEMPTS):
            if attempt or loaded is None:
                loaded = await self._store.get_session_with_user(claims.session_id)
            if loaded is None or not self._tokens.salt_matches(claims, loaded[0]):
                self._observe(client, RefreshOutcome.INVALID_TOKEN)
                raise InvalidGrant(detail="unknown session")
            session, user = loaded
            now = self._clock.now()
            decision = decide(
                session,
                UserState(enabled=user.enabled, password_changed_at=user.password_changed_at),
                Presented(claims.generation, client.id, requested_scope, key, context.device.ip),
                self._config.rotation_policy(client),
                now,
            )
            issued = await self._settle(decision, session, claims, client, now, context, key)
            if issued is not None:
                return issued
        raise InvalidGrant(detail="rotation contention")

    async def _settle(
        self,
        decision: Decision,
        session: Session,
        claims: RefreshClaims,
        client: Client,
        now: datetime,
        context: RequestContext,
        key: str | None,
    ) -> IssuedTokens | None:
        """Commit `decision` and mint, or raise; None when the session moved since it
        was read (the caller reads again and decides again)."""
        match decision:
            case Refuse(why=why):
                await self._alert(why, session, claims.generation, client, context)
                self._observe(client, outcome_of(decision))
                if why is Refusal.SCOPE_TOO_WIDE:
                    raise InvalidScope
                raise InvalidGrant(detail=why.value)
            case Revoke(reason=reason):
                await self._revoke(session, reason, claims.generation, context, key)
                self._observe(client, outcome_of(decision))
                raise InvalidGrant(detail=reason.value)
            case Replay(generation=generation, scope=scope, outcome=outcome, log=log):
                event = self._replayed(session, claims.generation, outcome, context)
                if not await self._store.record_replay(session.id, session.replays, log, event):
                    return None  # another replay or a revocation came first
                self._observe(client, outcome)
                return await self._issue(session, client, generation, scope, key)
            case Keep(generation=generation, idle_expires_at=idle, scope=scope):
                if not await self._store.keep_session(session.id, generation, now, idle):
                    return None  # revoked in between, or rotated under another policy
                self._observe(client, RefreshOutcome.KEPT)
                kept = replace(session, last_used_at=now, idle_expires_at=idle)
                return await self._issue(kept, client, generation, scope, key)
            case Rotate() as rotate:
                ip = context.device.ip
                advanced = await self._store.advance_generation(
                    session.id, rotate.from_generation, now, rotate.idle_expires_at, ip
                )
                if not advanced:
                    return None  # lost the race: this presentation is now a replay
                # Committed: only now may the successor leave this process.
                self._observe(client, RefreshOutcome.ROTATED)
                rotated = _rotated(session, rotate, now, ip)
                return await self._issue(rotated, client, rotate.to_generation, rotate.scope, key)
            case _:
                assert_never(decision)

    def _replayed(
        self,
        session: Session,
        generation: int,
        outcome: RefreshOutcome,
        context: RequestContext,
    ) -> SecurityEvent:
        """The audit event of a replay: every replay is on the record, so an operator
        sees a session that replays on every rotation (and `sessions explain` shows it)."""
        return SecurityEvent(
            type=EventType.REFRESH_REPLAYED,
            at=self._clock.now(),
            user_id=session.user_id,
            client_id=session.client_id,
            session_id=session.id,
            generation=generation,
            reason=outcome.value,
            device=context.device,
            detail=live_generation_note(session.generation),
        )

    async def _revoke(
        self,
        session: Session,
        reason: RevocationReason,
        generation: int,
        context: RequestContext,
        key: str | None,
    ) -> None:
        detail = live_generation_note(session.generation) if reason.signals_theft else None
        if reason is RevocationReason.REUSE_KEY_MISMATCH:
            # Thumbprints are public values; they tell the operator which key came.
            presented = f"DPoP key {key}" if key else "no DPoP proof"
            detail = f"{detail}; {presented}, session key {session.dpop_jkt}"
        await self._ending.end(
            session, reason, context=context, generation=generation, detail=detail
        )

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
                detail=f"session client {session.client_id}, "
                + live_generation_note(session.generation),
            )
        )


def _may_refresh(client: Client) -> None:
    if not client.enabled:
        raise InvalidClient(detail="client disabled")
    if GrantType.REFRESH_TOKEN not in client.grant_types:
        raise UnauthorizedClient(detail="client lacks the refresh_token grant")


def _loaded(read: Presentation) -> tuple[Session, User] | None:
    return (read.session, read.user) if read.session and read.user else None


def _rotated(session: Session, rotate: Rotate, now: datetime, ip: str | None) -> Session:
    """The session as `advance_generation` just committed it."""
    return replace(
        session,
        generation=rotate.to_generation,
        rotated_at=now,
        rotated_ip=ip,
        last_used_at=now,
        idle_expires_at=rotate.idle_expires_at,
    )
