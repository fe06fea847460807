"""The steady load: devices that log in, rotate on their own clocks, are introspected
now and then and log out, over bench.load's HTTP client from many loopback addresses.

A device holds one session at a time: it logs in (`/auth/login`, a few per second in
all), rotates every `period` seconds of its own (drawn once per device, with jitter on
each wait), half of the devices at `/oauth/token` (RFC 6749 §6) and half at
`/auth/refresh`, has a resource server introspect its access token (RFC 7662) before
a share of its rotations, and after a number of rotations logs out (`/auth/logout`)
and logs in again. Requests go through a small pool of kept-alive connections per
source address; a connection idle for longer than the server's keep-alive (uvicorn's
5 s) is reopened first, as browsers and HTTP client libraries do, so a close racing
a request is not counted as the server's error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

from bench.load.http import Client, Response, _Connection

PASSWORD_CLIENT = "native"
EXPECTED = {"login": 200, "token": 200, "refresh": 200, "introspect": 200, "logout": 204}
IDLE_REOPEN = 4.0  # below uvicorn's 5 s keep-alive


class AddressedClient(Client):
    """bench.load's one-connection client, connecting from a chosen loopback address,
    reopening a connection that has been idle for IDLE_REOPEN seconds."""

    def __init__(self, host: str, port: int, source: str) -> None:
        super().__init__(host, port, timeout=30.0)
        self.source = source
        self.last_used = 0.0

    async def _connection(self) -> _Connection:
        if self._conn is not None and time.monotonic() - self.last_used > IDLE_REOPEN:
            self.close()
        if self._conn is None or self._conn.closed:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_connection(
                _Connection, self.host, self.port, local_addr=(self.source, 0)
            )
            self._conn = protocol
            self.connects += 1
        return self._conn

    async def send(self, request: bytes) -> Response:
        try:
            return await super().send(request)
        finally:
            self.last_used = time.monotonic()


@dataclass
class Minute:
    """What happened in one minute of the run."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    by_kind_latencies: dict[str, list[float]] = field(default_factory=dict)


class Recorder:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.minutes: dict[int, Minute] = {}
        self.examples: list[str] = []

    def minute(self) -> int:
        return int((time.monotonic() - self.start) // 60)

    def record(self, kind: str, status: int, seconds: float, body: bytes = b"") -> None:
        minute = self.minutes.setdefault(self.minute(), Minute())
        minute.by_kind[kind] += 1
        minute.by_status[status] += 1
        minute.latencies.append(seconds)
        # Rotations at either endpoint are one kind for the latency figures.
        group = "rotation" if kind in ("token", "refresh") else kind
        minute.by_kind_latencies.setdefault(group, []).append(seconds)
        if status != EXPECTED[kind]:
            self.error(kind, str(status or "transport"), body)

    def error(self, kind: str, what: str, body: bytes = b"") -> None:
        minute = self.minutes.setdefault(self.minute(), Minute())
        minute.errors[f"{kind} {what}"] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind} {what}: {body[:300]!r}")


@dataclass(frozen=True)
class Load:
    host: str
    port: int
    devices: int
    period: float  # mean seconds between a device's rotations
    session_rotations: int  # mean rotations before a device logs out
    introspect_share: float
    addresses: int
    connections_per_address: int
    users: dict[str, str]  # username -> password
    resource_servers: dict[str, str]  # client id -> secret
    ramp: float  # seconds over which the devices' first logins are spread
    seed: int = 1

    @property
    def rate(self) -> float:
        """Planned requests per second once every device is up."""
        per_rotation = 1 + self.introspect_share + 2 / self.session_rotations
        return self.devices / self.period * per_rotation


