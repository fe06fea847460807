"""Trivial token endpoints, to find what the load generator itself can drive.

    python -m bench.load.trivial --port P [--kind raw|starlette]

Both answer every request with 200 and RFC 6749 §5.1 JSON carrying a fresh
`refresh_token` (a counter), so the generator's checks pass, and do nothing else.
`raw` is an asyncio protocol on uvloop that parses no more than it must (the cheapest
server a Python process can be); `starlette` is a Starlette route under uvicorn with
httptools, the stack keyturn serves on, for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load.trivial")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("raw", "starlette"), default="raw")
    args = parser.parse_args(argv)
    if args.kind == "raw":
        import uvloop

        uvloop.run(_serve_raw(args.port))
        return
    import uvicorn

    print("ready", flush=True)
    uvicorn.run(
        _starlette_app(),  # type: ignore[arg-type]
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
