"""Rotation policies: how long a rotated-out token may be retried, how many replays a
session may receive, whether a client's refresh tokens rotate at all.

A rotated-out token presented again is either a client that never received its
successor (a lost response, a suspended app, a retry a minute late) or a thief. The
retry window answers the first; the replay budget catches the second, who must replay
on nearly every rotation to keep following a session. `docs/rotation-policies.md`
has the threat model and the simulation these presets were chosen from.
"""

from __future__ import annotations

import enum
import re
from dataclasses import Field, dataclass, fields, replace
from typing import Any

REPLAY_LOG_WIDTH = 62
"""Generations a session remembers as replayed or not (a signed 64-bit column)."""

_MASK = (1 << REPLAY_LOG_WIDTH) - 1


class NoLimit(enum.Enum):
    """A retry window that closes only when the successor is used (FAPI 2.0), or a
    replay budget that is off."""

    NO_LIMIT = "unbounded"


NO_LIMIT = NoLimit.NO_LIMIT


class ClientKind(enum.StrEnum):
    """What kind of program a client is: its preset rotation policy."""

    BROWSER = "browser"
    NATIVE = "native"
    AGENT = "agent"
    SERVICE = "service"


class DpopMode(enum.StrEnum):
    """Whether a client's token requests carry DPoP proofs (RFC 9449)."""

    REQUIRED = "required"
    """Every token request needs a valid proof: no bearer token is ever issued."""
    OPTIONAL = "optional"
    """A request with a valid proof gets DPoP-bound tokens, one without gets bearer ones."""
    OFF = "off"
    """Bearer tokens only; a request with a proof is refused, never silently downgraded."""


@dataclass(frozen=True, slots=True)
class ReplayBudget:
    """At most `replays` replayed generations among the last `of` generations.

    Counted in generations, not in time: a thief in lockstep with the real client
    replays on every rotation however long the access tokens live, while a device that
    loses a response now and then replays on a few. Many presentations of one
    generation (tabs at once, retries of one lost response) count once.
    """

    replays: int
    of: int

    def __post_init__(self) -> None:
        if not 0 <= self.replays < self.of <= REPLAY_LOG_WIDTH:
            raise ValueError(
                f"a replay budget is N/M with 0 <= N < M <= {REPLAY_LOG_WIDTH}, e.g. 4/16"
            )

    @classmethod
    def parse(cls, text: str) -> ReplayBudget | NoLimit:
        """`N/M` (at most N replayed generations of the last M), or `off`."""
        if text.strip().lower() == "off":
            return NO_LIMIT
        found = re.fullmatch(r"\s*(\d{1,3})\s*/\s*(\d{1,3})\s*", text)
        if found is None:
            raise ValueError(f"a replay budget is N/M or off, not {text!r}")
        return cls(int(found[1]), int(found[2]))

    def __str__(self) -> str:
        return f"{self.replays}/{self.of}"


