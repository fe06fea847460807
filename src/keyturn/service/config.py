"""What the use cases need to know of the server's configuration, as a plain value.

`keyturn.wiring` builds it from the settings; the services never read settings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keyturn.core.models import Client, Lifetimes
from keyturn.core.rotation import RotationPolicy


class ReuseScope(enum.StrEnum):
    SESSION = "session"
    USER = "user"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    issuer: str
    default_audience: str
    lifetimes: Lifetimes
    grace_seconds: int
    reuse_revokes: ReuseScope = ReuseScope.SESSION
    login_failures_per_account: int = 5
    login_lockout_seconds: int = 900
    authorization_code_ttl: int = 60
    """Seconds an authorization code may wait for its exchange (RFC 6749 §4.1.2
    recommends at most ten minutes)."""
    key_refresh_seconds: int = 30
    """How often a process re-reads the key table to learn of a rotation elsewhere."""

    def lifetimes_for(self, client: Client) -> Lifetimes:
        return client.lifetimes.apply(self.lifetimes)

    def rotation_policy(self, client: Client) -> RotationPolicy:
        return RotationPolicy(
            grace_seconds=self.grace_seconds,
            session_idle_ttl=self.lifetimes_for(client).session_idle_ttl,
        )

    def audience_for(self, client: Client) -> list[str]:
        return list(client.audience) or [self.default_audience]
