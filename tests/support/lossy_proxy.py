"""A TCP proxy that can lose answers: the request reaches the server and is handled,
but the connection is cut before the response reaches the client, as when a phone
leaves the Wi-Fi mid-request. It can also `cut()` everything, as when a database
server goes away, and `restore()` it. Runs its own event loop on a thread, so sync
and async tests (and a server in another process) can all use it.

Two ways to lose answers: `drop_next` loses the first response of the next
connections; `drop_rate` (with `drop_paths` and a `seed`) rolls a seeded die for every
request to one of `drop_paths`, on fresh and kept-alive connections alike, and loses
the response of those it picks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
from collections.abc import Iterable

from support.tcp_proxy import free_port

_REQUEST_LINE = re.compile(rb"([A-Z]+) ([^ ?\r\n]+)[^\r\n]* HTTP/1\.[01]\r\n")


class LossyProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        drop_rate: float = 0.0,
        drop_paths: Iterable[str] = (),
        seed: int = 0,
        leak: int = 0,
        roam: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.drop_next = 0
        """How many of the next connections lose their first response."""
        self.drop_rate = drop_rate
        """The share of `POST`s to `drop_paths` whose response is lost (seeded)."""
        self.drop_paths = frozenset(drop_paths)
        self.leak = leak
        """Bytes of a dropped response let through before the cut. With none, a browser
        may resend the request by itself on a kept-alive connection (Chromium does);
        a few make the loss the page's to handle."""
        self.roam = roam
        """After each lost answer, the next connections reach the server from another
        loopback address: the phone left the Wi-Fi, and its retry comes over the
        cellular network (keyturn lets a replay from the rotating address within
        seconds pass as the same device's; a roaming retry spends the replay budget)."""
        self._addresses = ("127.0.0.1", "127.0.0.2")
        self._address = 0
        self.rolled = 0
        """Requests to `drop_paths` that reached the proxy (each rolled once)."""
        self.dropped = 0
        self.refusing = False
        self._rng = random.Random(seed)  # noqa: S311 - a seeded test die, not a secret
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        """Abort every open connection and refuse new ones until `restore()`."""
        self.refusing = True

        def abort() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(abort)

    def restore(self) -> None:
        self.refusing = False

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            # Connections still open (kept alive) end here, not as "destroyed pending".
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for writer in list(self._writers):
                writer.transport.abort()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    def _lost(self) -> None:
        self.dropped += 1
        if self.roam:
            self._address += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        source = self._addresses[self._address % len(self._addresses)]
        upstream_reader, upstream_writer = await asyncio.open_connection(
            *self.target, local_addr=(source, 0)
        )
        self._writers.update((writer, upstream_writer))
        if self.drop_rate > 0:
            try:
                await self._relay_rolling(reader, writer, upstream_reader, upstream_writer)
            finally:
                self._writers.difference_update((writer, upstream_writer))
                with contextlib.suppress(Exception):
                    upstream_writer.close()
                with contextlib.suppress(Exception):
                    writer.close()
            return
        drop = self.drop_next > 0
        if drop:
            self.drop_next -= 1
        forward = asyncio.create_task(_pipe(reader, upstream_writer))
        try:
            if drop:
                # The server has answered once its first bytes arrive: then cut.
                await upstream_reader.read(1)
                await asyncio.sleep(0.05)
                self._lost()
                writer.transport.abort()
            else:
                await _pipe(upstream_reader, writer)
        finally:
            self._writers.difference_update((writer, upstream_writer))
            forward.cancel()
            with contextlib.suppress(Exception):
                upstream_writer.close()
            with contextlib.suppress(Exception):
                writer.close()

    async def _relay_rolling(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Forward both ways; a request picked by the die loses its response: the
        connection is cut once the server's first bytes arrive. The server commits a
        rotation before it answers, so the client misses a rotation that happened."""
        doomed = asyncio.Event()

        async def forward() -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    # One request at a time per connection (no pipelining), and its
                    # request line arrives first: a chunk that starts with one starts
                    # a request.
                    line = _REQUEST_LINE.match(data)
                    if line and line[1] == b"POST" and line[2].decode() in self.drop_paths:
                        self.rolled += 1
                        if self._rng.random() < self.drop_rate:
                            doomed.set()
                    upstream_writer.write(data)
                    await upstream_writer.drain()

        forwarding = asyncio.create_task(forward())
        try:
            with contextlib.suppress(ConnectionError):
                while data := await upstream_reader.read(65536):
                    if doomed.is_set():
                        self._lost()
                        if self.leak:
                            writer.write(data[: self.leak])
                            await writer.drain()
                        writer.transport.abort()
                        return
                    writer.write(data)
                    await writer.drain()
        finally:
            forwarding.cancel()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
