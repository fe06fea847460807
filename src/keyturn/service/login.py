"""First-party login: username and password to a new session (its generation 0)."""

from __future__ import annotations

import asyncio

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.dpop_binding import admitted_key
from keyturn.core.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    LoginFailed,
    UnauthorizedClient,
)
from keyturn.core.ids import UserId
from keyturn.core.models import Client, Device, GrantType, RevocationReason, Session, User
from keyturn.core.ports import Clock, Randomness, RateLimiter, Store
from keyturn.core.rotation import is_reuse
from keyturn.core.scopes import Scope, narrow
from keyturn.crypto.passwords import MAX_PASSWORD_LENGTH, Passwords
from keyturn.service.config import EngineConfig
from keyturn.service.context import NO_CONTEXT, RequestContext
from keyturn.service.ending import SessionEnding
from keyturn.service.issuing import issue_for_session, new_session
from keyturn.service.lockout import AccountLockout
from keyturn.service.results import IssuedTokens
from keyturn.service.tokens import Tokens

MAX_USERNAME_LENGTH = 256
MAX_DEVICE_NAME_LENGTH = 100


class Login:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        passwords: Passwords,
        clock: Clock,
        randomness: Randomness,
        config: EngineConfig,
        limiter: RateLimiter,
        ending: SessionEnding,
    ) -> None:
        self._lockout = AccountLockout(limiter, config)
        self._ending = ending
        self._store = store
        self._tokens = tokens
        self._passwords = passwords
        self._clock = clock
        self._random = randomness
        self._config = config

    async def login(
        self,
        username: str,
        password: str,
        client: Client,
        *,
        scope: Scope | None = None,
        device_name: str | None = None,
        previous_refresh_token: str | None = None,
        context: RequestContext = NO_CONTEXT,
        key_thumbprint: str | None = None,
    ) -> IssuedTokens:
        """Check the password and open a session for `client`.

        `key_thumbprint`, the key of the request's verified DPoP proof, binds the
        access token and, for a public client, the session (`session_key`).

        Every failure of the credentials (unknown user, wrong password, disabled user)
        raises the same `LoginFailed` after the same work (one Argon2 verify), so the
        answer tells nothing about which it was. `previous_refresh_token`, if the device
        still holds one, ends that older session when it is this client's and this
        user's: as reuse if that token was already rotated out past its retry window,
        else as superseded. Anyone else's is left alone.
        """
        # Bounded before any hashing: an oversized password must not cost an Argon2 run.
        if len(password) > MAX_PASSWORD_LENGTH or len(username) > MAX_USERNAME_LENGTH:
            raise InvalidRequest("The username or password is too long.")
        if device_name is not None and len(device_name) > MAX_DEVICE_NAME_LENGTH:
            raise InvalidRequest("The device name is too long.")
        if not client.enabled:
            raise InvalidClient(detail="client disabled")
        if GrantType.PASSWORD not in client.grant_types:
            raise UnauthorizedClient(detail="client is not a first-party login client")
        # Before the password is hashed: a client held to DPoP is refused cheaply.
        key = admitted_key(client, key_thumbprint)
        granted = narrow(client.scope, scope)
        if granted is None:
            raise InvalidScope

        user = await self.authenticate(username, password, client, context)
        if previous_refresh_token:
            await self._end_previous(previous_refresh_token, user.id, client, context)

        device = Device(
            user_agent=context.device.user_agent, ip=context.device.ip, name=device_name
        )
        session = await self._open_session(user, client, granted, device, key)
        return await issue_for_session(
            self._tokens, self._clock, self._config, session, client, 0, granted, key
        )

    async def authenticate(
        self, username: str, password: str, client: Client, context: RequestContext = NO_CONTEXT
    ) -> User:
        """The user whose password this is, or `LoginFailed` (or `RateLimited`).

        Every failure of the credentials (unknown user, wrong password, disabled user)
        costs one Argon2 verify and raises the same error, so the answer tells nothing
        about which it was.
        """
        if len(password) > MAX_PASSWORD_LENGTH or len(username) > MAX_USERNAME_LENGTH:
            raise InvalidRequest("The username or password is too long.")
        await self._lockout.check(username)  # the right password too, while locked
        user = await self._store.find_user(username) if "\x00" not in username else None
        if not await self._verify(user, password):
            await self._lockout.failed(username)
            await self._store.record(
                SecurityEvent(
                    type=EventType.LOGIN_FAILED,
                    at=self._clock.now(),
                    user_id=user.id if user else None,
                    client_id=client.id,
                    reason="unknown_user" if user is None else "bad_credentials",
                    device=context.device,
                )
            )
            raise LoginFailed
        assert user is not None  # noqa: S101 - _verify is False without a user
        return user

    async def _verify(self, user: User | None, password: str) -> bool:
        # Argon2 is CPU-bound for tens of milliseconds: off the event loop.
        if user is None:
            await asyncio.to_thread(self._passwords.verify_dummy, password)
            return False
        ok = await asyncio.to_thread(self._passwords.verify, user.password_hash, password)
        return ok and user.enabled

    async def _open_session(
        self, user: User, client: Client, scope: Scope, device: Device, key: str | None
    ) -> Session:
        session = await new_session(
            self._tokens,
            self._clock,
            self._random,
            self._config,
            user.id,
            client,
            scope,
            device,
            key_thumbprint=key,
        )
        await self._store.create_session(
            session,
            SecurityEvent(
                type=EventType.LOGIN_SUCCEEDED,
                at=session.created_at,
                user_id=user.id,
                client_id=client.id,
                session_id=session.id,
                generation=0,
                device=device,
            ),
        )
        return session

    async def _end_previous(
        self, token: str, user_id: UserId, client: Client, context: RequestContext
    ) -> None:
        try:
            claims = await self._tokens.decode_refresh(token)
        except InvalidGrant:
            return  # garbage from the device is ignored, never an error at login
        session = await self._store.get_session(claims.session_id)
        if session is None or session.revoked or not self._tokens.salt_matches(claims, session):
            return
        # Another client's session (a second app on this device, or a token a client
        # was handed) or another user's (a shared device) is not this login's to end:
        # ending it would let any client sign any holder of a token out.
        if session.client_id != client.id or session.user_id != user_id:
            return
        now = self._clock.now()
        # The older token was rotated out and its window has passed: someone else went
        # on using that session, so this is reuse, not a simple re-login.
        stale = is_reuse(session, claims.generation, self._config.rotation_policy(client), now)
        await self._ending.end(
            session,
            RevocationReason.REUSE_OUTSIDE_WINDOW
            if stale
            else RevocationReason.SUPERSEDED_AT_LOGIN,
            context=context,
            generation=claims.generation,
        )
