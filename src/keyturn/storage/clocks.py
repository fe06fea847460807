"""The clock every rule of a deployment reads (H-18, H-19; docs/decisions/one-clock.md).

On PostgreSQL many hosts decide on one database, and their wall clocks differ by
seconds: one host would judge a token inside its retry window and another outside, or a
session opened before the password it was opened with. They all read the database's
clock instead (`DatabaseClock`), without a round trip: the database's time as its last
answer gave it, plus the time elapsed since on a clock no step can move.

On SQLite (one host) the host's wall clock is the deployment's, but it can be stepped
(an operator, NTP after a long drift, a VM resumed): `HostClock` holds its reading
steady across a step for a while, so that a rotation made just before a step is judged
on the scale it was made on, then follows the wall clock again.

Both measure elapsed time on the kernel's tick counter (`times(2)`): one for every
process of a host, moved by no step of the wall clock, and read without the C library's
`clock_gettime`, so a preloaded time library (libfaketime, in the tests) moves only the
wall clock, as a real step does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from keyturn.core.ports import Clock

STEP_SECONDS = 1.0
"""A change of the wall clock against elapsed time larger than this is a step, not the
slow slewing of NTP (at most 0.5 ms per second)."""
STEP_HOLD_SECONDS = 300.0
"""How long `HostClock` keeps the scale it had before a step: as long as the longest
server-wide retry window (`grace_seconds` is at most 300), so a retry of a rotation made
just before the step is judged by the time that really passed."""
REGRESSION_SECONDS = 1.0
"""A `DatabaseClock` never goes back by less than this (two samples of one clock taken
over a network disagree by milliseconds); by more, the database's clock was stepped."""
RESAMPLE_SECONDS = 60.0
"""A `DatabaseClock` takes any sample once its anchor is this old, even one that reads
earlier: the database's clock may have been stepped back, or the host's steady clock
may have drifted from it (by parts per million)."""


def _ticks() -> float:
    """Seconds on the kernel's tick counter (10 ms resolution), or 0 where it is not
    kept (then `SteadyTime` is the monotonic clock alone)."""
    return os.times().elapsed


class SteadyTime:
    """Seconds since an arbitrary moment, fine-grained and never stepped: the monotonic
    clock, kept on the scale of the tick counter. Should the two part by more than half
    a second (a monotonic clock moved by a preloaded time library), the ticks win."""

    def __init__(
        self,
        fine: Callable[[], float] = time.monotonic,
        coarse: Callable[[], float] = _ticks,
    ) -> None:
        self._fine = fine
        self._coarse = coarse
        self._base = coarse() - fine()

    def __call__(self) -> float:
        fine, coarse = self._fine(), self._coarse()
        value = fine + self._base
        if coarse and abs(value - coarse) > 0.5:
            self._base = coarse - fine
            value = coarse
        return value


class HostClock:
    """The host's wall clock, held steady for `hold` seconds after a step.

    While the wall clock runs true (its distance to the steady time changes by less
    than `STEP_SECONDS` between readings) it is read as is. After a step it is read as
    it would have run without the step, for `hold` seconds, then as it is again: a
    retry of a rotation made just before the step is judged by the time that passed,
    and the step is taken once no window of that rotation can still be open.
    """

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        steady: Callable[[], float] | None = None,
        hold: float = STEP_HOLD_SECONDS,
    ) -> None:
        self._wall = wall
        self._steady = steady or SteadyTime()
        self._hold = hold
        self._offset: float | None = None
        """Wall time minus steady time, as it was before any step now held."""
        self._stepped_at: float | None = None

    def now(self) -> datetime:
        wall, steady = self._wall(), self._steady()
        offset = wall - steady
        if self._offset is None or abs(offset - self._offset) <= STEP_SECONDS:
            self._offset, self._stepped_at = offset, None
            return datetime.fromtimestamp(wall, UTC)
        if self._stepped_at is None:
            self._stepped_at = steady
        if steady - self._stepped_at < self._hold:
            return datetime.fromtimestamp(steady + self._offset, UTC)
        self._offset, self._stepped_at = offset, None
        return datetime.fromtimestamp(wall, UTC)


class DatabaseClock:
    """The database server's clock, read without asking it.

    The store gives it the database's `clock_timestamp()` from statements it sends
    anyway (each new connection's first, the rotation's, the readiness probe's) with
    the steady time the answer arrived; `now()` is that time plus the steady time
    elapsed since. Every host on one database reads within a network delay of the same
    time, and no step of a host's clock moves it. Before its first sample (no statement
    answered yet) it reads `fallback`.

    A sample stamped late (the answer waited for a busy event loop) reads behind, never
    ahead: of the samples of the last `RESAMPLE_SECONDS` the one that reads latest is
    kept, as NTP keeps the sample of least delay.
    """

    def __init__(
        self, fallback: Clock | None = None, steady: Callable[[], float] | None = None
    ) -> None:
        self._fallback = fallback or HostClock()
        self._steady = steady or SteadyTime()
        self._offset: float | None = None
        """Database time minus steady time, by the best sample."""
        self._anchored_at = float("-inf")
        self._last = float("-inf")

    def steady(self) -> float:
        """The steady time now, to stamp a sample with."""
        return self._steady()

    def sample(self, database_time: datetime, received: float) -> None:
        """The database read `database_time` in an answer that arrived at steady time
        `received` (at most a network delay after it read it)."""
        offset = database_time.timestamp() - received
        stale = received - self._anchored_at > RESAMPLE_SECONDS
        if self._offset is None or offset >= self._offset or stale:
            self._offset, self._anchored_at = offset, received

    def now(self) -> datetime:
        if self._offset is None:
            return self._fallback.now()
        value = self._steady() + self._offset
        if self._last - REGRESSION_SECONDS <= value < self._last:
            # A later sample read a few milliseconds earlier than the one before: the
            # process's readings never go back for that.
            value = self._last
        self._last = value
        return datetime.fromtimestamp(value, UTC)


def deployment_clock(store: object) -> Clock:
    """The clock of a deployment on `store`: the database's when the store keeps one
    (PostgreSQL), else the host's."""
    found = getattr(store, "clock", None)
    return found if isinstance(found, DatabaseClock) else HostClock()
