"""The real components the fault scenarios start, break and start again.

- `keyturn_server`: `keyturn serve` in a child process on a free port; its log (stderr)
  goes to a file the scenario reads.
- `PrivatePostgres`: a PostgreSQL cluster of the scenario's own (`initdb` into a
  temporary directory, `pg_ctl` on a free port), so stopping it disturbs nobody. As root
  the cluster runs as the `postgres` system user (PostgreSQL refuses to run as root).
- `PrivateRedis`: a `redis-server` of the scenario's own on a free port.
- `SmallDisk`: a small filesystem of the scenario's own: a tmpfs (to fill up), or an
  ext4 image on a loop device (to turn read-only under the server with an ext4 error,
  or to fail every I/O with `EXT4_IOC_SHUTDOWN`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    base: str
    port: int
    proc: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def keyturn_server(
    env: dict[str, str], log_path: Path, *, workers: int = 1, port: int | None = None
) -> Iterator[Server]:
    """`keyturn serve --workers N` with `env` on `port` (else a free one), up once
    `/healthz` answers."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyturn",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env={**os.environ, **env, "KEYTURN_ISSUER": base},
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"keyturn serve exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("keyturn serve did not start")
                time.sleep(0.1)
            yield Server(base, port, proc, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def worker_pids(server_pid: int) -> list[int]:
    """The uvicorn worker processes of a `--workers N` server: its spawned children,
    not multiprocessing's resource tracker."""
    pids: list[int] = []
    for children in glob.glob(f"/proc/{server_pid}/task/*/children"):
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in Path(children).read_text().split())
    workers = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(pid)
    return sorted(workers)


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, on a free port, trust
    authentication for the superuser `root`; `url` names its `postgres` database."""

    def __init__(self) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl)")
        self.bin = binaries
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="keyturn-faults-pg-"))
        self.data = self.dir / "data"
        self._user: str | None = None
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: the cluster belongs to `postgres`.
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._as_owner(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "root",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        self.url = f"postgresql://root@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, command: list[str]) -> None:
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=100"
        )
        self._as_owner(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str) -> None:
        """`pg_ctl stop -m mode`: `immediate` (every backend killed, no checkpoint: a
        crash) or `fast` (clients disconnected, then a clean shutdown)."""
        self._as_owner(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"]
        )

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self.ping():
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, check=True
        )
        return out.stdout

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    try:
        redis.start()
        yield redis
    finally:
        redis.stop()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


class SmallDisk:
    """A tmpfs of `size_mb` (kind `tmpfs`) or an ext4 image on a loop device (`ext4`)."""

    def __init__(self, kind: str, size_mb: int) -> None:
        self.kind = kind
        self.path = Path(tempfile.mkdtemp(prefix="keyturn-faults-disk-"))
        self._image: Path | None = None
        if kind == "tmpfs":
            _mount("-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(self.path))
        else:
            fd, name = tempfile.mkstemp(prefix="keyturn-faults-", suffix=".img")
            os.close(fd)
            self._image = Path(name)
            os.truncate(name, size_mb * 1024 * 1024)
            subprocess.run(["mkfs.ext4", "-q", "-F", name], check=True, capture_output=True)
            self.mount()

    def mount(self) -> None:
        assert self._image is not None
        _mount("-o", "loop,errors=remount-ro", str(self._image), str(self.path))

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], check=True, capture_output=True)

    def fill(self) -> int:
        """Write a filler file until the disk is full; returns its size in bytes."""
        written = 0
        chunk = b"\0" * 65536
        with (self.path / "filler").open("wb", buffering=0) as filler:
            while True:
                try:
                    written += filler.write(chunk)
                except OSError:
                    break
        return written

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def turn_read_only(self) -> None:
        """An ext4 error (`/sys/fs/ext4/<dev>/trigger_fs_error`): mounted with
        `errors=remount-ro`, the kernel turns the filesystem read-only at once, files
        open for writing or not (`mount -o remount,ro` refuses while a process has
        one open for writing, as the server does); every later write fails with EROFS."""
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(self.path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(f"/sys/fs/ext4/{Path(source).name}/trigger_fs_error").write_text("fault test\n")

    def remount(self, options: str) -> subprocess.CompletedProcess[str]:
        """`mount -o remount,<options>`; the caller reads whether it was refused."""
        return subprocess.run(
            ["mount", "-o", f"remount,{options}", str(self.path)],
            check=False,
            capture_output=True,
            text=True,
        )

    def shut_down(self) -> None:
        """`EXT4_IOC_SHUTDOWN`: the filesystem fails every later read and write with EIO,
        as a disk that died under the server (ext4 then keeps it read-only until it
        is mounted again)."""
        goingdown = 0x8004587D  # _IOR('X', 125, __u32), EXT4_IOC_SHUTDOWN
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, goingdown, struct.pack("I", 0))  # 0: flush, then shut down
        finally:
            os.close(fd)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
        if self._image is not None:
            self._image.unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)


def can_mount(kind: str) -> str | None:
    """None if this machine lets us mount a small `kind` disk, else why not."""
    if kind == "ext4" and not Path("/sys/fs/ext4").is_dir():
        return "no /sys/fs/ext4 (the read-only fault writes its trigger_fs_error)"
    try:
        SmallDisk(kind, 4).close()
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        return f"cannot mount a small {kind} filesystem here: {str(detail).strip()}"
    return None


class SlowLink:
    """A TCP relay to `host:port` that holds every byte coming back from the server for
    `delay` seconds (in order, without slowing the stream down otherwise): a database
    across a network. A statement's effect is then committed well before its answer
    reaches keyturn, so a worker killed in between leaves a commit nobody was told of."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target = (host, port)
        self.delay = delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> SlowLink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        # The listening socket and every relayed connection are closed before the loop
        # stops, and the loop itself after: nothing is left for the collector.
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> None:
        self._writers: set[asyncio.StreamWriter] = set()
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0)  # let the transports finish closing

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._forward(reader, up_writer, 0.0),
            self._forward(up_reader, writer, self.delay),
            return_exceptions=True,
        )

    async def _forward(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                sink.write(data)
                await sink.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                data = await source.read(65536)
                await queue.put((loop.time() + delay, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()
            sink.close()
