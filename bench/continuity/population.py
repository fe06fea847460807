"""The devices, thieves and their intentions: generated once from a seed, played many times.

Everything here is decided before any policy is played: when each device is active,
when each of its holders (tab, process) presents a refresh token, which responses are
lost and when they are retried, when a thief copies a token and when it uses it. The
player (`simulation`) then applies these intentions to a policy; only the answers
differ between policies, never the moves. Each device draws from its own seeded
generator, so adding devices leaves the others' intentions unchanged.

Times are simulated seconds from the start of the run.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

HOUR = 3600.0
DAY = 24 * HOUR
ACCESS_TOKEN_TTL = 900.0
"""keyturn's default access-token lifetime: a device refreshes when its access token expires."""


class Kind(enum.StrEnum):
    """A population of legitimate devices."""

    BROWSER_KIT = "browser-kit"
    """1–5 tabs coordinated by the browser kit: one refresh per expiry for all tabs."""
    BROWSER_TABS = "browser-tabs"
    """1–5 uncoordinated tabs, each refreshing its own copy within a second or two."""
    MOBILE = "mobile"
    """A native app: 1–5 % of responses lost and retried after 0 s – 30 min (on the next
    launch if the app is suspended by then); short uses, suspended for hours between."""
    AGENT = "agent"
    """2–4 processes sharing one token store (last writer wins), each refreshing on its
    own; 2–10 % of responses time out and are retried 30–90 s later with the token read."""
    CLI = "cli"
    """Short invocations sharing a token file, plus some days a long-running process
    that copied the file and presents its (by then stale) copy hours later."""


class Strategy(enum.StrEnum):
    """How a thief uses the refresh token it copied once."""

    AT_ONCE = "at-once"
    AFTER_NEXT_REFRESH = "after-next-refresh"
    HOURS_LATER = "hours-later"
    LOCKSTEP = "lockstep"
    """Replays the predecessor right after every rotation of the victim's (the thief
    watches the session through an oracle), never rotating on its own."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Login:
    at: float
    device: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """A holder presents a refresh token."""

    at: float
    device: int
    holder: int
    fresh: bool
    """A new refresh (a holder of a shared store reads it first), not a retry of a lost one."""
    lost: bool
    """The server answers but the answer never reaches the device."""
    rtt: float
    """Seconds until the answer arrives (and, for a shared store, is written back)."""
    ident: int = 0
    """Unique within the run; lockstep thieves follow the victim's attempts by it."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A long-running process copies the shared token file."""

    at: float
    device: int
    copy: int


@dataclass(frozen=True, slots=True)
class PresentCopy:
    """That process presents its copy, hours later, and writes the answer back."""

    at: float
    device: int
    copy: int
    rtt: float


@dataclass(frozen=True, slots=True)
class Theft:
    """A thief copies the refresh token the victim's holder 0 holds at `at`."""

    at: float
    device: int
    thief: int


class Use(enum.StrEnum):
    FIRST = "first"
    OWN = "own"
    """A later refresh of the thief's own token, at its access token's expiry."""
    LOCKSTEP = "lockstep"


@dataclass(frozen=True, slots=True)
class ThiefUse:
    at: float
    thief: int
    use: Use
    after_attempt: int = -1
    """For a lockstep use: the victim's attempt it follows (acted on only if the server
    issued tokens for that attempt, which the thief sees through its oracle)."""


Event = Login | Attempt | Snapshot | PresentCopy | Theft | ThiefUse


@dataclass(frozen=True, slots=True)
class Device:
    ident: int
    kind: Kind
    holders: int
    shared_store: bool
    victim: bool
    detail: dict[str, float] = field(default_factory=dict)
    """What was drawn for the device (loss rate, tab count...), for the report."""


@dataclass(frozen=True, slots=True)
class ThiefPlan:
    ident: int
    victim: int
    strategy: Strategy
    with_key: bool
    """The thief also holds the victim's DPoP private key (matters only to a policy
    that binds refresh tokens to a key)."""
    stolen_at: float


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    days: float
    devices: tuple[Device, ...]
    thieves: tuple[ThiefPlan, ...]
    events: tuple[Event, ...]
    """Sorted by time; ties keep generation order."""

    @property
    def end(self) -> float:
        return self.days * DAY

    @property
    def legit_devices(self) -> int:
        return sum(not d.victim for d in self.devices)


@dataclass(frozen=True, slots=True)
class Mix:
    """How many devices of each population, and how many thefts per strategy and key."""

    devices: dict[Kind, int]
    thefts_per_cell: int
    victim_kinds: tuple[Kind, ...] = (Kind.MOBILE, Kind.BROWSER_KIT)


