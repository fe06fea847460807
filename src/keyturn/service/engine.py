"""The engine: every use case a front end (HTTP, CLI, demo) calls, built once per
process by `keyturn.wiring`. Front ends depend on this, never on how it is built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keyturn.core.ports import Clock, RateLimiter, Store
from keyturn.service.admin import Admin
from keyturn.service.authorization import Authorization
from keyturn.service.client_auth import ClientAuthenticator
from keyturn.service.client_credentials import ClientCredentialsGrant
from keyturn.service.config import EngineConfig
from keyturn.service.dpop_proofs import DpopProofs
from keyturn.service.inspection import Inspection
from keyturn.service.login import Login
from keyturn.service.refresh import Refresher
from keyturn.service.revocation_feed import RevocationPages
from keyturn.service.sessions import Sessions
from keyturn.service.timeline import SessionTimelines
from keyturn.service.tokens import Tokens
from keyturn.settings import Settings


@dataclass(frozen=True, slots=True)
class Engine:
    """Everything a front end needs."""

    settings: Settings
    config: EngineConfig
    clock: Clock
    """The one clock of every rule (`keyturn.storage.clocks`): set-up steps outside the
    use cases (the demo's password reset) take their time from it too."""
    store: Store
    tokens: Tokens
    login: Login
    authorization: Authorization
    refresher: Refresher
    sessions: Sessions
    admin: Admin
    limiter: RateLimiter
    clients: ClientAuthenticator
    client_credentials: ClientCredentialsGrant
    inspection: Inspection
    revocation_feed: RevocationPages
    timelines: SessionTimelines
    dpop: DpopProofs
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()
    """What `close` closes after the store: the connections the engine opened beside it
    (Redis)."""

    async def close(self) -> None:
        await self.store.close()
        for close in self.closers:
            await close()
