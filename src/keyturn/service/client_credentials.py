"""The client credentials grant (RFC 6749 §4.4): an access token for the client itself,
no session and no refresh token (§4.4.3: "A refresh token SHOULD NOT be included").
Its `sub` is the client's id (RFC 9068 §2.2), never a UUID, so never a user's."""

from __future__ import annotations

from datetime import timedelta

from keyturn.core.dpop_binding import admitted_key
from keyturn.core.errors import InvalidScope, UnauthorizedClient
from keyturn.core.ids import is_user_id_shaped
from keyturn.core.models import Client, GrantType
from keyturn.core.ports import Clock
from keyturn.core.scopes import Scope, format_scope, narrow
from keyturn.service.config import EngineConfig
from keyturn.service.results import IssuedTokens, token_type_of
from keyturn.service.tokens import Tokens


class ClientCredentialsGrant:
    def __init__(self, tokens: Tokens, clock: Clock, config: EngineConfig) -> None:
        self._tokens = tokens
        self._clock = clock
        self._config = config

    async def issue(
        self,
        client: Client,
        requested_scope: Scope | None = None,
        key_thumbprint: str | None = None,
    ) -> IssuedTokens:
        """An access token for `client`, bound to the DPoP key of `key_thumbprint` (the
        request's verified proof) if given (RFC 9449 §5)."""
        if not client.is_confidential or GrantType.CLIENT_CREDENTIALS not in client.grant_types:
            raise UnauthorizedClient(detail="client lacks the client_credentials grant")
        if is_user_id_shaped(client.id):
            # RFC 9068 §5: this token's `sub` is the client's id; one shaped like a
            # user's (a row stored before registration refused them) could pass for
            # that user at a resource server.
            raise UnauthorizedClient(detail="client id shaped like a user's sub")
        key = admitted_key(client, key_thumbprint)
        scope = narrow(client.scope, requested_scope)
        if scope is None:
            raise InvalidScope
        now = self._clock.now()
        ttl = self._config.lifetimes_for(client).access_token_ttl
        text = format_scope(scope)
        token = await self._tokens.mint_access(
            subject=client.id,
            client=client,
            scope=text,
            session_id=None,
            issued_at=now,
            expires_at=now + timedelta(seconds=ttl),
            key_thumbprint=key,
        )
        return IssuedTokens(
            access_token=token,
            expires_in=ttl,
            scope=text,
            refresh_token=None,
            session_id=None,
            refresh_expires_at=None,
            token_type=token_type_of(key),
        )