def default_mix(devices: int, thefts_per_cell: int) -> Mix:
    """`devices` legitimate devices split across the populations (browsers and mobile
    weigh most, as in a consumer product with a few power users)."""
    shares = {
        Kind.BROWSER_KIT: 0.25,
        Kind.BROWSER_TABS: 0.15,
        Kind.MOBILE: 0.35,
        Kind.AGENT: 0.10,
        Kind.CLI: 0.15,
    }
    counts = {kind: max(1, round(devices * share)) for kind, share in shares.items()}
    return Mix(counts, thefts_per_cell)


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        self.next += 1
        return self.next


class _Schedule:
    """A device's activity windows over the run, and when it is next active."""

    def __init__(self, windows: list[Window], end: float) -> None:
        self.windows = windows
        self.end = end

    def next_active(self, t: float) -> float | None:
        for w in self.windows:
            if t < w.start:
                return w.start
            if t < w.end:
                return t
        return None


def _daily(days: float, one_day: Callable[[float], list[Window]]) -> list[Window]:
    windows: list[Window] = []
    day = 0
    while day < days:
        windows.extend(one_day(day * DAY))
        day += 1
    merged: list[Window] = []
    for w in sorted(windows, key=lambda w: w.start):
        end = min(w.end, days * DAY)
        if w.start >= end:
            continue
        if merged and w.start <= merged[-1].end:
            merged[-1] = Window(merged[-1].start, max(merged[-1].end, end))
        else:
            merged.append(Window(w.start, end))
    return merged


def _workday(
    rng: random.Random, first: float, last: float, low: float, high: float
) -> Callable[[float], list[Window]]:
    def one_day(base: float) -> list[Window]:
        start = base + rng.uniform(first, last) * HOUR
        return [Window(start, start + rng.uniform(low, high) * HOUR)]

    return one_day


def _mobile_uses(rng: random.Random) -> Callable[[float], list[Window]]:
    def one_day(base: float) -> list[Window]:
        uses = []
        for _ in range(rng.randint(4, 12)):
            start = base + rng.uniform(7, 23) * HOUR
            uses.append(Window(start, start + rng.uniform(2, 30) * 60))
        return uses

    return one_day


def _cadence(
    rng: random.Random,
    schedule: _Schedule,
    ids: _Ids,
    device: int,
    holder: int,
    *,
    first: float,
    loss: float,
    retry_delay: Callable[[], float],
    offset: Callable[[], float] = lambda: 0.0,
) -> list[Attempt]:
    """A holder refreshing whenever its access token has expired while the device is
    active; a lost answer is retried after `retry_delay` (or when next active)."""
    attempts: list[Attempt] = []
    t = schedule.next_active(first)
    while t is not None:
        # The offset moves this attempt only: holders that start together stay together.
        at = t + offset()
        lost = rng.random() < loss
        attempts.append(Attempt(at, device, holder, True, lost, _rtt(rng), ids.take()))
        if lost:
            while lost:
                retry = schedule.next_active(at + retry_delay())
                if retry is None:
                    return attempts
                at = retry
                lost = rng.random() < loss
                attempts.append(Attempt(at, device, holder, False, lost, _rtt(rng), ids.take()))
            t = at
        t = schedule.next_active(t + ACCESS_TOKEN_TTL)
    return attempts


def _rtt(rng: random.Random) -> float:
    return rng.uniform(0.05, 0.8)


def _device_events(
    device: Device, rng: random.Random, days: float, ids: _Ids
) -> tuple[Device, list[Event]]:
    """The device's intentions (its windows drawn here too); returns the device with
    what was drawn recorded in its detail."""
    end = days * DAY
    login_at = rng.uniform(0, 600)
    events: list[Event] = [Login(login_at, device.ident)]
    first = login_at + ACCESS_TOKEN_TTL
    detail: dict[str, float] = {}
    kind = device.kind
    holders = 1
    if kind in (Kind.BROWSER_KIT, Kind.BROWSER_TABS):
        tabs = rng.randint(1, 5)
        detail["tabs"] = tabs
        schedule = _Schedule(_daily(days, _workday(rng, 7, 10, 6, 10)), end)
        rounds = _cadence(
            rng, schedule, ids, device.ident, 0, first=first, loss=0.0, retry_delay=lambda: 0.0
        )
        if kind is Kind.BROWSER_KIT or tabs == 1:
            events.extend(rounds)
        else:
            holders = tabs
            for r in rounds:
                for tab in range(tabs):
                    at = r.at + rng.uniform(0.0, 2.0)
                    events.append(
                        Attempt(at, device.ident, tab, True, False, _rtt(rng), ids.take())
                    )
    elif kind is Kind.MOBILE:
        loss = rng.uniform(0.01, 0.05)
        detail["loss"] = loss
        schedule = _Schedule(_daily(days, _mobile_uses(rng)), end)
        events.extend(
            _cadence(
                rng,
                schedule,
                ids,
                device.ident,
                0,
                first=first,
                loss=loss,
                retry_delay=lambda: rng.uniform(0, 1800),
            )
        )
    elif kind is Kind.AGENT:
        holders = rng.randint(2, 4)
        late = rng.uniform(0.02, 0.10)
        detail |= {"processes": holders, "late": late}
        schedule = _Schedule(_daily(days, _workday(rng, 8, 11, 4, 10)), end)
        for process in range(holders):
            events.extend(
                _cadence(
                    rng,
                    schedule,
                    ids,
                    device.ident,
                    process,
                    first=first,
                    loss=late,
                    retry_delay=lambda: rng.uniform(30, 90),
                    offset=lambda: rng.uniform(0.0, 2.0),
                )
            )
    else:
        events.extend(_cli_events(device, rng, days, ids, first, detail))
    return (
        Device(device.ident, kind, holders, device.shared_store, device.victim, detail),
        events,
    )


