"""What `keyturn serve --demo` sets up: a user `demo` with a fresh password and the
first-party browser client `demo-web` the demo page logs in with.

Idempotent: a second start finds both, registers nothing twice, and gives the user a
new password (ending the sessions the old one opened), so the password printed at
start is always the one that works.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from urllib.parse import urlsplit

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidRequest
from keyturn.core.ids import ClientId
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    GrantType,
    LifetimeOverrides,
    RevocationReason,
)
from keyturn.core.ports import Clock, Randomness, Store
from keyturn.crypto.passwords import Passwords, check_new_password
from keyturn.service.admin import Admin

DEMO_USERNAME = "demo"
DEMO_CLIENT_ID = "demo-web"
DEMO_SCOPE = frozenset({"read"})
DEMO_SESSION_IDLE_TTL = 30 * 60
"""A demo session that nobody refreshes for half an hour ends."""
DEMO_SESSION_MAX_TTL = 8 * 3600
PASSWORD_BYTES = 18
"""144 random bits: 24 characters of base64url."""


@dataclass(frozen=True, slots=True)
class DemoSetup:
    username: str
    password: str
    """Shown once at start, never stored."""
    client: Client
    user_existed: bool


def origin_of(url: str) -> str:
    """The origin (`scheme://host[:port]`) of an absolute http(s) URL, as a browser
    sends it in an `Origin` header."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest(f"{url!r} is not an absolute http(s) URL.")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower()


def new_password(randomness: Randomness) -> str:
    return base64.urlsafe_b64encode(randomness.token_bytes(PASSWORD_BYTES)).decode()


async def set_up_demo(
    store: Store,
    admin: Admin,
    passwords: Passwords,
    clock: Clock,
    randomness: Randomness,
    *,
    origin: str,
    access_token_ttl: int,
) -> DemoSetup:
    """Register (or find) the demo client for `origin` and give the demo user a new
    password, creating the user if needed."""
    client = await _demo_client(store, admin, origin, access_token_ttl)
    password = new_password(randomness)
    user = await store.find_user(DEMO_USERNAME)
    if user is None:
        await admin.add_user(DEMO_USERNAME, password)
        return DemoSetup(DEMO_USERNAME, password, client, user_existed=False)
    if not user.enabled:
        raise InvalidRequest(
            f"The user {DEMO_USERNAME!r} is disabled in this database; use another one."
        )
    check_new_password(password, DEMO_USERNAME)
    password_hash = await asyncio.to_thread(passwords.hash, password)
    now = clock.now()
    await store.change_password(
        user.id,
        password_hash,
        now,
        None,
        SecurityEvent(
            type=EventType.PASSWORD_CHANGED,
            at=now,
            user_id=user.id,
            reason=RevocationReason.PASSWORD_CHANGED.value,
            detail="demo password reset at start",
        ),
    )
    return DemoSetup(DEMO_USERNAME, password, client, user_existed=True)


async def _demo_client(store: Store, admin: Admin, origin: str, access_token_ttl: int) -> Client:
    existing = await store.get_client(ClientId(DEMO_CLIENT_ID))
    if existing is None:
        made = await admin.add_client(
            DEMO_CLIENT_ID,
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=DEMO_SCOPE,
            delivery=Delivery.COOKIE,
            allowed_origins=[origin],
            lifetimes=LifetimeOverrides(
                access_token_ttl=access_token_ttl,
                session_idle_ttl=DEMO_SESSION_IDLE_TTL,
                session_max_ttl=DEMO_SESSION_MAX_TTL,
            ),
        )
        return made.client
    # Clients are not edited in place: one registered for another origin cannot serve
    # this page, and saying so beats a login that fails with a CSRF refusal.
    usable = (
        existing.enabled
        and existing.delivery is Delivery.COOKIE
        and origin in existing.allowed_origins
        and {GrantType.PASSWORD, GrantType.REFRESH_TOKEN} <= existing.grant_types
    )
    if not usable:
        registered = ", ".join(existing.allowed_origins) or "no origin"
        raise InvalidRequest(
            f"This database already has a client {DEMO_CLIENT_ID!r} that cannot serve the "
            f"demo at {origin} (it is registered for {registered}); start the demo with "
            "the same address, or on another database (--db)."
        )
    return existing
