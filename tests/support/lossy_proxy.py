"""A TCP proxy that can lose answers: the request reaches the server and is handled,
but the connection is cut before the response reaches the client, as when a phone
leaves the Wi-Fi mid-request. It can also `cut()` everything, as when a database
server goes away, and `restore()` it. Runs its own event loop on a thread, so sync
and async tests (and a server in another process) can all use it."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from support.tcp_proxy import free_port


class LossyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.drop_next = 0
        """How many of the next connections lose their first response."""
        self.dropped = 0
        self.refusing = False
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, upstream_writer))
        drop = self.drop_next > 0
        if drop:
            self.drop_next -= 1
        forward = asyncio.create_task(_pipe(reader, upstream_writer))
        try:
            if drop:
                # The server has answered once its first bytes arrive: then cut.
                await upstream_reader.read(1)
                await asyncio.sleep(0.05)
                self.dropped += 1
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


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
