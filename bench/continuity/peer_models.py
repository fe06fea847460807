"""Models of the peers' documented rotation policies, in plain Python (no server runs).

Each model is written from the peer's public documentation or maintainers' words (the
`sources` of each), not from its code, and keeps only what decides the outcome of a
presented refresh token: which token is live, what an older one gets, and when the
family is revoked. Every model refuses tokens of a revoked family and reports the
revocation time, as keyturn's adapter does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bench.continuity.server import Answer, Issued, Refused, Token


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    name: str
    systems: str
    summary: str
    sources: tuple[str, ...]

    def server(self) -> PeerServer:
        raise NotImplementedError


class PeerServer:
    """Family bookkeeping shared by the models."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._ids = itertools.count()
        self.revoked: dict[int, float] = {}

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        raise NotImplementedError

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        raise NotImplementedError

    def _family(self) -> int:
        return next(self._ids)

    def _token(self, family: int, value: int) -> Token:
        return Token((self._label, family), value)

    def _revoke(self, family: int, now: float) -> Refused:
        self.revoked.setdefault(family, now)
        return Refused(self.revoked[family])

    @staticmethod
    def _unpack(token: Token) -> tuple[int, int]:
        family = token.family
        assert isinstance(family, tuple)
        assert isinstance(token.value, int)
        return int(family[1]), token.value


# --- time window, new token on every reuse (Auth0, Okta, Ory Hydra, Clerk) ---------


@dataclass(slots=True)
class _Minted:
    parent: int | None
    used_at: float | None = None
    reuses: int = 0
    child_used: bool = False


@dataclass(frozen=True, slots=True)
class WindowNewToken(PeerPolicy):
    """Inside a leeway after its first use, a used token mints a *new* token (the chain
    branches); only the immediate predecessor qualifies (a token one of whose children
    was already used is not); outside the leeway any used token is reuse and revokes the
    family. `max_reuses` bounds the reuses of one token (Clerk: once)."""

    leeway: float = 30.0
    max_reuses: int | None = None

    def server(self) -> PeerServer:
        return _WindowNewTokenServer(self)


class _WindowNewTokenServer(PeerServer):
    def __init__(self, policy: WindowNewToken) -> None:
        super().__init__(policy.name)
        self._policy = policy
        self._tokens: dict[int, dict[int, _Minted]] = {}
        self._next = itertools.count()

    def _mint(self, family: int, parent: int | None) -> Token:
        ident = next(self._next)
        self._tokens[family][ident] = _Minted(parent)
        return self._token(family, ident)

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        family = self._family()
        self._tokens[family] = {}
        return self._mint(family, None)

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        family, ident = self._unpack(token)
        if family in self.revoked:
            return Refused(self.revoked[family])
        minted = self._tokens[family]
        state = minted[ident]
        if state.used_at is None:
            state.used_at = now
            if state.parent is not None:
                minted[state.parent].child_used = True
            return Issued(self._mint(family, ident))
        policy = self._policy
        if (
            now - state.used_at <= policy.leeway
            and not state.child_used
            and (policy.max_reuses is None or state.reuses < policy.max_reuses)
        ):
            state.reuses += 1
            return Issued(self._mint(family, ident))
        return self._revoke(family, now)


# --- parent accepted until the child is used (Supabase Auth, refresh tokens v2) -------


@dataclass(frozen=True, slots=True)
class ParentUntilChildUsed(PeerPolicy):
    """A session counter: the live token rotates; its parent (one generation behind) is
    answered with the live token, with no time bound, until the live token is itself
    used; an older token inside `reuse_interval` of the last rotation gets the live
    token too (concurrency); any other older token revokes the session."""

    reuse_interval: float = 10.0

    def server(self) -> PeerServer:
        return _ParentServer(self)


@dataclass(slots=True)
class _Counter:
    generation: int = 0
    rotated_at: float = float("-inf")


class _ParentServer(PeerServer):
    def __init__(self, policy: ParentUntilChildUsed) -> None:
        super().__init__(policy.name)
        self._policy = policy
        self._sessions: dict[int, _Counter] = {}

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        family = self._family()
        self._sessions[family] = _Counter()
        return self._token(family, 0)

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        family, presented = self._unpack(token)
        if family in self.revoked:
            return Refused(self.revoked[family])
        session = self._sessions[family]
        if presented == session.generation:
            session.generation += 1
            session.rotated_at = now
        elif presented == session.generation - 1:
            pass  # fail-to-save: the parent gets the live token again
        elif now - session.rotated_at > self._policy.reuse_interval:
            return self._revoke(family, now)
        return Issued(self._token(family, session.generation))


# --- count-based reuse (Keycloak: Revoke Refresh Token + Refresh Token Max Reuse) -----


