"""The nouns of keyturn: users, clients, sessions and signing keys.

Plain frozen values. Times are timezone-aware UTC `datetime`s; a store hands them back
the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keyturn.core.ids import ClientId, KeyId, SessionId, UserId
from keyturn.core.policy import ReplayLog, RotationSettings
from keyturn.core.scopes import Scope


class ClientType(enum.StrEnum):
    PUBLIC = "public"
    """SPA, mobile or desktop app: no secret, PKCE."""
    CONFIDENTIAL = "confidential"
    """A server: authenticates with a secret, stored hashed."""


class Delivery(enum.StrEnum):
    """How a first-party client receives its refresh token."""

    COOKIE = "cookie"
    BODY = "body"


class GrantType(enum.StrEnum):
    AUTHORIZATION_CODE = "authorization_code"
    REFRESH_TOKEN = "refresh_token"
    CLIENT_CREDENTIALS = "client_credentials"
    PASSWORD = "password"
    """First-party username/password login (`/auth/login`); never served at /oauth/token."""


class RevocationReason(enum.StrEnum):
    """Why a session ended: a closed set, one reason per end, kept on the session row,
    in its audit event and in `keyturn_sessions_ended_total`."""

    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    REUSE_OUTSIDE_WINDOW = "reuse_outside_window"
    """A rotated-out refresh token presented after its retry window, or one older than
    the immediate predecessor: someone else went on using the session."""
    REUSE_KEY_MISMATCH = "reuse_key_mismatch"
    """A DPoP-bound refresh token presented without a proof, or with another key."""
    REPLAY_BUDGET_EXCEEDED = "replay_budget_exceeded"
    """More replayed generations than the client's budget allows: a thief in lockstep
    with the real client replays on nearly every rotation."""
    ADMIN_REVOKED = "admin_revoked"
    PASSWORD_CHANGED = "password_changed"
    USER_DISABLED = "user_disabled"
    CLIENT_DISABLED = "client_disabled"
    IDLE_EXPIRED = "idle_expired"
    ABSOLUTE_EXPIRED = "absolute_expired"
    SUPERSEDED_AT_LOGIN = "superseded_at_login"
    """The same device logged in again while presenting this session's token."""
    TOKEN_REVOKED = "token_revoked"
    """RFC 7009 revocation of the refresh token."""
    CODE_REPLAYED = "code_replayed"
    """The authorization code that opened the session was presented again (RFC 6749
    §4.1.2: the tokens it issued "SHOULD" be revoked)."""

    @property
    def signals_theft(self) -> bool:
        """Whether this end is the answer to a token in two hands: recorded as
        `reuse_detected`, and it ends every session of the user when
        `KEYTURN_REUSE_REVOKES=user`."""
        return self in _THEFT


_THEFT = frozenset(
    {
        RevocationReason.REUSE_OUTSIDE_WINDOW,
        RevocationReason.REUSE_KEY_MISMATCH,
        RevocationReason.REPLAY_BUDGET_EXCEEDED,
        RevocationReason.CODE_REPLAYED,
    }
)


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session a store operation ended: its id, and its client (a metric label)."""

    id: SessionId
    client_id: ClientId


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Lifetimes, in seconds, of the tokens and sessions of one client."""

    access_token_ttl: int
    session_idle_ttl: int
    session_max_ttl: int

    def __post_init__(self) -> None:
        if min(self.access_token_ttl, self.session_idle_ttl, self.session_max_ttl) <= 0:
            raise ValueError("lifetimes must be positive")
        if self.session_idle_ttl > self.session_max_ttl:
            raise ValueError("the idle lifetime cannot exceed the absolute lifetime")


@dataclass(frozen=True, slots=True)
class LifetimeOverrides:
    """Per-client overrides of the server's lifetimes; `None` keeps the server's value."""

    access_token_ttl: int | None = None
    session_idle_ttl: int | None = None
    session_max_ttl: int | None = None

    def apply(self, base: Lifetimes) -> Lifetimes:
        return Lifetimes(
            access_token_ttl=self.access_token_ttl or base.access_token_ttl,
            session_idle_ttl=self.session_idle_ttl or base.session_idle_ttl,
            session_max_ttl=self.session_max_ttl or base.session_max_ttl,
        )


