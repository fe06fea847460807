"""What the use cases need to know of the server's configuration, as a plain value.

`keyturn.wiring` builds it from the settings; the services never read settings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from keyturn.core.models import Client, Lifetimes
from keyturn.core.policy import NO_LIMIT, NoLimit, ReplayBudget, resolve
from keyturn.core.rotation import RotationPolicy

_POLICIES_MAX = 256


class ReuseScope(enum.StrEnum):
    SESSION = "session"
    USER = "user"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    issuer: str
    default_audience: str
    lifetimes: Lifetimes
    grace_seconds: int
    """The retry window of a client registered with no kind and no window of its own."""
    reuse_revokes: ReuseScope = ReuseScope.SESSION
    replay_budget: ReplayBudget | NoLimit = NO_LIMIT
    """The replay budget of a client registered with no kind and no budget of its own."""
    login_failures_per_account: int = 5
    login_lockout_seconds: int = 900
    authorization_code_ttl: int = 60
    """Seconds an authorization code may wait for its exchange (RFC 6749 §4.1.2
    recommends at most ten minutes)."""
    key_refresh_seconds: int = 30
    """How often a process re-reads the key table to learn of a rotation elsewhere."""
    _policies: dict[int, tuple[Client, RotationPolicy]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Each client's resolved policy, by the identity of the `Client` value: a refresh
    asks for it on the hot path, and resolving costs more than the rest of the rules."""

    def lifetimes_for(self, client: Client) -> Lifetimes:
        lifetimes = client.lifetimes.apply(self.lifetimes)
        # A client row stored above the server's access-token lifetime (registration
        # refuses one now: `core.registration.lifetimes_problem`) is clamped: the
        # introspection bound, retired keys and the revocation feed follow the server's.
        if lifetimes.access_token_ttl > self.lifetimes.access_token_ttl:
            return replace(lifetimes, access_token_ttl=self.lifetimes.access_token_ttl)
        return lifetimes

    def rotation_policy(self, client: Client) -> RotationPolicy:
        """The rules' policy for `client`: its registration over the server's defaults."""
        # Clients are immutable values and a store hands back the same object for an
        # unchanged row, so identity is a safe key; the client kept beside the policy
        # keeps its id from being reused by another object.
        cached = self._policies.get(id(client))
        if cached is not None and cached[0] is client:
            return cached[1]
        if len(self._policies) >= _POLICIES_MAX:
            self._policies.clear()
        policy = self._resolve(client)
        self._policies[id(client)] = (client, policy)
        return policy

    def _resolve(self, client: Client) -> RotationPolicy:
        chosen = resolve(client.rotation, self.grace_seconds, self.replay_budget)
        return RotationPolicy(
            retry_window=chosen.retry_window,
            session_idle_ttl=self.lifetimes_for(client).session_idle_ttl,
            replay_budget=chosen.replay_budget,
            rotate=chosen.rotate,
            same_key_generations=chosen.same_key_generations,
        )

    def audience_for(self, client: Client) -> list[str]:
        return list(client.audience) or [self.default_audience]
