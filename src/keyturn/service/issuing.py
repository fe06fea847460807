"""Opening a session, and minting the answer of a grant that has been decided and
committed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from keyturn.core.dpop_binding import session_key
from keyturn.core.ids import SessionId, UserId
from keyturn.core.models import Client, Device, Session
from keyturn.core.ports import Clock, Randomness
from keyturn.core.scopes import Scope, format_scope
from keyturn.service.config import EngineConfig
from keyturn.service.results import IssuedTokens, token_type_of
from keyturn.service.tokens import Tokens


async def issue_for_session(
    tokens: Tokens,
    clock: Clock,
    config: EngineConfig,
    session: Session,
    client: Client,
    generation: int,
    scope: Scope,
    key_thumbprint: str | None = None,
) -> IssuedTokens:
    """Sign an access token for `session` and re-derive its refresh token of
    `generation`. Call only once the state that makes both valid is committed (I2).
    The access token never outlives the session's absolute deadline (I5). With
    `key_thumbprint` (the request's valid DPoP proof) the access token is bound to
    that key (`cnf.jkt`) and its type is `DPoP` (RFC 9449 §5, §6.1)."""
    issued_at = clock.now()
    ttl = config.lifetimes_for(client).access_token_ttl
    expires_at = session.access_token_expiry(issued_at, ttl)
    text_scope = format_scope(scope)
    access_token = await tokens.mint_access(
        subject=session.user_id,
        client=client,
        scope=text_scope,
        session_id=session.id,
        issued_at=issued_at,
        expires_at=expires_at,
        key_thumbprint=key_thumbprint,
    )
    return IssuedTokens(
        access_token=access_token,
        expires_in=int((expires_at - issued_at).total_seconds()),
        scope=text_scope,
        refresh_token=await tokens.encode_refresh(session, generation),
        session_id=session.id,
        refresh_expires_at=session.idle_expires_at,
        token_type=token_type_of(key_thumbprint),
    )


async def new_session(
    tokens: Tokens,
    clock: Clock,
    randomness: Randomness,
    config: EngineConfig,
    user_id: UserId,
    client: Client,
    scope: Scope,
    device: Device,
    authenticated_at: datetime | None = None,
    key_thumbprint: str | None = None,
) -> Session:
    """A new session at generation 0, not yet stored: its deadlines from the client's
    lifetimes, a fresh salt, the active MAC key, and its refresh tokens bound to the
    DPoP key of `key_thumbprint` when the client is one whose are (`session_key`)."""
    now = clock.now()
    lifetimes = config.lifetimes_for(client)
    absolute = now + timedelta(seconds=lifetimes.session_max_ttl)
    return Session(
        id=SessionId(str(uuid.UUID(bytes=randomness.token_bytes(16), version=4))),
        user_id=user_id,
        client_id=client.id,
        scope=scope,
        salt=tokens.new_salt(),
        generation=0,
        mac_key_id=await tokens.active_mac_key_id(),
        created_at=now,
        last_used_at=now,
        rotated_at=None,
        idle_expires_at=min(now + timedelta(seconds=lifetimes.session_idle_ttl), absolute),
        absolute_expires_at=absolute,
        device=device,
        authenticated_at=authenticated_at,
        dpop_jkt=session_key(client, key_thumbprint),
    )
