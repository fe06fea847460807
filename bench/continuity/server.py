"""What a policy looks like to the simulated devices: log in, present a refresh token.

Both keyturn's engine adapter and the peers' models answer through this one protocol,
so the devices and thieves play exactly the same moves against each.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Token:
    """A refresh token as a device holds it: its family (session) and its opaque value."""

    family: Hashable
    value: object


@dataclass(frozen=True, slots=True)
class Issued:
    """The server answered with an access token and this refresh token."""

    token: Token


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the token (`invalid_grant`)."""

    ended_at: float | None
    """When the token's family (session) was ended, if it is ended now; `None` if the
    refusal left it alive (a policy that refuses without reuse detection)."""


Answer = Issued | Refused


class Server(Protocol):
    """A refresh-token policy under test; `now` is simulated seconds since the start."""

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        """Sign `device` in; `key` is the thumbprint of the DPoP key it proves, if any."""
        ...

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        """Present `token`; `key` is the thumbprint of the DPoP key the presenter proves
        (the device's own, a thief's copy of it, or `None`: no proof), `ip` the address
        the request comes from (every process and tab of a device shares one)."""
        ...
