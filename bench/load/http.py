"""A minimal HTTP/1.1 client for one connection at a time, on asyncio's protocol layer.

A load generator must cost the machine far less than the server it measures. httpx
spends a few hundred microseconds of Python per request; this client writes prebuilt
request bytes and parses only what the generator reads back (status line,
`Content-Length`, `Transfer-Encoding: chunked`, `Connection: close`), a few tens of
microseconds. It keeps the connection alive when the server does and reconnects when
the server closes it (gunicorn's sync workers answer every request with
`Connection: close`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast


class ServerClosed(ConnectionError):
    """The server closed the connection before a whole response arrived."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    close: bool


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length or None, chunked, close) of a response head."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    status = int(rest[:3])
    length: int | None = None
    chunked = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            close = token == b"close" or (close and token != b"keep-alive")
    if status in (204, 304) or 100 <= status < 200:
        # No body, whatever the headers say (RFC 9112 §6.3): waiting for one would wait
        # for the server to close the connection.
        return status, 0, False, close
    return status, length, chunked, close


def _dechunk(data: bytes | bytearray) -> tuple[bytes, int] | None:
    """The body of a chunked message and the bytes it took, or None if incomplete."""
    body = bytearray()
    at = 0
    while True:
        eol = data.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(bytes(data[at:eol]).split(b";")[0], 16)
        at = eol + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", at - 2)  # no trailers: the CRLF after "0\r\n"
            if end < 0:
                return None
            return bytes(body), end + 4
        if len(data) < at + size + 2:
            return None
        body += data[at : at + size]
        at += size + 2


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._complete()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ServerClosed(str(exc) if exc else "closed"))

    def _complete(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        status, length, chunked, close = _parse_head(bytes(self.buffer[:end]))
        start = end + 4
        if chunked:
            found = _dechunk(self.buffer[start:])
            if found is None:
                return
            body, used = found
            rest = start + used
        elif length is not None:
            if len(self.buffer) < start + length:
                return
            body, rest = bytes(self.buffer[start : start + length]), start + length
        elif self.closed:  # no length: the body runs to the end of the connection
            body, rest, close = bytes(self.buffer[start:]), len(self.buffer), True
        else:
            return
        del self.buffer[:rest]
        waiter.set_result(Response(status, body, close))


class Client:
    """One connection to `host:port`, one request in flight at a time."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn: _Connection | None = None
        self.connects = 0

    async def _connection(self) -> _Connection:
        if self._conn is None or self._conn.closed:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_connection(_Connection, self.host, self.port)
            self._conn = protocol
            self.connects += 1
        return self._conn

    async def send(self, request: bytes) -> Response:
        """Send one whole request; the whole response. Raises `OSError` (refused,
        reset, closed early) or `TimeoutError`."""
        conn = await self._connection()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        conn.waiter = waiter
        assert conn.transport is not None
        conn.transport.write(request)
        timer = loop.call_later(
            self.timeout,
            lambda: waiter.done() or waiter.set_exception(TimeoutError("no answer")),
        )
        try:
            response = await waiter
        except BaseException:
            self.close()
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if response.close:
            self.close()
        return response

    def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None