def format_budget(budget: ReplayBudget | NoLimit) -> str:
    return "off" if isinstance(budget, NoLimit) else str(budget)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str | int) -> int | NoLimit:
    """A retry window: seconds (`600`, `10m`, `1h`), or `unbounded`."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a retry window cannot be negative")
        return text
    if text.strip().lower() == NO_LIMIT.value:
        return NO_LIMIT
    found = re.fullmatch(r"\s*(\d{1,7})\s*([smhd]?)\s*", text.lower())
    if found is None:
        raise ValueError(f"a retry window is seconds (600, 10m, 1h) or unbounded, not {text!r}")
    return int(found[1]) * _UNITS[found[2]]


def format_window(window: int | NoLimit) -> int | str:
    return window.value if isinstance(window, NoLimit) else window


@dataclass(frozen=True, slots=True)
class ReplayLog:
    """Which recent generations of a session were replayed: bit `i` of `bits` stands for
    generation `newest - i`. Anchored to generations, not to the live one, so a
    rotation leaves it untouched and only a replay writes it."""

    newest: int = -1
    bits: int = 0

    def with_replay(self, generation: int) -> ReplayLog:
        if generation > self.newest:
            shifted = (self.bits << (generation - self.newest)) & _MASK
            return ReplayLog(generation, shifted | 1)
        age = self.newest - generation
        if age >= REPLAY_LOG_WIDTH:
            return self
        return ReplayLog(self.newest, self.bits | (1 << age))

    def count(self, live: int, last: int) -> int:
        """Replayed generations among the `last` before the live generation `live`."""
        return sum(
            1
            for age in range(REPLAY_LOG_WIDTH)
            if self.bits >> age & 1 and live - last <= self.newest - age < live
        )


@dataclass(frozen=True, slots=True)
class RotationSettings:
    """A client's registered rotation policy. `None` keeps the value of the client's
    kind, or the server's default when it has no kind."""

    kind: ClientKind | None = None
    retry_window: int | NoLimit | None = None
    """Seconds the immediate predecessor of the live token keeps answering with the
    same successor; `NO_LIMIT` until the successor is used."""
    replay_budget: ReplayBudget | NoLimit | None = None
    rotate: bool | None = None
    """False: the refresh token stays the same until the session ends (a confidential
    client gains nothing from rotation, FAPI 2.0 §5.3.2.1)."""
    same_key_generations: int | None = None
    """How many generations back a DPoP-bound session's own key may present a stale
    token and be answered with the live one (key continuity)."""
    dpop: DpopMode | None = None
    """Whether its token requests need, may carry or must not carry DPoP proofs;
    `None` is `DpopMode.OPTIONAL`."""

    @property
    def dpop_mode(self) -> DpopMode:
        return DpopMode.OPTIONAL if self.dpop is None else self.dpop

    def updated(self, changes: RotationSettings) -> RotationSettings:
        """These settings with each value that `changes` sets in place of this one's."""
        return replace(self, **_set(changes, fields(RotationSettings)))

    def describe(self) -> str:
        """What is set, as `name=value` words (an audit event's detail)."""
        shown = {
            "kind": self.kind,
            "retry_window": None if self.retry_window is None else format_window(self.retry_window),
            "replay_budget": (
                None if self.replay_budget is None else format_budget(self.replay_budget)
            ),
            "rotate": self.rotate,
            "same_key_generations": self.same_key_generations,
            "dpop": self.dpop,
        }
        return " ".join(f"{k}={v}" for k, v in shown.items() if v is not None) or "defaults"

    def __post_init__(self) -> None:
        if isinstance(self.retry_window, int) and self.retry_window < 0:
            raise ValueError("a retry window cannot be negative")
        if self.same_key_generations is not None and not (
            0 <= self.same_key_generations <= REPLAY_LOG_WIDTH
        ):
            raise ValueError(f"same-key generations are 0 to {REPLAY_LOG_WIDTH}")


@dataclass(frozen=True, slots=True)
class Preset:
    retry_window: int | NoLimit
    replay_budget: ReplayBudget | NoLimit
    rotate: bool
    same_key_generations: int


DEFAULT_BUDGET = ReplayBudget(8, 16)
"""At most 8 replayed generations of the last 16. A device that loses 5 % of its
responses replays more than 8 of 16 about once in 60 million windows (binomial), so
not once in 10,000 device-days of refreshes every 15 minutes; a thief in lockstep is
caught by the 9th rotation he follows. docs/rotation-policies.md has the simulation."""

PRESETS: dict[ClientKind, Preset] = {
    # A browser's tabs share one refresh through the kit; a response lost on a desktop
    # network is retried at once. A short window leaves a thief seconds to act.
    ClientKind.BROWSER: Preset(10, DEFAULT_BUDGET, rotate=True, same_key_generations=1),
    # A phone loses a response, is suspended for hours, retries when it wakes: no time
    # limit on the retry (FAPI 2.0), and the budget catches a thief who follows along.
    ClientKind.NATIVE: Preset(NO_LIMIT, DEFAULT_BUDGET, rotate=True, same_key_generations=8),
    # Several processes of one agent share a token store and retry late; with DPoP they
    # share a key too, and key continuity answers their stale copies.
    ClientKind.AGENT: Preset(NO_LIMIT, DEFAULT_BUDGET, rotate=True, same_key_generations=16),
    # A confidential server authenticates every refresh with its secret.
    ClientKind.SERVICE: Preset(NO_LIMIT, NO_LIMIT, rotate=False, same_key_generations=0),
}
"""The presets of `clients add --kind`; docs/rotation-policies.md has the table."""


def _set(settings: RotationSettings, wanted: tuple[Field[Any], ...]) -> dict[str, Any]:
    """The values `settings` sets (not `None`) among the fields `wanted`."""
    names = {f.name for f in wanted}
    return {
        f.name: value
        for f in fields(RotationSettings)
        if f.name in names and (value := getattr(settings, f.name)) is not None
    }


def resolve(
    settings: RotationSettings, default_retry: int | NoLimit, default_budget: ReplayBudget | NoLimit
) -> Preset:
    """The policy a client's settings come to: its own values over its kind's preset,
    over the server's defaults for a client of no kind."""
    base = (
        PRESETS[settings.kind]
        if settings.kind is not None
        else Preset(default_retry, default_budget, rotate=True, same_key_generations=1)
    )
    return replace(base, **_set(settings, fields(Preset)))
