"""`OneWriteTransport`: a response's header block and body leave in one write, and
nothing is ever held past the current turn of the event loop."""

from __future__ import annotations

import asyncio

from keyturn.web.http_protocol import OneWriteTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class Recording(asyncio.Transport):
    """The socket end: what was written, in which calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


async def test_the_header_block_and_the_body_go_in_one_write() -> None:
    socket = Recording()
    transport = OneWriteTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    assert socket.writes == []
    transport.write(b"{}")
    assert socket.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert socket.writes == [HEAD + b"{}"], "nothing is written twice"


async def test_a_header_block_alone_is_sent_at_the_end_of_the_turn() -> None:
    socket = Recording()
    transport = OneWriteTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)  # a HEAD answer: no body follows
    await asyncio.sleep(0)
    assert socket.writes == [HEAD]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert socket.writes == [HEAD, b"HTTP/1.1 100 Continue\r\n\r\n"]


async def test_close_sends_what_is_held_first() -> None:
    socket = Recording()
    transport = OneWriteTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.close()
    assert socket.writes == [HEAD]
    assert socket.closed
    await asyncio.sleep(0)
    assert socket.writes == [HEAD]


async def test_other_writes_and_calls_pass_through() -> None:
    socket = Recording()
    transport = OneWriteTransport(socket, asyncio.get_running_loop())
    transport.write(b"5\r\nhello\r\n")  # a chunk of a streamed body
    transport.write(memoryview(b"more"))
    assert socket.writes == [b"5\r\nhello\r\n", b"more"]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)
    assert not transport.is_closing()


async def test_a_connection_closed_meanwhile_gets_no_write() -> None:
    socket = Recording()
    transport = OneWriteTransport(socket, asyncio.get_running_loop())
    transport.write(HEAD)
    socket.closed = True  # the peer went away before the end of the turn
    await asyncio.sleep(0)
    assert socket.writes == []
