"""Server processes: start one on a loopback port, wait until it answers, account for
its CPU, stop it by its pid."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.engine.quiet import _cpu_times

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _tree(pid: int) -> list[int]:
    """`pid` and every live descendant (a server's workers are its children)."""
    tree = _children()
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(tree.get(p, []))
    return found


def peak_rss_mb(pid: int) -> dict[int, float]:
    """Peak resident memory (`VmHWM`: the most the process has held since it started),
    in MiB, of `pid` and each live descendant, by pid."""
    peaks: dict[int, float] = {}
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for row in status.splitlines():
            if row.startswith("VmHWM:"):
                peaks[p] = round(int(row.split()[1]) / 1024, 1)
    return peaks


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of `pid` and of every live descendant, by pid."""
    seconds: dict[int, float] = {}
    for p in _tree(pid):
        used = cpu_seconds(p)
        if used is not None:
            seconds[p] = used
    return seconds


class Window:
    """CPU of a server's process tree and of the whole machine over the measured window:
    a thread samples both `warmup` seconds after start and again `seconds` later."""

    def __init__(self, pid: int | None, warmup: float, seconds: float) -> None:
        self.pid = pid
        self.server_percent = 0.0
        self.process_percents: list[float] = []
        """Each server process's share, busiest first: how evenly workers were loaded."""
        self.machine_percent = 0.0
        self.peak_rss_mb = 0.0
        """The largest peak resident memory of any one server process so far."""
        self._thread = threading.Thread(target=self._run, args=(warmup, seconds), daemon=True)

    def _sample(self) -> tuple[dict[int, float], tuple[int, int] | None]:
        return (tree_cpu_seconds(self.pid) if self.pid else {}), _cpu_times()

    def _run(self, warmup: float, seconds: float) -> None:
        time.sleep(warmup)
        began = time.monotonic()
        server0, machine0 = self._sample()
        time.sleep(seconds)
        server1, machine1 = self._sample()
        elapsed = time.monotonic() - began
        used = {p: server1[p] - server0.get(p, 0.0) for p in server1}
        self.server_percent = round(100 * sum(used.values()) / elapsed, 1)
        shares = sorted((100 * u / elapsed for u in used.values()), reverse=True)
        self.process_percents = [round(x, 1) for x in shares if x >= 0.5]
        if machine0 and machine1 and machine1[1] > machine0[1]:
            busy = (machine1[0] - machine0[0]) / (machine1[1] - machine0[1])
            self.machine_percent = round(100 * busy, 1)

    def __enter__(self) -> Window:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=5)
        if self.pid:
            self.peak_rss_mb = max(peak_rss_mb(self.pid).values(), default=0.0)


@contextmanager
def server(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    ready: Callable[[], bool],
    timeout: float = 120.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` until the block ends; `ready` is polled until it is true. The
    server is stopped with SIGTERM to its pid (it stops its own workers), then SIGKILL
    after 15 s."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[0]} did not start; see {log}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def answers(host: str, port: int, path: str, method: str = "GET") -> Callable[[], bool]:
    """True once `method path` gets any HTTP status line back."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(
                    f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                return s.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False

    return check
