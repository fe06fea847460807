"""C workers sending one kind of token request, each its own, for a fixed time: the
grants that are not a refresh chain, password logins at `POST /auth/login` and
client-credentials grants at `POST /oauth/token`.

Unlike a rotation, neither request consumes what it presents, so every worker repeats
its request for the whole run: `concurrency` requests are in flight at any time. The
first `warmup` seconds are not measured. A request that starts inside the window and
is answered 2xx counts, with its latency; any other answer is counted as an error by
its status (and RFC 6749 `error` code, if any), a transport failure by its exception,
during the warm-up too. Each worker keeps one connection of `bench.load.http` (prebuilt
request bytes, a few tens of microseconds per request, against httpx's few hundred:
with httpx the client-credentials lines measured the generator, not keyturn). They run
on uvloop in the calling process, so they take their CPU from the machine the server
runs on; `generator_cpu_percent` says how much (this whole process's CPU in the window).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvloop

from bench.latency import percentile
from bench.load.http import Client, Response
from bench.load.logins import CLIENT, PASSWORD

Request = Callable[[str, int], bytes]
"""The bytes of the `n`-th request of a run (numbered from 0 across all workers) to the
server at `host:port` (the first argument)."""


def _request(netloc: str, path: str, content_type: str, body: bytes, *headers: str) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {netloc}",
        "Accept: application/json",
        "User-Agent: bench.load.grants",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass(frozen=True, slots=True)
class GrantResult:
    """One run of one grant at one concurrency."""

    grant: str
    concurrency: int
    seconds: float
    granted: int
    """2xx answers to requests started inside the measured window."""
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    generator_cpu_percent: float
    """The benchmark process's CPU in the window, in % of one core."""


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _error(answer: Response) -> str:
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {answer.status} {code}" if isinstance(code, str) else f"HTTP {answer.status}"


async def drive(
    base: str, grant: str, request: Request, concurrency: int, seconds: float, warmup: float
) -> GrantResult:
    """`concurrency` workers sending `request` to the server at `base` for `warmup` +
    `seconds` seconds."""
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    numbers = itertools.count()
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    start = time.perf_counter_ns() + int(warmup * 1e9)
    end = start + int(seconds * 1e9)
    cpu: dict[str, float] = {}
    loop.call_later(warmup, lambda: cpu.setdefault("start", _cpu()))
    loop.call_later(warmup + seconds, lambda: cpu.setdefault("end", _cpu()))

    async def worker() -> None:
        client = Client(host, port, timeout=60)
        try:
            while (began := time.perf_counter_ns()) < end:
                try:
                    answer = await client.send(request(parts.netloc, next(numbers)))
                except (OSError, TimeoutError) as error:
                    errors[f"transport {type(error).__name__}"] += 1
                    await asyncio.sleep(0.01)
                    continue
                if 200 <= answer.status < 300:
                    if began >= start:
                        latencies.append(time.perf_counter_ns() - began)
                else:
                    errors[_error(answer)] += 1
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    used = cpu.get("end", _cpu()) - cpu.get("start", _cpu())
    latencies.sort()

    def ms(q: float) -> float:
        return round(percentile(latencies, q) / 1e6, 3)

    return GrantResult(
        grant=grant,
        concurrency=concurrency,
        seconds=seconds,
        granted=len(latencies),
        per_second=round(len(latencies) / seconds, 1),
        p50_ms=ms(0.50),
        p90_ms=ms(0.90),
        p99_ms=ms(0.99),
        max_ms=ms(1.0),
        errors=dict(errors),
        generator_cpu_percent=round(100 * used / seconds, 1),
    )


def run_grants(
    base: str, grant: str, request: Request, concurrency: int, seconds: float, warmup: float
) -> GrantResult:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(drive(base, grant, request, concurrency, seconds, warmup))


def logins(users: list[str]) -> Request:
    """Password logins of the public client `bench` (`bench.load.logins`), the users in
    turn: each one opens a session with its own device name."""

    def build(netloc: str, n: int) -> bytes:
        body = {
            "username": users[n % len(users)],
            "password": PASSWORD,
            "client_id": CLIENT,
            "device_name": f"sizing {n}",
        }
        return _request(netloc, "/auth/login", "application/json", json.dumps(body).encode())

    return build


def client_credentials(client_id: str, secret: str) -> Request:
    """RFC 6749 §4.4: `grant_type=client_credentials`, the client authenticated by HTTP
    Basic (§2.3.1; both parts form-urlencoded first, which leaves these ones as they
    are). The same bytes every time."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    body = b"grant_type=client_credentials"
    content_type = "application/x-www-form-urlencoded"
    cached: dict[str, bytes] = {}

    def build(netloc: str, n: int) -> bytes:  # noqa: ARG001 - the Request signature
        if netloc not in cached:
            cached[netloc] = _request(
                netloc, "/oauth/token", content_type, body, f"Authorization: Basic {basic}"
            )
        return cached[netloc]

    return build
