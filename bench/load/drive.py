"""C workers, each continuing its own refresh-token chain, for a fixed time.

Each worker takes one starting token and presents, every time, the refresh token the
last answer carried. A refused token (any 4xx, or a 200 without a fresh refresh token)
ends that chain: the error is counted and the worker takes a spare starting token, if
any is left, so the concurrency holds. A 5xx or a transport error is counted and the
same token is presented again, as a client retries.

The workers are asyncio tasks on uvloop, split evenly over `processes` OS processes
that start together at a barrier. The first `warmup` seconds are not measured (the
server fills its pools and caches). Latency is measured for every rotation that starts
inside the window; throughput is those rotations over the window. Each process also
records the CPU time it used inside the window, so the generator's own share of the
machine is known.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from bench.latency import summary
from bench.load.http import Client
from bench.load.shapes import Endpoint, Shape

MAX_RETRIES = 50
"""Consecutive failures of one token after which its worker gives up."""


class Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


class _NoBarrier:
    def wait(self, timeout: float | None = None) -> int:  # noqa: ARG002 - the Barrier protocol
        return 0


@dataclass(frozen=True, slots=True)
class Share:
    """What one generator process measured."""

    latencies_ns: list[int]
    errors: dict[str, int]
    cpu_seconds: float
    """This process's user + system CPU time inside the measured window."""
    connects: int


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One run, all generator processes merged."""

    concurrency: int
    processes: int
    seconds: float
    rotations: int
    rotations_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    generator_cpu_percent: float
    """CPU the generator used in the window, in % of one core (200 = both cores)."""
    connects: int


def _run(main: Coroutine[Any, Any, Share]) -> Share:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def drive(
    endpoint: Endpoint,
    tokens: list[str],
    spares: list[str],
    seconds: float,
    warmup: float,
    barrier: Barrier,
) -> Share:
    """One worker per token in `tokens`, in this process."""
    shape = Shape(endpoint)
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    clients = [Client(endpoint.host, endpoint.port) for _ in tokens]
    barrier.wait(timeout=300)
    loop = asyncio.get_running_loop()
    start = time.perf_counter_ns() + int(warmup * 1e9)
    end = start + int(seconds * 1e9)
    cpu: dict[str, float] = {}
    loop.call_later(warmup, lambda: cpu.setdefault("start", _cpu()))
    loop.call_later(warmup + seconds, lambda: cpu.setdefault("end", _cpu()))

    async def worker(client: Client, token: str) -> None:
        failures = 0
        while (began := time.perf_counter_ns()) < end:
            try:
                response = await client.send(shape.request(token))
            except (OSError, TimeoutError) as error:
                errors[f"transport {type(error).__name__}"] += 1
                failures += 1
                if failures >= MAX_RETRIES:
                    return
                await asyncio.sleep(0.01)
                continue
            done = time.perf_counter_ns()
            outcome = shape.judge(response, token)
            if outcome.token is not None:
                if began >= start:
                    latencies.append(done - began)
                token, failures = outcome.token, 0
                continue
            errors[outcome.error or "error"] += 1
            if outcome.dead:
                if not spares:
                    return
                token, failures = spares.pop(), 0
            else:
                failures += 1
                if failures >= MAX_RETRIES:
                    return

    try:
        await asyncio.gather(*(worker(c, t) for c, t in zip(clients, tokens, strict=True)))
        remaining = (end - time.perf_counter_ns()) / 1e9
        if remaining > 0:  # every chain died early: still close the CPU window
            await asyncio.sleep(remaining + 0.01)
    finally:
        for client in clients:
            client.close()
    used = cpu.get("end", _cpu()) - cpu.get("start", _cpu())
    return Share(latencies, dict(errors), used, sum(c.connects for c in clients))


def _in_process(
    endpoint: Endpoint,
    tokens: list[str],
    spares: list[str],
    seconds: float,
    warmup: float,
    barrier: Barrier,
) -> Share:
    return _run(drive(endpoint, tokens, spares, seconds, warmup, barrier))


def merge(concurrency: int, processes: int, seconds: float, shares: list[Share]) -> LoadResult:
    return LoadResult(
        concurrency=concurrency,
        processes=processes,
        seconds=seconds,
        **summary(shares, seconds),
        generator_cpu_percent=round(100 * sum(s.cpu_seconds for s in shares) / seconds, 1),
        connects=sum(s.connects for s in shares),
    )


def run_load(
    endpoint: Endpoint,
    tokens: list[str],
    concurrency: int,
    seconds: float,
    warmup: float = 2.0,
    processes: int = 1,
) -> LoadResult:
    """Drive `endpoint` with `concurrency` chains, the first `concurrency` of `tokens`
    starting them and the rest kept as spares, split over `processes` processes."""
    if concurrency < processes:
        raise ValueError("at least one worker per generator process")
    if len(tokens) < concurrency:
        raise ValueError(f"{concurrency} workers need {concurrency} tokens, got {len(tokens)}")
    starting, spares = tokens[:concurrency], tokens[concurrency:]
    if processes == 1:
        share = _in_process(endpoint, starting, spares, seconds, warmup, _NoBarrier())
        return merge(concurrency, 1, seconds, [share])
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager:
        barrier: Any = manager.Barrier(processes)
        with ProcessPoolExecutor(max_workers=processes, mp_context=spawn) as pool:
            futures = [
                pool.submit(
                    _in_process,
                    endpoint,
                    starting[p::processes],
                    spares[p::processes],
                    seconds,
                    warmup,
                    barrier,
                )
                for p in range(processes)
            ]
            shares = [f.result(timeout=seconds + warmup + 600) for f in futures]
    return merge(concurrency, processes, seconds, shares)


def line(result: LoadResult, label: str = "") -> str:
    """The one-line summary of a run."""
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items())) or "0"
    return (
        f"{label}concurrency={result.concurrency:>3} "
        f"rotations/s={result.rotations_per_second:8.1f} "
        f"p50={result.p50_ms:.2f}ms p90={result.p90_ms:.2f}ms p99={result.p99_ms:.2f}ms "
        f"max={result.max_ms:.1f}ms errors={errors} "
        f"generator_cpu={result.generator_cpu_percent:.0f}% of a core "
        f"({result.processes} process{'es' if result.processes > 1 else ''})"
    )
