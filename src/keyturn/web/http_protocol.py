"""uvicorn's httptools protocol, writing each response in one piece.

uvicorn writes a response's status line and headers, then its body, as two writes to
the socket: two `send` system calls, and on a loopback or LAN connection often two
segments the client has to read. A token response is small (about a kilobyte), so
that second call is a sizeable share of what serving it costs (`docs/benchmarks.md`,
"Where the time goes"). Here the protocol's transport holds a header block back until
the body's first write in the same turn of the event loop, and sends both at once.

Nothing can be held for long: what is held is sent at the end of the loop's current
turn in any case (a `HEAD` answer, or a body that will come later), and before the
connection is closed. Everything but `write` and `close` goes to uvicorn's transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

    def close(self) -> None:
        self.flush()
        self._transport.close()


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` on a `OneWriteTransport`: pass as uvicorn's `http`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = OneWriteTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)  # type: ignore[arg-type]
