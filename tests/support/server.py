"""A real keyturn server in a child process, on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_server(
    env: dict[str, str], workers: int = 1, log_path: Path | None = None
) -> Iterator[str]:
    """Start `keyturn serve` with `env`; yields its base URL; stops it afterwards."""
    with server_process(env, workers, log_path=log_path) as (base, _):
        yield base


@contextmanager
def server_process(
    env: dict[str, str],
    workers: int = 1,
    *,
    args: Sequence[str] = (),
    host_name: str = "127.0.0.1",
    port: int | None = None,
    log_path: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start `keyturn serve [args]` with `env`, reached as `http://host_name:port` (the
    issuer; a free port unless given); yields that base URL and the process, whose
    stdout the test may read. Its stderr (the server's log) goes to `log_path`, else
    to a temporary file: a pipe nobody reads would block the server once full."""
    port = port or free_port()
    base = f"http://{host_name}:{port}"
    # Closed in the `finally` below, after the server has stopped writing to it.
    log = log_path.open("w+") if log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
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
            *args,
        ],
        env={**os.environ, **env, "KEYTURN_ISSUER": base},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited: {log.read()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