@dataclass(frozen=True, slots=True)
class User:
    id: UserId
    username: str
    password_hash: str
    """An Argon2id PHC string; never a password."""
    enabled: bool
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True, slots=True)
class Client:
    id: ClientId
    type: ClientType
    secret_hash: str | None
    """Hash of a confidential client's secret; `None` for a public client."""
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[GrantType]
    scope: Scope
    """The scopes this client may ask for."""
    delivery: Delivery
    audience: tuple[str, ...]
    """`aud` of the access tokens issued to this client (RFC 9068 §2.2)."""
    lifetimes: LifetimeOverrides
    enabled: bool
    created_at: datetime
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to refresh through the cookie (CSRF Origin check)."""
    can_introspect: bool = False
    """May call the introspection endpoint and the revocation feed (a resource server)."""
    rotation: RotationSettings = field(default_factory=RotationSettings)
    """Its rotation policy: kind, retry window, replay budget (`keyturn.core.policy`)."""

    @property
    def is_confidential(self) -> bool:
        return self.type is ClientType.CONFIDENTIAL


@dataclass(frozen=True, slots=True)
class Device:
    """What is known of the device a session lives on."""

    user_agent: str | None = None
    ip: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """One login of one user through one client on one device: a token family.

    The live refresh token is the one of `generation`; the token of `generation - 1`
    is its parent. Nothing of a token is stored but what re-derives it: `salt`,
    `generation` and `mac_key_id`.
    """

    id: SessionId
    user_id: UserId
    client_id: ClientId
    scope: Scope
    salt: bytes
    generation: int
    mac_key_id: int
    created_at: datetime
    last_used_at: datetime
    rotated_at: datetime | None
    """When `generation` was reached by a rotation; `None` before the first rotation."""
    idle_expires_at: datetime
    absolute_expires_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: RevocationReason | None = None
    device: Device = field(default_factory=Device)
    authenticated_at: datetime | None = None
    """When the user last proved their password on this session, if later than
    `created_at` (a password change made from this session)."""
    replays: ReplayLog = field(default_factory=ReplayLog)
    """Which recent generations were replayed: what the replay budget counts."""
    dpop_jkt: str | None = None
    """The RFC 7638 thumbprint of the DPoP key the session is bound to, if any."""
    rotated_ip: str | None = None
    """The peer address of the request that rotated to `generation`, if known."""

    @property
    def auth_time(self) -> datetime:
        """When the user last authenticated on this session."""
        return self.authenticated_at or self.created_at

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def access_token_expiry(self, now: datetime, ttl: int) -> datetime:
        """I5: an access token never outlives its session's absolute deadline."""
        return min(now + timedelta(seconds=ttl), self.absolute_expires_at)


@dataclass(frozen=True, slots=True)
class Presentation:
    """What a rotation reads before it decides, in one query: the client presenting the
    refresh token, and the session the token names with its user. `client` is None for
    an unknown client; `session` and `user` are None for an unknown session."""

    client: Client | None
    session: Session | None = None
    user: User | None = None


@dataclass(frozen=True, slots=True)
class RotationAttempt:
    """A rotation tried before anything is read: one round trip on the hot path.

    The store reads the presentation and, in the same atomic operation, advances the
    session from `generation` to `generation + 1` if and only if what it read is what
    the rules would rotate (`keyturn.core.rotation.attempt_holds`): the client is the
    enabled client whose `secret_hash` the caller authenticated against, and the session
    is live, this client's, at `generation` with this `salt`, and its user enabled and
    not re-keyed since it authenticated. The new idle deadline is
    `min(at + idle_ttl, absolute_expires_at)`, the access token's scope the session's.
    """

    session_id: SessionId
    client_id: ClientId
    client_secret_hash: str | None
    salt: bytes
    generation: int
    at: datetime
    idle_ttl: int
    """Seconds a rotation pushes the idle deadline (the client's rotation policy)."""
    ip: str | None = None
    """The peer address of the request, kept as the session's `rotated_ip`."""


@dataclass(frozen=True, slots=True)
class Rotated:
    """`attempt_rotation` wrote: the session as it committed it (no presentation, the
    caller needs none)."""

    session: Session


@dataclass(frozen=True, slots=True)
class NotRotated:
    """`attempt_rotation` wrote nothing: the presentation as it read it, for the caller
    to decide on as on `get_presentation`'s."""

    presentation: Presentation


Attempted = Rotated | NotRotated
"""What `attempt_rotation` did; callers match on the two names."""


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """An authorization code (RFC 6749 §4.1.2), stored only as the SHA-256 of its text.

    Single use: `used_at` is set by the one redemption that wins, together with the
    session it opened (`session_id`, `None` when the redemption was refused and only
    burnt the code), so a second presentation finds the session to end.
    """

    code_hash: str
    client_id: ClientId
    user_id: UserId
    redirect_uri: str
    redirect_uri_given: bool
    """Whether the authorization request named `redirect_uri` itself (then the token
    request must repeat it, RFC 6749 §4.1.3) or it was the client's only one."""
    code_challenge: str
    """The PKCE S256 challenge (RFC 7636 §4.2)."""
    scope: Scope
    authenticated_at: datetime
    created_at: datetime
    expires_at: datetime
    device: Device = field(default_factory=Device)
    used_at: datetime | None = None
    session_id: SessionId | None = None

    @property
    def used(self) -> bool:
        return self.used_at is not None


class KeyUse(enum.StrEnum):
    SIGNING = "sig"
    """Signs access tokens; its public half is published in the JWKS."""
    REFRESH_MAC = "rt-mac"
    """The HMAC key of refresh tokens; never published."""


class KeyState(enum.StrEnum):
    NEXT = "next"
    """Published, not yet used: resource servers learn it before it signs."""
    ACTIVE = "active"
    """Signs (or MACs) everything new."""
    RETIRED = "retired"
    """Still published (or still verifies) until `publish_until`, then deleted."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as the store holds it: the private half encrypted at rest."""

    kid: KeyId
    use: KeyUse
    alg: str
    state: KeyState
    public_jwk: str | None
    """The public JWK as JSON (signing keys only)."""
    encrypted_private: bytes
    """The private key or MAC secret, sealed with the master secret."""
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    publish_until: datetime | None = None
    """For a retired key: when the last token it signed or MAC'd has expired."""
