"""Callers rotating refresh-token chains through the engine, in one or more processes.

Each caller owns one preloaded session, drawn at random, and rotates its chain through
`Refresher.refresh` for the whole run, presenting each answer's refresh token next. An
answer that is not a fresh refresh token ends the caller's chain and is counted; so is
an `InvalidGrant` (the chain is dead). Any other error (the store timed out, say) is
counted and the same token presented again, as a client would retry: within the
grace window that is a replay, which converges on the same successor.

Every process opens its own engine, derives its callers' first tokens, then waits at
a barrier, so the processes start together; the first `warmup` seconds fill the
connection pools and are not measured. Latency is recorded with `perf_counter_ns` for
every call that starts inside the measured window; throughput is those calls over the
window.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from bench.engine.preload import CLIENT, Target, first_tokens
from bench.engine.quiet import wait_for_quiet
from bench.latency import summary
from keyturn.core.errors import InvalidGrant
from keyturn.crypto.refresh_codec import PREFIX
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from keyturn.wiring import open_engine

MAX_RETRIES = 100
"""Consecutive failures of one token after which its caller gives up."""


class Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True, slots=True)
class Share:
    """What one process measured."""

    latencies_ns: list[int]
    errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class Result:
    """One configuration, all processes merged."""

    store: str
    sessions: int
    processes: int
    concurrency: int
    pool_size: int
    seconds: float
    rotations: int
    rotations_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    busy_before: float
    """Whole-machine CPU use (%) sampled just before the line: others' load."""


def error_kind(error: BaseException) -> str:
    detail = getattr(error, "detail", "")
    return f"{type(error).__name__}({detail})" if detail else type(error).__name__


async def drive(
    target: Target, indices: list[int], seconds: float, warmup: float, barrier: Barrier
) -> Share:
    """Run one caller per session index in this process."""
    engine = await open_engine(target.settings(), schema=target.schema)
    try:
        client = ClientCredentials(CLIENT, None, AuthMethod.NONE)
        tokens = await first_tokens(engine, target, indices)
        latencies: list[int] = []
        errors: Counter[str] = Counter()
        barrier.wait(timeout=300)
        start = time.perf_counter_ns() + int(warmup * 1e9)
        end = start + int(seconds * 1e9)

        async def caller(token: str) -> None:
            failures = 0
            while (began := time.perf_counter_ns()) < end:
                try:
                    issued = await engine.refresher.refresh_for(client, token)
                except InvalidGrant as refused:
                    errors[error_kind(refused)] += 1
                    return
                except Exception as error:  # counted, and the same token retried
                    errors[error_kind(error)] += 1
                    failures += 1
                    if failures >= MAX_RETRIES:
                        return
                    continue
                done = time.perf_counter_ns()
                if began >= start:
                    latencies.append(done - began)
                successor = issued.refresh_token
                if not successor or successor == token or not successor.startswith(PREFIX):
                    errors["no fresh refresh token"] += 1
                    return
                if not issued.access_token:
                    errors["no access token"] += 1
                    return
                token, failures = successor, 0

        await asyncio.gather(*(caller(t) for t in tokens))
        return Share(latencies, dict(errors))
    finally:
        await engine.close()


def _in_process(
    target: Target, indices: list[int], seconds: float, warmup: float, barrier: Barrier
) -> Share:
    return asyncio.run(drive(target, indices, seconds, warmup, barrier))


def merge(
    target: Target,
    processes: int,
    concurrency: int,
    seconds: float,
    shares: list[Share],
    busy_before: float,
) -> Result:
    return Result(
        store=target.store,
        sessions=target.sessions,
        processes=processes,
        concurrency=concurrency,
        pool_size=target.pool_size,
        seconds=seconds,
        **summary(shares, seconds),
        busy_before=round(busy_before, 1),
    )


def measure(
    target: Target,
    processes: int,
    concurrency: int,
    seconds: float,
    warmup: float,
    rng: random.Random,
    quiet: float = 180.0,
) -> Result:
    """`concurrency` callers split over `processes` OS processes, against `target`,
    once the machine is idle (waiting at most `quiet` seconds)."""
    if concurrency < processes:
        raise ValueError("at least one caller per process")
    busy = wait_for_quiet(patience=quiet)
    indices = rng.sample(range(1, target.sessions + 1), concurrency)
    shares = [indices[p::processes] for p in range(processes)]
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager:
        barrier: Any = manager.Barrier(processes)
        with ProcessPoolExecutor(max_workers=processes, mp_context=spawn) as pool:
            futures = [
                pool.submit(_in_process, target, share, seconds, warmup, barrier)
                for share in shares
            ]
            measured = [f.result(timeout=seconds + warmup + 600) for f in futures]
    return merge(target, processes, concurrency, seconds, measured, busy)
