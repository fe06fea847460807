"""Ending sessions: the one path every use case takes to end a session.

Logout, reuse, a replayed code, an administrator, an expired session, an RFC 7009
revocation: each names a reason from the closed set (`RevocationReason`), and this
decides the rest in one place: what the audit event says, and whether a theft ends the
session alone or every session of its user (`KEYTURN_REUSE_REVOKES`). The revocation
and its audit row are one atomic store call, committed even though the request that
decided it will fail.

Ending sessions as part of another change (a user disabled, a password changed, a
client disabled) stays inside that change's own store operation, so the change and
the revocations commit together; those operations carry their reasons themselves.
"""

from __future__ import annotations

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.ids import SessionId, UserId
from keyturn.core.models import EndedSession, RevocationReason, Session
from keyturn.core.ports import Clock, Store
from keyturn.service.config import EngineConfig, ReuseScope
from keyturn.service.context import NO_CONTEXT, RequestContext


class SessionEnding:
    def __init__(self, store: Store, clock: Clock, config: EngineConfig) -> None:
        self._store = store
        self._clock = clock
        self._config = config

    async def end(
        self,
        session: Session,
        reason: RevocationReason,
        *,
        context: RequestContext = NO_CONTEXT,
        generation: int | None = None,
        detail: str | None = None,
    ) -> list[EndedSession]:
        """End `session` for `reason`, committed before returning, and return what this
        call ended (nothing if it had ended already; the event is recorded either way).
        `generation` is the one presented, when a token was."""
        now = self._clock.now()
        event = SecurityEvent(
            type=EventType.REUSE_DETECTED if reason.signals_theft else EventType.SESSION_REVOKED,
            at=now,
            user_id=session.user_id,
            client_id=session.client_id,
            session_id=session.id,
            generation=session.generation if generation is None else generation,
            reason=reason.value,
            device=context.device,
            detail=detail,
        )
        # A token in two hands may mean the user's other devices are reached too (the
        # same stolen backup, the same compromised machine): the operator chooses.
        if reason.signals_theft and self._config.reuse_revokes is ReuseScope.USER:
            return await self._store.revoke_user_sessions(session.user_id, reason, now, event)
        return await self._store.revoke_session(session.id, reason, now, event)

    async def end_all(
        self,
        user_id: UserId,
        reason: RevocationReason,
        *,
        keep: SessionId | None = None,
        context: RequestContext = NO_CONTEXT,
    ) -> list[EndedSession]:
        """End every live session of the user except `keep`, in one transaction."""
        now = self._clock.now()
        return await self._store.revoke_user_sessions(
            user_id,
            reason,
            now,
            SecurityEvent(
                type=EventType.REUSE_DETECTED
                if reason.signals_theft
                else EventType.SESSION_REVOKED,
                at=now,
                user_id=user_id,
                session_id=keep,
                reason=reason.value,
                device=context.device,
                detail="all sessions" if keep is None else "all other sessions",
            ),
            keep=keep,
        )
