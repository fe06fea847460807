"""Looking at a presented token from outside: revocation (RFC 7009) and introspection
(RFC 7662), for refresh tokens and access tokens alike; and the access token that acts
for a user at keyturn's own account API."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from keyturn.core.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidToken,
    KeyturnError,
)
from keyturn.core.ids import ClientId, SessionId
from keyturn.core.models import Client, GrantType, RevocationReason, Session, User
from keyturn.core.ports import Clock, Store
from keyturn.crypto.access_tokens import InvalidAccessToken, verify
from keyturn.crypto.refresh_codec import PREFIX
from keyturn.service.config import EngineConfig
from keyturn.service.context import NO_CONTEXT, RequestContext
from keyturn.service.dpop_proofs import DpopProofs, ProofRequest
from keyturn.service.ending import SessionEnding
from keyturn.service.tokens import Tokens

INACTIVE: dict[str, Any] = {"active": False}
"""RFC 7662 §2.2: an inactive token's answer says nothing more, not even why."""

ACCOUNT_SCOPE = "keyturn:account"
"""The scope that lets a client other than a first-party login client act at the
account API (`/auth/sessions`, `/auth/logout-all`, `/auth/password`)."""


class InsufficientScope(KeyturnError):
    """A valid access token for keyturn whose client may not act at the account API:
    neither a first-party login client nor granted `ACCOUNT_SCOPE` (RFC 6750 §3.1)."""

    code = "insufficient_scope"
    default_public = "The access token does not grant access to the account."
    required: ClassVar[str] = ACCOUNT_SCOPE


class AccountAccess(enum.Enum):
    GRANTED = "granted"
    REFUSED = "refused"
    """Not a token that acts for the user here: `invalid_token`."""
    NEEDS_ACCOUNT_SCOPE = "needs_account_scope"
    """A good token of a client that may not act for the user here."""


def account_access(
    claims: dict[str, Any], session: Session, user: User | None, client: Client | None
) -> AccountAccess:
    """Whether an access token of keyturn's own audience (checked with its signature)
    of the live `session` may act for the user at the account API.

    RFC 9068 §4 and RFC 8725 §3.9: a token is used only where its audience and scope
    say. Keyturn's audience alone is not enough: a code client registered without an
    audience gets it by default, and may hand its tokens to an API of its own. So the
    client must be a first-party login client (the password grant: it already holds
    the user's password) or the token must carry `ACCOUNT_SCOPE`.
    """
    if user is None or not user.enabled:
        return AccountAccess.REFUSED
    # The rule of the refresh (`keyturn.core.rotation`): a session that authenticated
    # before the user's last password change acts for them no more. The session that
    # made the change was re-stamped by it (`UserStore.change_password`).
    if user.password_changed_at > session.auth_time:
        return AccountAccess.REFUSED
    if client is None or not client.enabled or claims.get("client_id") != session.client_id:
        return AccountAccess.REFUSED
    if GrantType.PASSWORD in client.grant_types:
        return AccountAccess.GRANTED
    scope = claims.get("scope")
    if isinstance(scope, str) and ACCOUNT_SCOPE in scope.split(" "):
        return AccountAccess.GRANTED
    return AccountAccess.NEEDS_ACCOUNT_SCOPE


@dataclass(frozen=True, slots=True)
class _Found:
    session: Session | None
    client_id: str
    claims: dict[str, Any] | None


