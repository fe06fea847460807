"""Trivial token endpoints, to find what the load generator itself can drive, and the
floor of a rotation on keyturn's stack.

    python -m bench.load.trivial --port P [--kind raw|starlette|floor-sqlite|floor-postgres]

Both answer every request with 200 and RFC 6749 §5.1 JSON carrying a fresh
`refresh_token` (a counter), so the generator's checks pass, and do nothing else.
`raw` is an asyncio protocol on uvloop that parses no more than it must (the cheapest
server a Python process can be); `starlette` is a Starlette route under uvicorn with
httptools, the stack keyturn serves on, for reference.

`floor-sqlite` and `floor-postgres` are that Starlette route doing the database work of
a rotation and nothing else, the way keyturn does it: on SQLite, read one row of 10,000
by primary key, then a compare-and-swap `UPDATE ... WHERE generation = <read>`, the
rotations of one turn of the event loop in one transaction (keyturn's `TurnBatcher`),
on the event loop's thread, durable as keyturn's (WAL, `synchronous=FULL`, the WAL
file written ahead so commits overwrite it in place); on PostgreSQL, one statement that
reads the row and advances it only if it is still at the generation read (`WITH ...
UPDATE`), committed on its own, through an asyncpg pool of 10. Both are served by
keyturn's own uvicorn protocol (one write per response). No client authentication, no
token MAC, no signing, no logging, no metrics: what no rotation served this way can
beat on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import cast

_counter = itertools.count()
_ACCESS = "a" * 400  # about the size of an ES256 JWT access token


def _body() -> bytes:
    n = next(_counter)
    return (
        f'{{"access_token":"{_ACCESS}","token_type":"Bearer","expires_in":900,'
        f'"refresh_token":"kt_rt_trivial{n:024d}"}}'
    ).encode()


class _Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            body = _body()
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )


async def _serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Raw, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _starlette_app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def token(request: Request) -> Response:
        await request.body()
        return Response(_body(), media_type="application/json")

    return Starlette(routes=[Route("/oauth/token", token, methods=["POST"])])


FLOOR_ROWS = 10_000
FLOOR_WAL = 8 * 1024 * 1024
"""Bytes of WAL written ahead, as keyturn's SQLite store does (`_WAL_RESERVE`)."""


# keyturn's rotation statement, stripped to one table: the row as read, and the
# compare-and-swap on what was read, in one round trip.
_FLOOR_ROTATION = """
WITH pre AS (SELECT id, generation FROM floor WHERE id = $1),
moved AS (
    UPDATE floor f SET generation = pre.generation + 1 FROM pre
    WHERE f.id = pre.id AND f.generation = pre.generation
    RETURNING f.generation
)
SELECT pre.generation, moved.generation AS moved FROM pre LEFT JOIN moved ON true
"""


def _floor_app(store: str, target: str, schema: str) -> object:
    import random
    import sqlite3

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    if store == "sqlite":
        from keyturn.storage.batching import TurnBatcher

        db = sqlite3.connect(target, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, generation INT)")
        db.execute("DELETE FROM floor")
        db.executemany("INSERT INTO floor VALUES (?, 0)", ((i,) for i in range(FLOOR_ROWS)))
        with open(target + "-wal", "r+b") as wal:
            wal.seek(0, 2)
            wal.write(bytes(max(0, FLOOR_WAL - wal.tell())))
            wal.flush()
            os.fdatasync(wal.fileno())

        async def rotate_all(keys: Sequence[int]) -> list[None]:
            db.execute("BEGIN IMMEDIATE")
            for key in keys:
                (generation,) = db.execute(
                    "SELECT generation FROM floor WHERE id = ?", (key,)
                ).fetchone()
                db.execute(
                    "UPDATE floor SET generation = ? WHERE id = ? AND generation = ?",
                    (generation + 1, key, generation),
                )
            db.execute("COMMIT")
            return [None] * len(keys)

        turns: TurnBatcher[int, None] = TurnBatcher(rotate_all, 64)

        async def rotate_sqlite(request: Request) -> Response:
            await request.body()
            await turns.submit(random.randrange(FLOOR_ROWS))
            return Response(_body(), media_type="application/json")

        return Starlette(routes=[Route("/oauth/token", rotate_sqlite, methods=["POST"])])

    import asyncpg

    pools: list[asyncpg.Pool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:  # noqa: ARG001 - Starlette's signature
        async def keep(conn: asyncpg.Connection) -> None:  # noqa: ARG001 - no state to reset
            return None

        setup = await asyncpg.connect(target)
        await setup.execute(
            f"CREATE SCHEMA IF NOT EXISTS {schema}; "
            f"CREATE TABLE {schema}.floor (id int PRIMARY KEY, generation int NOT NULL) "
            "WITH (fillfactor = 80); "
            f"INSERT INTO {schema}.floor SELECT i, 0 FROM generate_series(0, {FLOOR_ROWS - 1}) i"
        )
        await setup.execute(f"VACUUM ANALYZE {schema}.floor")
        await setup.close()
        pools.append(
            await asyncpg.create_pool(
                target,
                min_size=10,
                max_size=10,
                reset=keep,
                server_settings={"search_path": schema},
            )
        )
        yield
        await pools[0].close()

    async def rotate_postgres(request: Request) -> Response:
        await request.body()
        key = random.randrange(FLOOR_ROWS)
        pool = pools[0]
        await pool.fetchrow(_FLOOR_ROTATION, key)
        return Response(_body(), media_type="application/json")

    return Starlette(
        routes=[Route("/oauth/token", rotate_postgres, methods=["POST"])], lifespan=lifespan
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load.trivial")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--kind", choices=("raw", "starlette", "floor-sqlite", "floor-postgres"), default="raw"
    )
    parser.add_argument("--target", default="", help="floor: SQLite file or PostgreSQL URL")
    parser.add_argument("--schema", default="bench_floor", help="floor-postgres: its schema")
    args = parser.parse_args(argv)
    if args.kind == "raw":
        import uvloop

        uvloop.run(_serve_raw(args.port))
        return
    import uvicorn

    from keyturn.web.http_protocol import OneWriteHttpToolsProtocol

    app = (
        _floor_app(args.kind.removeprefix("floor-"), args.target, args.schema)
        if args.kind.startswith("floor-")
        else _starlette_app()
    )
    print("ready", flush=True)
    floor = args.kind.startswith("floor-")
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        **({"http": OneWriteHttpToolsProtocol} if floor else {}),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
