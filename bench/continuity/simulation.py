"""The player: a scenario's intentions applied to one policy, in simulated time.

A heap of timed events: the scenario's intentions, plus the answers in flight (an
answer reaches the device `rtt` seconds after the server decided, and a shared store
is written then). Each event is handled to completion before the next, with the
server's clock set to the event's time; nothing sleeps.

A device holds tokens as the real client would: a tab or an app its own copy; the
processes of an agent or a command-line tool read a shared store when they start a
refresh, keep what they read while they retry, and write the answer back (the last
writer wins). A refused refresh of the device's current session is a logout: the
user signs in again at once, and every holder takes the new session's token.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

from bench.continuity.population import (
    Attempt,
    Device,
    Event,
    Kind,
    Login,
    PresentCopy,
    Scenario,
    Snapshot,
    Strategy,
    Theft,
    ThiefPlan,
    ThiefUse,
    Use,
)
from bench.continuity.server import Answer, Issued, Refused, Server, Token

FRESH_ACCESS_TOKEN = 60.0
"""A holder that was handed a new session's tokens less than this long ago (the user
just signed in again) skips a refresh it had planned: its access token is fresh."""


@dataclass(slots=True)
class _Holder:
    token: Token | None = None
    obtained_at: float = float("-inf")


@dataclass(slots=True)
class _Device:
    spec: Device
    holders: list[_Holder]
    family: Hashable | None = None
    store: Token | None = None
    copies: dict[int, Token] = field(default_factory=dict)
    logouts: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Thief:
    plan: ThiefPlan
    token: Token | None = None
    stopped: bool = False
    first_use_at: float | None = None
    issued: int = 0
    detected_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Arrival:
    """An answer reaching a device: holder >= 0, or the shared store (a stale process)."""

    at: float
    device: int
    holder: int
    presented: Token
    answer: Answer


@dataclass(frozen=True, slots=True)
class TheftResult:
    thief: int
    victim_kind: str
    strategy: str
    with_key: bool
    stolen_at: float
    first_use_at: float | None
    tokens_to_thief: int
    """Tokens the server issued to the thief (each with an access token) before detection."""
    detected_after: float | None
    """Seconds from the theft to the end of the stolen session; `None`: never within the run."""
    thief_in_at_end: bool
    """The thief got tokens and its session was still alive at the end of the run."""


@dataclass(frozen=True, slots=True)
class PlayResult:
    logouts: dict[str, int]
    """Legitimate logouts per population."""
    devices: dict[str, int]
    """Legitimate devices per population."""
    victim_logouts: int
    thefts: list[TheftResult]
    refreshes: int
    logins: int
    wall_seconds: float


class _Player:
    def __init__(self, scenario: Scenario, server: Server) -> None:
        self.scenario = scenario
        self.server = server
        self.devices = [_Device(d, [_Holder() for _ in range(d.holders)]) for d in scenario.devices]
        self.thieves = [_Thief(plan) for plan in scenario.thieves]
        self.by_family: dict[Hashable, list[_Thief]] = {}
        self.ended: dict[Hashable, float] = {}
        self.rotated_for_victim: set[int] = set()
        self.counts: Counter[str] = Counter()
        self.seq = itertools.count()
        self.heap: list[tuple[float, int, Event | _Arrival]] = [
            (e.at, next(self.seq), e) for e in scenario.events
        ]
        heapq.heapify(self.heap)

    async def run(self) -> None:
        while self.heap:
            now, _, event = heapq.heappop(self.heap)
            match event:
                case Login(device=d):
                    await self.sign_in(self.devices[d], now)
                case Attempt():
                    await self.attempt(event, now)
                case _Arrival():
                    await self.arrive(event, now)
                case Snapshot(device=d, copy=c):
                    device = self.devices[d]
                    if device.store is not None:
                        device.copies[c] = device.store
                case PresentCopy(device=d, copy=c, rtt=rtt):
                    copied = self.devices[d].copies.pop(c, None)
                    if copied is not None:
                        answer = await self.refresh(copied, now, _key(d), _ip(d))
                        self.later(_Arrival(now + rtt, d, -1, copied, answer))
                case Theft():
                    self.steal(event)
                case ThiefUse():
                    await self.thief_uses(event, now)

    def later(self, arrival: _Arrival) -> None:
        heapq.heappush(self.heap, (arrival.at, next(self.seq), arrival))

    def note(self, token: Token, answer: Answer) -> None:
        """Record a family's end, and so the detection of every thief holding it."""
        if not isinstance(answer, Refused) or answer.ended_at is None:
            return
        if token.family in self.ended:
            return
        self.ended[token.family] = answer.ended_at
        for thief in self.by_family.get(token.family, ()):
            if thief.detected_at is None:
                thief.detected_at = answer.ended_at

    async def refresh(self, token: Token, now: float, key: str | None, ip: str) -> Answer:
        self.counts["refreshes"] += 1
        answer = await self.server.refresh(token, now, key, ip)
        self.note(token, answer)
        return answer

    async def sign_in(self, device: _Device, now: float) -> None:
        self.counts["logins"] += 1
        token = await self.server.login(device.spec.ident, now, _key(device.spec.ident))
        device.family = token.family
        device.store = token
        for holder in device.holders:
            holder.token = token
            holder.obtained_at = now

    async def attempt(self, event: Attempt, now: float) -> None:
        device = self.devices[event.device]
        holder = device.holders[event.holder]
        if event.fresh and now - holder.obtained_at < FRESH_ACCESS_TOKEN:
            return
        if event.fresh and device.spec.shared_store:
            holder.token = device.store
        token = holder.token
        if token is None:
            return
        answer = await self.refresh(token, now, _key(event.device), _ip(event.device))
        if device.spec.victim and isinstance(answer, Issued):
            self.rotated_for_victim.add(event.ident)
        if not event.lost:
            self.later(_Arrival(now + event.rtt, event.device, event.holder, token, answer))

    async def arrive(self, event: _Arrival, now: float) -> None:
        device = self.devices[event.device]
        answer = event.answer
        if isinstance(answer, Refused):
            if event.presented.family == device.family:
                # The device's current session refused it: the user signs in again.
                device.logouts.append(now)
                await self.sign_in(device, now)
            return
        if event.presented.family != device.family:
            return  # an answer about a session the device has already left
        if event.holder >= 0:
            device.holders[event.holder].token = answer.token
            device.holders[event.holder].obtained_at = now
        if device.spec.shared_store:
            device.store = answer.token

    def steal(self, event: Theft) -> None:
        victim = self.devices[event.device]
        stolen = victim.store if victim.spec.shared_store else victim.holders[0].token
        if stolen is None:
            return
        thief = self.thieves[event.thief]
        thief.token = stolen
        self.by_family.setdefault(stolen.family, []).append(thief)
        if stolen.family in self.ended:
            thief.detected_at = self.ended[stolen.family]

    async def thief_uses(self, event: ThiefUse, now: float) -> None:
        thief = self.thieves[event.thief]
        if thief.stopped or thief.token is None:
            return
        if event.use is Use.LOCKSTEP and event.after_attempt not in self.rotated_for_victim:
            return  # the oracle shows no rotation: nothing to follow
        # A thief with the victim's key proves it as the victim's device would; one
        # without it sends no proof (a proof of its own key is refused the same way).
        key = _key(thief.plan.victim) if thief.plan.with_key else None
        answer = await self.refresh(thief.token, now, key, f"thief-address-{thief.plan.ident}")
        if thief.first_use_at is None:
            thief.first_use_at = now
        if isinstance(answer, Issued):
            thief.issued += 1
            thief.token = answer.token
        else:
            thief.stopped = True

    def result(self, wall_seconds: float) -> PlayResult:
        logouts: Counter[str] = Counter()
        legit: Counter[str] = Counter()
        victim_logouts = 0
        for device in self.devices:
            if device.spec.victim:
                victim_logouts += len(device.logouts)
            else:
                legit[device.spec.kind.value] += 1
                logouts[device.spec.kind.value] += len(device.logouts)
        return PlayResult(
            logouts={k.value: logouts[k.value] for k in Kind},
            devices={k.value: legit[k.value] for k in Kind},
            victim_logouts=victim_logouts,
            thefts=[self.theft_result(th) for th in self.thieves],
            refreshes=self.counts["refreshes"],
            logins=self.counts["logins"],
            wall_seconds=wall_seconds,
        )

    def theft_result(self, thief: _Thief) -> TheftResult:
        plan = thief.plan
        return TheftResult(
            thief=plan.ident,
            victim_kind=self.scenario.devices[plan.victim].kind.value,
            strategy=plan.strategy.value,
            with_key=plan.with_key,
            stolen_at=plan.stolen_at,
            first_use_at=thief.first_use_at,
            tokens_to_thief=thief.issued,
            detected_after=(
                None if thief.detected_at is None else max(0.0, thief.detected_at - plan.stolen_at)
            ),
            thief_in_at_end=(
                thief.issued > 0
                and not thief.stopped
                and thief.token is not None
                and thief.token.family not in self.ended
            ),
        )


def _key(device: int) -> str:
    """The thumbprint of a device's DPoP key: every process of the device shares it (a
    key file, IndexedDB), so a stale copy presented by any of them proves it."""
    return f"device-key-{device}"


def _ip(device: int) -> str:
    """A device's network address: one per device, shared by its tabs and processes.
    Thieves present from addresses of their own."""
    return f"device-address-{device}"


async def play(scenario: Scenario, server: Server) -> PlayResult:
    """Apply every intention of `scenario` to `server`, in time order."""
    began = time.perf_counter()
    player = _Player(scenario, server)
    await player.run()
    return player.result(time.perf_counter() - began)


__all__ = ["PlayResult", "Strategy", "TheftResult", "play"]