def _request(host: str, path: str, content_type: str, body: bytes, auth: str = "") -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Accept: application/json",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if auth:
        head.append(f"Authorization: {auth}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Driver:
    def __init__(self, load: Load, recorder: Recorder) -> None:
        self.load = load
        self.recorder = recorder
        self.stopping = asyncio.Event()
        self.host = f"{load.host}:{load.port}"
        self.pools: list[asyncio.Queue[AddressedClient]] = []
        for n in range(load.addresses):
            source = f"127.0.{1 + n // 250}.{1 + n % 250}"
            pool: asyncio.Queue[AddressedClient] = asyncio.Queue()
            for _ in range(load.connections_per_address):
                pool.put_nowait(AddressedClient(load.host, load.port, source))
            self.pools.append(pool)
        self.basic = {
            rs: "Basic " + base64.b64encode(f"{rs}:{secret}".encode()).decode()
            for rs, secret in load.resource_servers.items()
        }

    async def call(self, address: int, kind: str, request: bytes) -> Response | None:
        pool = self.pools[address]
        client = await pool.get()
        started = time.monotonic()
        try:
            response: Response | None = await client.send(request)
        except (OSError, TimeoutError) as failure:
            response = None
            self.recorder.record(kind, 0, time.monotonic() - started, repr(failure).encode())
        finally:
            pool.put_nowait(client)
        if response is not None:
            self.recorder.record(kind, response.status, time.monotonic() - started, response.body)
            if response.status != EXPECTED[kind]:
                return None
        return response

    async def login(self, address: int, username: str) -> tuple[str, str] | None:
        body = json.dumps(
            {
                "username": username,
                "password": self.load.users[username],
                "client_id": PASSWORD_CLIENT,
                "device_name": "soak",
            }
        ).encode()
        answer = await self.call(
            address, "login", _request(self.host, "/auth/login", "application/json", body)
        )
        if answer is None:
            return None
        issued = json.loads(answer.body)
        return issued["refresh_token"], issued["access_token"]

    async def rotate(self, address: int, kind: str, refresh: str) -> tuple[str, str] | None:
        if kind == "token":
            form = f"grant_type=refresh_token&refresh_token={quote(refresh, safe='')}"
            form += f"&client_id={PASSWORD_CLIENT}"
            request = _request(
                self.host, "/oauth/token", "application/x-www-form-urlencoded", form.encode()
            )
        else:
            body = json.dumps({"client_id": PASSWORD_CLIENT, "refresh_token": refresh})
            request = _request(self.host, "/auth/refresh", "application/json", body.encode())
        answer = await self.call(address, kind, request)
        if answer is None:
            return None
        issued = json.loads(answer.body)
        return issued["refresh_token"], issued["access_token"]

    async def introspect(self, address: int, resource_server: str, access: str) -> None:
        form = f"token={quote(access, safe='')}".encode()
        request = _request(
            self.host,
            "/oauth/introspect",
            "application/x-www-form-urlencoded",
            form,
            self.basic[resource_server],
        )
        answer = await self.call(address, "introspect", request)
        if answer is not None and json.loads(answer.body).get("active") is not True:
            self.recorder.error("introspect", "inactive", answer.body)

    async def logout(self, address: int, refresh: str) -> None:
        body = json.dumps({"client_id": PASSWORD_CLIENT, "refresh_token": refresh}).encode()
        await self.call(
            address, "logout", _request(self.host, "/auth/logout", "application/json", body)
        )

    async def pause(self, seconds: float) -> bool:
        """Wait; False once the run is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def device(self, ident: int) -> None:
        load = self.load
        rng = random.Random(load.seed * 1_000_003 + ident)
        address = ident % load.addresses
        username = sorted(load.users)[ident % len(load.users)]
        resource_servers = sorted(load.resource_servers)
        kind = "token" if ident % 2 == 0 else "refresh"
        period = rng.uniform(0.5, 1.5) * load.period  # this device's own clock
        if not await self.pause(rng.uniform(0, load.ramp)):
            return
        while True:
            issued = await self.login(address, username)
            if issued is None:
                if not await self.pause(period):
                    return
                continue
            refresh, access = issued
            for _ in range(
                rng.randint(load.session_rotations // 2, load.session_rotations * 3 // 2)
            ):
                if not await self.pause(period * rng.uniform(0.8, 1.2)):
                    await self.logout(address, refresh)
                    return
                if rng.random() < load.introspect_share:
                    await self.introspect(address, rng.choice(resource_servers), access)
                rotated = await self.rotate(address, kind, refresh)
                if rotated is None:
                    break  # counted; start a new session
                refresh, access = rotated
            else:
                await self.logout(address, refresh)

    async def run(self) -> None:
        await asyncio.gather(*(self.device(n) for n in range(self.load.devices)))
