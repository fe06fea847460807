"""Ending sessions: logout, logout everywhere, ending one device, password change,
revoking a refresh token (RFC 7009), and listing a user's devices."""

from __future__ import annotations

import asyncio

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidGrant, InvalidRequest, InvalidToken, LoginFailed, NotFound
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import Client, EndedSession, RevocationReason, Session, User
from keyturn.core.ports import Clock, Store
from keyturn.crypto.passwords import MAX_PASSWORD_LENGTH, Passwords, check_new_password
from keyturn.service.context import NO_CONTEXT, RequestContext
from keyturn.service.ending import SessionEnding
from keyturn.service.lockout import AccountLockout
from keyturn.service.tokens import Tokens


class Sessions:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        passwords: Passwords,
        clock: Clock,
        ending: SessionEnding,
        lockout: AccountLockout,
    ) -> None:
        self._store = store
        self._lockout = lockout
        self._ending = ending
        self._tokens = tokens
        self._passwords = passwords
        self._clock = clock

    async def session_of_refresh_token(self, refresh_token: str, client_id: ClientId) -> Session:
        """The session a refresh token belongs to, for a token of any generation that
        `client_id` holds. `InvalidGrant` for garbage, forgeries, or another client's
        token (ending another client's session is not this caller's to do)."""
        claims = await self._tokens.decode_refresh(refresh_token)
        session = await self._store.get_session(claims.session_id)
        if (
            session is None
            or not self._tokens.salt_matches(claims, session)
            or session.client_id != client_id
        ):
            raise InvalidGrant(detail="unknown session or foreign client")
        return session

    async def logout(
        self,
        refresh_token: str,
        client: Client,
        context: RequestContext = NO_CONTEXT,
        reason: RevocationReason = RevocationReason.LOGOUT,
    ) -> Session:
        """End the session of `refresh_token`. Idempotent: an already ended session is
        not an error. Returns the session as it was."""
        session = await self.session_of_refresh_token(refresh_token, client.id)
        await self.end(session, reason, context)
        return session

    async def end(
        self,
        session: Session,
        reason: RevocationReason,
        context: RequestContext = NO_CONTEXT,
    ) -> list[EndedSession]:
        """End `session` (committed before returning); returns what this call ended."""
        return await self._ending.end(session, reason, context=context)

    async def end_by_id(
        self,
        session_id: SessionId,
        reason: RevocationReason,
        *,
        owner: UserId | None = None,
        context: RequestContext = NO_CONTEXT,
    ) -> Session:
        """End one session by id; with `owner`, only if it is that user's (else
        `NotFound`, so ids of other users' sessions cannot be probed)."""
        session = await self._store.get_session(session_id)
        if session is None or (owner is not None and session.user_id != owner):
            raise NotFound("No such session.")
        await self.end(session, reason, context)
        return session

    async def end_all(
        self,
        user_id: UserId,
        reason: RevocationReason = RevocationReason.LOGOUT_ALL,
        *,
        keep: SessionId | None = None,
        context: RequestContext = NO_CONTEXT,
    ) -> list[EndedSession]:
        """End every live session of the user except `keep`, in one transaction."""
        return await self._ending.end_all(user_id, reason, keep=keep, context=context)

    async def list_for(self, user_id: UserId) -> list[Session]:
        """The user's live sessions, newest first."""
        now = self._clock.now()
        return [
            s
            for s in await self._store.list_sessions(user_id)
            if not s.revoked and now < s.idle_expires_at and now < s.absolute_expires_at
        ]

    async def holder(self, session: Session) -> User:
        """The user a live session's access token speaks for: `InvalidToken` if that
        user is gone or disabled, when the token speaks for no one."""
        user = await self._store.get_user(session.user_id)
        if user is None or not user.enabled:
            raise InvalidToken
        return user

    async def change_password(
        self,
        user_id: UserId,
        current_password: str,
        new_password: str,
        *,
        keep: SessionId | None,
        context: RequestContext = NO_CONTEXT,
    ) -> list[EndedSession]:
        """Change the password after checking the current one; ends every session of
        the user but `keep` (the one making the change). Returns the ended sessions.

        The check of the current password is a password guess like a login's: under the
        same per-account lockout (`AccountLockout`, `RateLimited` while locked, even for
        the right password), each failure counted and audited as a failed login."""
        if max(len(current_password), len(new_password)) > MAX_PASSWORD_LENGTH:
            raise InvalidRequest("The password is too long.")
        user = await self._store.get_user(user_id)
        if user is None or not user.enabled:
            raise LoginFailed
        await self._lockout.check(user.username)
        ok = await asyncio.to_thread(self._passwords.verify, user.password_hash, current_password)
        if not ok:
            await self._lockout.failed(user.username)
            await self._store.record(
                SecurityEvent(
                    type=EventType.LOGIN_FAILED,
                    at=self._clock.now(),
                    user_id=user.id,
                    reason="wrong_current_password",
                    device=context.device,
                )
            )
            raise LoginFailed("The current password is wrong.")
        check_new_password(new_password, user.username)
        new_hash = await asyncio.to_thread(self._passwords.hash, new_password)
        now = self._clock.now()
        return await self._store.change_password(
            user_id,
            new_hash,
            now,
            keep,
            SecurityEvent(
                type=EventType.PASSWORD_CHANGED,
                at=now,
                user_id=user_id,
                session_id=keep,
                reason=RevocationReason.PASSWORD_CHANGED.value,
                device=context.device,
            ),
        )
