"""The per-account lockout: one rule for every check of an account's password.

Failed checks are counted per account, not per address: rotating addresses (a botnet,
a forged X-Forwarded-For) gains nothing. Past `login_failures_per_account` failures
within `login_lockout_seconds` the account refuses every password check, the right one
too, until the window ends. A login and a password change (`/auth/password`) share the
count: guessing through one locks the other.
"""

from __future__ import annotations

from keyturn.core.errors import RateLimited
from keyturn.core.ports import RateLimiter
from keyturn.service.config import EngineConfig


class AccountLockout:
    def __init__(self, limiter: RateLimiter, config: EngineConfig) -> None:
        self._limiter = limiter
        self._limit = config.login_failures_per_account
        self._window = config.login_lockout_seconds

    @staticmethod
    def _key(username: str) -> str:
        return f"login-failures:{username.casefold()}"

    async def check(self, username: str) -> None:
        """`RateLimited` while the account is locked; before any password is hashed."""
        retry_after = await self._limiter.peek(self._key(username), self._limit, self._window)
        if retry_after is not None:
            raise RateLimited(retry_after, detail="account locked after failed password checks")

    async def failed(self, username: str) -> None:
        """Count one failed password check of the account."""
        await self._limiter.hit(self._key(username), self._limit, self._window)
