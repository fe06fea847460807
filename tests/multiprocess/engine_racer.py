"""Worker processes for the multi-process rotation races.

Each worker opens its own engine on the shared database, then for every trial waits for
a token on its pipe, meets the other workers at a barrier and presents the token from
several asyncio tasks at once. It answers with one outcome per task: ("ok", refresh
token) or ("error", error code).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
from dataclasses import dataclass
from typing import Any

from keyturn.core.errors import KeyturnError
from keyturn.core.models import Device
from keyturn.service.context import RequestContext
from support.engine import engine_with

Outcome = tuple[str, str]


@dataclass(frozen=True)
class RaceSpec:
    database_url: str
    schema: str | None
    grace_seconds: int
    tasks_per_process: int
    client_id: str = "native"
    ip: str | None = "192.0.2.1"
    """The address every racer presents from: the tabs or processes of one device."""


def worker(
    spec: RaceSpec,
    conn: multiprocessing.connection.Connection,
    barrier: multiprocessing.synchronize.Barrier,
) -> None:
    asyncio.run(_serve(spec, conn, barrier))


async def _serve(
    spec: RaceSpec,
    conn: multiprocessing.connection.Connection,
    barrier: multiprocessing.synchronize.Barrier,
) -> None:
    engine = await engine_with(
        spec.database_url, schema=spec.schema, grace_seconds=spec.grace_seconds
    )
    client = await engine.admin.get_client(spec.client_id)
    context = RequestContext(device=Device(ip=spec.ip))
    conn.send("ready")
    try:
        while True:
            message = conn.recv()
            if message is None:
                return
            operation, token = message if isinstance(message, tuple) else ("refresh", message)
            # Everyone reads the session before anyone presents: maximal contention.
            barrier.wait(timeout=60)

            async def present(token: str = token, operation: str = operation) -> Outcome:
                try:
                    if operation == "logout":
                        await engine.sessions.logout(token, client)
                        return ("ok", "logged out")
                    issued = await engine.refresher.refresh(token, client, context=context)
                except KeyturnError as error:
                    return ("error", error.code)
                return ("ok", issued.refresh_token or "")

            outcomes = await asyncio.gather(*(present() for _ in range(spec.tasks_per_process)))
            conn.send(list(outcomes))
    finally:
        await engine.close()


class Racers:
    """A pool of racing worker processes, used as a context manager."""

    def __init__(self, spec: RaceSpec, processes: int) -> None:
        self.spec = spec
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(processes)
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(spec, child, self.barrier), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def __enter__(self) -> Racers:
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise TimeoutError("a racer did not start")
            assert pipe.recv() == "ready"
        return self

    def race(self, *work: str | tuple[str, str]) -> list[Outcome]:
        """Process i presents `work[i % len(work)]`: a token to refresh, or an
        (operation, token) pair with operation "refresh" or "logout"."""
        for i, pipe in enumerate(self.pipes):
            pipe.send(work[i % len(work)])
        outcomes: list[Outcome] = []
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise TimeoutError("a racer did not answer")
            outcomes.extend(pipe.recv())
        return outcomes

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