class Inspection:
    def __init__(
        self,
        store: Store,
        tokens: Tokens,
        clock: Clock,
        config: EngineConfig,
        ending: SessionEnding,
        proofs: DpopProofs | None = None,
    ) -> None:
        self._proofs = proofs
        self._store = store
        self._tokens = tokens
        self._clock = clock
        self._config = config
        self._ending = ending

    async def _find(
        self, token: str, *, access_of: str | None = None, audience: str | None = None
    ) -> _Found | None:
        """The session (and claims) a token names, if it is one of ours; else None.

        With `access_of`, an access token of any other client is None before its
        session is read: its signed `client_id` says whose it is, so a foreign one
        costs no more database work than garbage. A refresh token names only its
        session: whose it is, only the session row can say. With `audience`, so is an
        access token whose `aud` does not name it.
        """
        if token.startswith(PREFIX):
            try:
                claims = await self._tokens.decode_refresh(token)
            except InvalidGrant:
                return None
            session = await self._store.get_session(claims.session_id)
            if session is None or not self._tokens.salt_matches(claims, session):
                return None
            return _Found(session, session.client_id, {"generation": claims.generation})
        ring = await self._tokens.ring()
        try:
            at_claims = verify(
                token,
                ring.verification_keys,
                issuer=self._config.issuer,
                audience=audience,
                now=self._clock.now(),
                leeway=0,
                max_lifetime=self._config.lifetimes.access_token_ttl + 60,
            )
        except InvalidAccessToken:
            return None
        if access_of is not None and at_claims.get("client_id") != access_of:
            return None
        sid = at_claims.get("sid")
        session = await self._store.get_session(SessionId(sid)) if isinstance(sid, str) else None
        return _Found(session, str(at_claims["client_id"]), at_claims)

    async def bearer_session(self, token: str | None, proof: ProofRequest | None = None) -> Session:
        """The live session an access token belongs to, for the account API (the
        first-party endpoints that act for the user): `InvalidToken` for anything else,
        `InsufficientScope` for a good token whose client may not act there
        (`account_access`).

        Only a token whose `aud` names keyturn itself (its issuer) is looked at: one
        issued for a resource server is refused before its session is read, so that
        server cannot replay its users' tokens here (RFC 8725 §3.9).

        `proof` is None for a token sent as `Authorization: Bearer`, which must not be
        bound to a DPoP key: a bound token is worth nothing without its key (RFC 9449
        §7.1), or a copied one would work as a bearer token here. With `proof` (the
        `DPoP` scheme) the token must be bound, and the request carry a proof of its
        key with its hash (`InvalidDpopProof`, `UseDpopNonce`).
        """
        if not token or token.startswith(PREFIX):
            raise InvalidToken
        found = await self._find(token, audience=self._config.issuer)
        bound = _confirmed_key(found.claims) if found is not None else None
        if proof is None and bound is not None:
            raise InvalidToken(detail="DPoP-bound access token sent as a bearer token")
        if proof is not None and bound is None:
            raise InvalidToken(detail="unbound access token sent with the DPoP scheme")
        session = found.session if found is not None else None
        now = self._clock.now()
        if (
            found is None
            or session is None
            or session.revoked
            or now >= session.idle_expires_at
            or now >= session.absolute_expires_at
        ):
            raise InvalidToken
        claims = found.claims or {}
        user = await self._store.get_user(session.user_id)
        client = await self._store.get_client(ClientId(found.client_id))
        access = account_access(claims, session, user, client)
        if access is AccountAccess.REFUSED:
            raise InvalidToken(detail="not a token of this user's account")
        if proof is not None and bound is not None:
            if self._proofs is None:
                raise InvalidToken(detail="DPoP is not configured")
            await self._proofs.check_resource(proof, token, bound)
        # Told only to the holder of the token (and of its key): the token is good,
        # its client may not act here (RFC 6750 §3.1).
        if access is AccountAccess.NEEDS_ACCOUNT_SCOPE:
            raise InsufficientScope(detail=f"client {found.client_id} lacks {ACCOUNT_SCOPE}")
        return session

    async def revoke(
        self, token: str, client: Client, context: RequestContext = NO_CONTEXT
    ) -> None:
        """RFC 7009 §2.1: end the session of a refresh or access token of `client`.

        Unknown, malformed or expired tokens, and those of a session that has ended,
        succeed silently and change nothing (§2.2). A token of another client is refused
        for a confidential caller (`invalid_request`) and ignored for a public one, and
        stays live either way: one client never ends another's session.
        """
        found = await self._find(token)
        if found is None or found.session is None:
            return
        if found.client_id != client.id:
            if client.is_confidential:
                raise InvalidRequest("The token was not issued to this client.")
            return
        session = found.session
        if session.revoked or self._clock.now() >= session.absolute_expires_at:
            # Nothing is left to end: the session has ended, and no access token outlives
            # its absolute deadline. An invalid token changes nothing (§2.2), not even
            # the audit trail. Decided after the client check, so another client learns
            # nothing of the session's state. An idle-expired session is still ended:
            # its last access token may outlive the idle deadline (§2.1).
            return
        await self._ending.end(session, RevocationReason.TOKEN_REVOKED, context=context)

    @staticmethod
    def authorize_introspection(caller: Client) -> None:
        """RFC 7662 §2.1: `InvalidClient` unless `caller` may introspect at all.

        A public client is authenticated by its `client_id` alone, which anyone can
        send (RFC 6749 §2.1, §10.1): answering it would let whoever holds a copied
        refresh token watch for the moment its owner rotates it, the token-state oracle
        RFC 7662 §4 warns of. It is refused as an unauthenticated caller is, before the
        token is read, so the refusal is the same for every token.
        """
        if not caller.is_confidential:
            raise InvalidClient(detail="a public client may not introspect")

    async def introspect(self, token: str, caller: Client) -> dict[str, Any]:
        """RFC 7662 §2.2 for `token`, asked by an authenticated `caller`.

        A public caller is refused (`authorize_introspection`). A confidential one is
        told the state of its own tokens, and a resource server (`can_introspect`)
        also of any access token. Everything else is `INACTIVE`, as garbage is: another
        client's refresh token (even to a resource server, which never receives one:
        RFC 6749 §1.5), another's access token, an unknown, rotated or ended token.
        """
        self.authorize_introspection(caller)
        found = await self._find(token, access_of=None if caller.can_introspect else caller.id)
        if found is None:
            return INACTIVE
        is_refresh = found.claims is not None and "generation" in found.claims
        if found.client_id != caller.id and (is_refresh or not caller.can_introspect):
            # RFC 7662 §2.2, §4: a token the caller may not introspect is answered as an
            # inactive one, decided before the session's state is looked at, so live,
            # rotated and ended tokens of others cost the same and read the same.
            return INACTIVE
        now = self._clock.now()
        session = found.session
        live = session is not None and not session.revoked and now < session.idle_expires_at
        if session is not None and now >= session.absolute_expires_at:
            live = False
        if found.claims is not None and "generation" in found.claims:
            if session is None or not live or found.claims["generation"] != session.generation:
                return INACTIVE
            refresh: dict[str, Any] = {
                "active": True,
                "token_type": "refresh_token",
                "client_id": session.client_id,
                "sub": session.user_id,
                "scope": " ".join(sorted(session.scope)),
                "exp": int(session.idle_expires_at.timestamp()),
                "iss": self._config.issuer,
                "sid": session.id,
            }
            if session.dpop_jkt is not None:
                # RFC 9449 §6.2: the key a bound token is usable with.
                refresh["cnf"] = {"jkt": session.dpop_jkt}
            return refresh
        claims = found.claims or {}
        # A session's access token dies with the session; a client's own has none.
        if "sid" in claims and not live:
            return INACTIVE
        bound = _confirmed_key(claims)
        # RFC 9449 §6.2: a bound token is introspected with its `cnf` and type DPoP.
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer" if bound is None else "DPoP",
        }
        for name in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "sid"):
            if name in claims:
                answer[name] = claims[name]
        if bound is not None:
            answer["cnf"] = {"jkt": bound}
        return answer


def _confirmed_key(claims: dict[str, Any] | None) -> str | None:
    """The `cnf.jkt` of an access token's claims (RFC 9449 §6.1), or None. keyturn
    signs every `cnf` it issues, so any other shape is not one of its tokens."""
    cnf = (claims or {}).get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) else None