@dataclass(frozen=True, slots=True)
class CountedReuse(PeerPolicy):
    """Keycloak with "Revoke Refresh Token" on: a token may be presented `max_reuse` + 1
    times, each minting a new token. The session remembers the last token presented and
    the time of the last refresh (whole seconds, as Keycloak's timestamps): another token
    issued before that refresh is stale; stale or over the count, the client session is
    detached (the session ends for this client)."""

    max_reuse: int = 0

    def server(self) -> PeerServer:
        return _CountedServer(self)


@dataclass(slots=True)
class _ClientSession:
    issued_at: dict[int, int] = field(default_factory=dict)
    current: int | None = None
    uses: int = 0
    refreshed_at: int = 0


class _CountedServer(PeerServer):
    def __init__(self, policy: CountedReuse) -> None:
        super().__init__(policy.name)
        self._policy = policy
        self._sessions: dict[int, _ClientSession] = {}
        self._next = itertools.count()

    def _mint(self, family: int, now: float) -> Token:
        ident = next(self._next)
        session = self._sessions[family]
        session.issued_at[ident] = int(now)
        session.refreshed_at = int(now)
        return self._token(family, ident)

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        family = self._family()
        self._sessions[family] = _ClientSession()
        return self._mint(family, now)

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        family, ident = self._unpack(token)
        if family in self.revoked:
            return Refused(self.revoked[family])
        session = self._sessions[family]
        if (
            session.current is not None
            and ident != session.current
            and session.issued_at[ident] < session.refreshed_at
        ):
            return self._revoke(family, now)  # "Stale token"
        if ident != session.current:
            session.current, session.uses = ident, 0
        if session.uses > self._policy.max_reuse:
            return self._revoke(family, now)  # "Maximum allowed refresh token reuse exceeded"
        session.uses += 1
        return Issued(self._mint(family, now))


# --- no reuse window, no reuse detection (Zitadel) ------------------------------------


@dataclass(frozen=True, slots=True)
class NoWindow(PeerPolicy):
    """Only the live token works; an older one is refused (`invalid_grant`) and the
    session goes on: the device that presented it must sign in again, and whoever holds
    the live token keeps the session."""

    def server(self) -> PeerServer:
        return _NoWindowServer(self)


class _NoWindowServer(PeerServer):
    def __init__(self, policy: NoWindow) -> None:
        super().__init__(policy.name)
        self._generation: dict[int, int] = {}

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        family = self._family()
        self._generation[family] = 0
        return self._token(family, 0)

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        family, presented = self._unpack(token)
        if presented != self._generation[family]:
            return Refused(None)
        self._generation[family] += 1
        return Issued(self._token(family, presented + 1))


AUTH0 = "https://auth0.com/docs/secure/tokens/refresh-tokens/configure-refresh-token-rotation"
OKTA = "https://developer.okta.com/docs/guides/refresh-tokens/main/#refresh-token-rotation"
HYDRA = "https://www.ory.sh/docs/hydra/guides/graceful-token-refresh"
HYDRA_BRANCH = "https://github.com/ory/hydra/issues/1719"
CLERK = "https://clerk.com/changelog/2026-12-04-oauth-refresh-token-grace-period"
SUPABASE = "https://supabase.com/docs/guides/auth/sessions"
SUPABASE_PR = "https://github.com/supabase/auth/pull/466"
KEYCLOAK = "https://www.keycloak.org/docs/latest/server_admin/index.html#_timeouts"
KEYCLOAK_DETACH = "https://github.com/keycloak/keycloak/issues/14122"
ZITADEL = "https://github.com/zitadel/zitadel/issues/9631"

PEERS: tuple[PeerPolicy, ...] = (
    WindowNewToken(
        "window-new-token-30s",
        "Auth0, Okta, Clerk",
        "used token reusable 30 s after first use, each reuse mints a new token",
        (AUTH0, OKTA, CLERK),
        leeway=30.0,
    ),
    WindowNewToken(
        "window-new-token-300s",
        "Ory Hydra (longest grace without a count)",
        "used token reusable 5 min after first use, each reuse mints a new token",
        (HYDRA, HYDRA_BRANCH, AUTH0),
        leeway=300.0,
    ),
    ParentUntilChildUsed(
        "parent-until-child-used",
        "Supabase Auth (refresh tokens v2)",
        "parent answered with the live token until the live token is used; 10 s reuse interval",
        (SUPABASE, SUPABASE_PR),
    ),
    CountedReuse(
        "count-reuse-0",
        "Keycloak (Revoke Refresh Token, max reuse 0)",
        "each token once; a stale token or one over the count detaches the client session",
        (KEYCLOAK, KEYCLOAK_DETACH),
        max_reuse=0,
    ),
    CountedReuse(
        "count-reuse-3",
        "Keycloak (Revoke Refresh Token, max reuse 3)",
        "each token up to 4 times, each minting a new one; stale tokens detach the session",
        (KEYCLOAK, KEYCLOAK_DETACH),
        max_reuse=3,
    ),
    NoWindow(
        "none",
        "Zitadel",
        "only the live token works; an older one is refused, nothing is revoked",
        (ZITADEL,),
    ),
)
