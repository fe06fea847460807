"""Worker processes that race the PostgreSQL store itself, below the engine.

Each worker opens its own `PostgresStore` on the shared schema with one warm connection
per task. For every trial it receives a `Trial` on its pipe, meets the other workers at a
barrier, and runs its tasks at once: each task advances the session from the trial's
generation or revokes it. It answers with one `(action, result)` per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.ids import SessionId
from keyturn.core.models import RevocationReason
from keyturn.storage.postgres import PostgresStore, open_postgres

ADVANCE = "advance"
REVOKE = "revoke"


@dataclass(frozen=True)
class Trial:
    session_id: str
    generation: int
    actions: tuple[str, ...]
    """One per task of this worker: ADVANCE or REVOKE."""


def worker(
    url: str,
    schema: str,
    tasks: int,
    conn: multiprocessing.connection.Connection,
    barrier: multiprocessing.synchronize.Barrier,
) -> None:
    asyncio.run(_serve(url, schema, tasks, conn, barrier))


async def _serve(
    url: str,
    schema: str,
    tasks: int,
    conn: multiprocessing.connection.Connection,
    barrier: multiprocessing.synchronize.Barrier,
) -> None:
    store = await open_postgres(url, timeout=10, pool_size=tasks, schema=schema)
    try:
        # One connection per task before the race, so no task pays for a connect.
        await asyncio.gather(*(store.ping() for _ in range(tasks)))
        conn.send("ready")
        while (trial := conn.recv()) is not None:
            barrier.wait(timeout=60)
            results = await asyncio.gather(*(_act(store, trial, a) for a in trial.actions))
            conn.send(list(results))
    finally:
        await store.close()


async def _act(store: PostgresStore, trial: Trial, action: str) -> tuple[str, bool]:
    sid = SessionId(trial.session_id)
    at = datetime.now(UTC)
    if action == ADVANCE:
        won = await store.advance_generation(sid, trial.generation, at, at + timedelta(hours=1))
    else:
        event = SecurityEvent(type=EventType.SESSION_REVOKED, at=at, session_id=sid)
        won = bool(await store.revoke_session(sid, RevocationReason.ADMIN_REVOKED, at, event))
    return action, won


class Racers:
    """`processes` racing workers, used as a context manager."""

    def __init__(self, url: str, schema: str, processes: int, tasks: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(processes)
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker, args=(url, schema, tasks, child, self.barrier), daemon=True
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def __enter__(self) -> Racers:
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise TimeoutError("a racer did not start")
            assert pipe.recv() == "ready"
        return self

    def race(self, trials: list[Trial]) -> list[list[tuple[str, bool]]]:
        """Worker i runs `trials[i]`; returns each worker's results."""
        for pipe, trial in zip(self.pipes, trials, strict=True):
            pipe.send(trial)
        answers: list[list[tuple[str, bool]]] = []
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise TimeoutError("a racer did not answer")
            answers.append(pipe.recv())
        return answers

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
