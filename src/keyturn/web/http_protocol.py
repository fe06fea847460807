"""uvicorn's httptools protocol, writing each response in one piece.

uvicorn writes a response's status line and headers, then its body, as two writes to
the socket: two `send` system calls, and on a loopback or LAN connection often two
segments the client has to read. A token response is small (about a kilobyte), so
that second call is a sizeable share of what serving it costs (`docs/benchmarks.md`,
"Where the time goes"). Here the protocol's transport holds a header block back until
the body's first write in the same turn of the event loop, and sends both at once.

Nothing can be held for long: what is held is sent at the end of the loop's current
turn in any case (a `HEAD` answer, or a body that will come later), and before the
connection is closed. Everything but `write`, `write_eof` and `close` goes to uvicorn's
transport.

The protocol also holds the limits uvicorn's httptools protocol lacks (H-05,
`docs/decisions/http-edge.md`): httptools buffers an unfinished header block without
bound, and a connection that sends nothing, or its headers a byte at a time, is never
closed. Here the bytes of each request's header block are counted as they arrive (a
block past `max_header_bytes` is answered 431 and the connection closed, RFC 6585 §5),
a request's headers and body must be complete `header_timeout` seconds after its
first byte (else 408, RFC 9110 §15.5.9), a new connection must send within `idle_timeout`
seconds, and a request over uvicorn's `limit_concurrency` gets an RFC 6749-shaped 503
with `Retry-After` instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

_HEADER_BLOCK_START = b"HTTP/1.1 "
_HEADER_BLOCK_END = b"\r\n\r\n"


class OneWriteTransport:
    """A transport that joins a response's header block to the write that follows it
    within the same turn of the event loop."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
            return
        if (
            isinstance(data, bytes)
            and data.startswith(_HEADER_BLOCK_START)
            and data.endswith(_HEADER_BLOCK_END)
        ):
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Send what is held, if anything."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()


LINGER_SECONDS = 2.0
"""How long a refused connection is read (and the bytes dropped) before it is closed:
closing a socket with unread bytes sends a reset, which can destroy the refusal before
the client reads it (the "lingering close" of RFC 9112 §9.6)."""
RETRY_AFTER_BUSY = 1


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may cost before it is refused or closed."""

    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 10.0


def _error_json(code: str, description: str) -> bytes:
    return json.dumps(
        {"error": code, "error_description": description}, separators=(",", ":")
    ).encode()


_REFUSALS = {
    431: (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        _error_json("invalid_request", "The request header fields are too large."),
    ),
    408: (
        b"HTTP/1.1 408 Request Timeout\r\n",
        _error_json("invalid_request", "The request did not arrive in time."),
    ),
}
_BUSY_BODY = _error_json("temporarily_unavailable", "The server is busy; retry shortly.")


async def busy(_scope: Scope, _receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The answer to a request over the concurrency limit: RFC 6749 §5.2-shaped, with
    `Retry-After` (RFC 9110 §15.6.4), and the connection closed to shed its load."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY_BODY)).encode()),
                (b"cache-control", b"no-store"),
                (b"retry-after", str(RETRY_AFTER_BUSY).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` on a `OneWriteTransport`, with `HttpLimits`: pass as
    uvicorn's `http` (with `functools.partial` for limits other than the defaults)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits or HttpLimits()
        # Bytes of the current request's header block so far; `None` once its headers
        # are complete (its body and its response are not header bytes).
        self._header_bytes: int | None = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = OneWriteTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)  # type: ignore[arg-type]
        self._arm(self.limits.idle_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped until the close
        if self._header_bytes is None:
            super().data_received(data)
            return
        if self._header_bytes == 0:
            # The first byte of a request: uvicorn's keep-alive timer stops here (and
            # nothing of uvicorn's runs before the first request), so ours starts.
            self._arm(self.limits.header_timeout, self._request_timeout)
        allowance = self.limits.max_header_bytes - self._header_bytes
        if len(data) <= allowance:
            self._header_bytes += len(data)
            super().data_received(data)
            return
        # The parser sees at most the allowance; the rest only if that ends the headers
        # (then it is body, or a pipelined request counted afresh).
        self._header_bytes += allowance
        if allowance:
            super().data_received(data[:allowance])
        if self.transport.is_closing():
            return
        if self._reading_headers():
            self._refuse(431)
        else:
            self.data_received(data[allowance:])

    def on_headers_complete(self) -> None:
        # The deadline runs on until the body is complete too: a body sent a byte at a
        # time would hold the connection (and the endpoint waiting for it) as long.
        self._header_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._header_bytes = 0

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn answers a request over `limit_concurrency` with a plain-text 503
        # without Retry-After; keyturn's clients read JSON errors and back off.
        if app is service_unavailable:
            app = busy
        super()._start_asgi_task(cycle, app)

    def _reading_headers(self) -> bool:
        return self._header_bytes is not None

    def _answering(self) -> bool:
        """Whether a response has begun and not ended on this connection."""
        cycle: RequestResponseCycle | None = self.cycle
        return cycle is not None and cycle.response_started and not cycle.response_complete

    def _arm(self, seconds: float, then: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _idle(self) -> None:
        """No byte since the connection was made: close it without an answer (a
        browser's unused preconnection expects no more)."""
        self._deadline = None
        cycle: RequestResponseCycle | None = self.cycle
        if self._header_bytes == 0 and cycle is None and not self.transport.is_closing():
            self.transport.close()

    def _request_timeout(self) -> None:
        """The request is not in, `header_timeout` seconds after its first byte."""
        self._deadline = None
        cycle: RequestResponseCycle | None = self.cycle
        if self.transport.is_closing():
            return
        if self._reading_headers() or cycle is None or not cycle.response_started:
            self._refuse(408)
        elif cycle.response_complete:
            # Answered without the rest of the body (a 413, say): nobody waits for it.
            self.transport.close()
        # Otherwise an answer is being written: it ends the exchange by itself.

    def _refuse(self, status: int) -> None:
        """Answer `status` and close the connection, lingering to let the answer land."""
        self._refused = True
        self._disarm()
        transport = self.transport
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An endpoint waiting for the rest of the body: it hears the client is gone
            # now, and whatever it would answer is not written after this refusal.
            cycle.disconnected = True
            cycle.message_event.set()
        if not self._answering():
            status_line, body = _REFUSALS[status]
            head = [status_line]
            for name, value in self.server_state.default_headers:
                head.append(name + b": " + value + b"\r\n")
            head.append(
                b"content-type: application/json\r\ncache-control: no-store\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n"
            )
            transport.write(b"".join(head) + body)
        # Otherwise a response to an earlier pipelined request is being written: no
        # answer can be put after it in order, so the connection just ends.
        if transport.can_write_eof():  # TCP; TLS has no half-close, the client reads on
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)