def _cli_events(
    device: Device,
    rng: random.Random,
    days: float,
    ids: _Ids,
    first: float,
    detail: dict[str, float],
) -> list[Event]:
    stale_rate = rng.uniform(0.2, 0.6)
    detail["stale_per_day"] = stale_rate
    windows = _daily(days, _workday(rng, 8, 10, 6, 9))
    events: list[Event] = []
    last_refresh = first - ACCESS_TOKEN_TTL
    copies = 0
    for w in windows:
        t = w.start
        while t < w.end:
            # An invocation refreshes only if the access token in the file has expired.
            if t - last_refresh >= ACCESS_TOKEN_TTL:
                events.append(Attempt(t, device.ident, 0, True, False, _rtt(rng), ids.take()))
                last_refresh = t
            t += rng.uniform(10, 60) * 60
        if rng.random() < stale_rate:
            copied = rng.uniform(w.start, w.end)
            events.append(Snapshot(copied, device.ident, copies))
            presented = copied + rng.uniform(1, 6) * HOUR
            if presented < days * DAY:
                events.append(PresentCopy(presented, device.ident, copies, _rtt(rng)))
            copies += 1
    return events


def _thief_events(
    plan: ThiefPlan, rng: random.Random, victim_attempts: list[Attempt], end: float
) -> list[Event]:
    events: list[Event] = [Theft(plan.stolen_at, plan.victim, plan.ident)]
    later = [a for a in victim_attempts if a.at > plan.stolen_at]
    if plan.strategy is Strategy.LOCKSTEP:
        events.extend(
            ThiefUse(a.at + rng.uniform(0.5, 3.0), plan.ident, Use.LOCKSTEP, a.ident) for a in later
        )
        return events
    if plan.strategy is Strategy.AT_ONCE:
        first = plan.stolen_at + rng.uniform(1, 60)
    elif plan.strategy is Strategy.AFTER_NEXT_REFRESH:
        if not later:
            return events
        # Log-uniform from 1 s to an hour after the victim's next refresh: windows of
        # seconds, minutes and the rest each get their share.
        first = later[0].at + math.exp(rng.uniform(0, math.log(HOUR)))
    else:
        first = plan.stolen_at + rng.uniform(2, 8) * HOUR
    t = first
    use = Use.FIRST
    while t < end:
        events.append(ThiefUse(t, plan.ident, use))
        use = Use.OWN
        t += ACCESS_TOKEN_TTL
    return events


def generate(seed: int, days: float, mix: Mix) -> Scenario:
    """Every device's and thief's intentions for the run."""
    ids = _Ids()
    devices: list[Device] = []
    events: list[Event] = []
    attempts_of: dict[int, list[Attempt]] = {}

    def add(kind: Kind, victim: bool) -> Device:
        ident = len(devices)
        rng = random.Random(f"{seed}:device:{ident}")
        shared = kind in (Kind.AGENT, Kind.CLI)
        device, own = _device_events(Device(ident, kind, 1, shared, victim), rng, days, ids)
        devices.append(device)
        events.extend(own)
        attempts_of[ident] = [e for e in own if isinstance(e, Attempt)]
        return device

    for kind, count in mix.devices.items():
        for _ in range(count):
            add(kind, victim=False)

    thieves: list[ThiefPlan] = []
    end = days * DAY
    for strategy in Strategy:
        for with_key in (False, True):
            for n in range(mix.thefts_per_cell):
                victim = add(mix.victim_kinds[n % len(mix.victim_kinds)], victim=True)
                rng = random.Random(f"{seed}:thief:{len(thieves)}")
                plan = ThiefPlan(
                    len(thieves),
                    victim.ident,
                    strategy,
                    with_key,
                    stolen_at=rng.uniform(0.1, 0.6) * end,
                )
                thieves.append(plan)
                events.extend(_thief_events(plan, rng, attempts_of[victim.ident], end))

    order = {Login: 0, Snapshot: 1, Attempt: 2, PresentCopy: 3, Theft: 4, ThiefUse: 5}
    events.sort(key=lambda e: (e.at, order[type(e)]))
    return Scenario(seed, days, tuple(devices), tuple(thieves), tuple(events))
