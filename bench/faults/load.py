"""Load against a real keyturn server, every answer written down.

Each `Chain` is one device: its own session (a login), rotating its refresh token in a
loop. A chain keeps exactly the token the server last gave it; when a request fails
without an answer (connection reset, the worker died) or with 503, it presents the same
token again (RFC 6749 §10.4 rotation with keyturn's retry window: a lost answer is
recovered by replaying the parent inside the window, which yields the identical
successor). Anything else (400 `invalid_grant`: the chain was cut) ends the chain.

`Looper`s send logins and introspections. Every request is an `Answer` in a shared
`Record`, timed with `time.monotonic()`.
"""

from __future__ import annotations

import base64
import random
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from keyturn.client.dpop import DpopKey

PASSWORD = "correct horse battery staple"
_BODY = struct.Struct(">BH16sI8s")


def token_parts(refresh_token: str) -> tuple[uuid.UUID, int]:
    """The session id and generation a keyturn refresh token carries."""
    raw = base64.urlsafe_b64decode(refresh_token.removeprefix("kt_rt_") + "==")
    _, _, session, generation, _ = _BODY.unpack(raw[: _BODY.size])
    return uuid.UUID(bytes=session), generation


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # rotation, login, introspection, readyz
    sent: float
    took: float
    status: int | None  # None: no answer (connection refused or reset, timeout)
    error: str | None  # the body's `error`, or the transport error's class
    retry_after: str | None
    token: bool  # the body carries a token
    retry: bool = False  # the same request again after a failure


class Record:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answers: list[Answer] = []

    def add(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def call(
    record: Record,
    kind: str,
    send: Callable[[], httpx.Response],
    *,
    retry: bool = False,
) -> httpx.Response | None:
    sent = time.monotonic()
    try:
        response = send()
    except httpx.HTTPError as error:
        record.add(
            Answer(
                kind, sent, time.monotonic() - sent, None, type(error).__name__, None, False, retry
            )
        )
        return None
    took = time.monotonic() - sent
    error_code: str | None = None
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_code = body.get("error")
    has_token = isinstance(body, dict) and bool(
        body.get("access_token") or body.get("refresh_token")
    )
    record.add(
        Answer(
            kind,
            sent,
            took,
            response.status_code,
            error_code,
            response.headers.get("retry-after"),
            has_token,
            retry,
        )
    )
    return response


def login(
    base: str,
    client_id: str = "native",
    *,
    secret: str | None = None,
    dpop: DpopKey | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """A login of alice through `client_id` (with its `secret`; bound to `dpop`)."""
    body = {"username": "alice", "password": PASSWORD, "client_id": client_id}
    if secret is not None:
        body["client_secret"] = secret
    url = f"{base}/auth/login"
    headers = {"DPoP": dpop.proof("POST", url)} if dpop else None
    answer = httpx.post(url, json=body, headers=headers, timeout=timeout)
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


@dataclass
class Chain:
    """One device rotating its session's refresh token against `bases` in turn."""

    bases: list[str]
    token: str
    record: Record
    client_id: str = "native"
    secret: str | None = None
    dpop: DpopKey | None = None  # a fresh proof of this key on every request
    retry_pause: float = 0.05
    give_up_after: float = 60.0
    rotations: int = 0
    retried: int = 0
    broken: str | None = None  # why the chain was cut, if it was
    idle: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _go: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._go.set()

    def _send(self, client: httpx.Client, base: str) -> Callable[[], httpx.Response]:
        data = {"grant_type": "refresh_token", "refresh_token": self.token}
        auth: tuple[str, str] | None = None
        if self.secret is None:
            data["client_id"] = self.client_id
        else:
            auth = (self.client_id, self.secret)
        url = f"{base}/oauth/token"
        key = self.dpop

        def send() -> httpx.Response:
            headers = {"DPoP": key.proof("POST", url)} if key else None
            return client.post(url, data=data, auth=auth, headers=headers)

        return send

    def rotate_once(self, client: httpx.Client, turn: int) -> bool:
        """One rotation, retried with the same token until answered; False if refused."""
        started = time.monotonic()
        retry = False
        while True:
            base = self.bases[turn % len(self.bases)]
            response = call(self.record, "rotation", self._send(client, base), retry=retry)
            if response is not None and response.status_code == 200:
                self.token = response.json()["refresh_token"]
                self.rotations += 1
                return True
            if response is not None and response.status_code not in (503,):
                self.broken = f"{response.status_code} {response.text[:200]}"
                return False
            if time.monotonic() - started > self.give_up_after:
                self.broken = "no answer within the give-up time"
                return False
            retry = True
            self.retried += 1
            time.sleep(self.retry_pause)

    def _run(self) -> None:
        # A fresh connection on failure: a reset one is not reused.
        turn = 0
        client = httpx.Client(timeout=30)
        try:
            while not self._stop.is_set() and self.broken is None:
                if not self._go.is_set():
                    self.idle.set()
                    self._go.wait(0.05)
                    continue
                self.idle.clear()
                if not self.rotate_once(client, turn):
                    break
                turn += 1
        finally:
            self.idle.set()
            client.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._go.clear()
        self.idle.clear()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._thread is not None and self._thread.is_alive():
            if self.idle.wait(0.05):
                return True
            if time.monotonic() > deadline:
                return False
        return True  # a chain that ended (cut, or stopped) is idle for good

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        if self._thread is not None:
            self._thread.join(timeout=90)


class Looper:
    """Sends `send` in a loop (with `pause` between) until stopped, recording each."""

    def __init__(
        self,
        record: Record,
        kind: str,
        send: Callable[[httpx.Client], httpx.Response],
        pause: float,
        keep: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        self.record = record
        self._keep = keep
        self.kind = kind
        self._send = send
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = httpx.Client(timeout=30)
        try:
            while not self._stop.is_set():
                response = call(self.record, self.kind, lambda: self._send(client))
                if response is not None and response.status_code == 200 and self._keep:
                    self._keep(response)
                self._stop.wait(self._pause * random.uniform(0.5, 1.5))
        finally:
            client.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def login_looper(
    record: Record,
    base: str,
    pause: float = 0.2,
    issued: list[str] | None = None,
    *,
    client_id: str = "native",
    secret: str | None = None,
) -> Looper:
    """Logins of alice through `client_id`; the refresh tokens answered go to `issued`."""
    body = {"username": "alice", "password": PASSWORD, "client_id": client_id}
    if secret is not None:
        body["client_secret"] = secret

    def send(client: httpx.Client) -> httpx.Response:
        return client.post(f"{base}/auth/login", json=body)

    def keep(response: httpx.Response) -> None:
        if issued is not None:
            issued.append(response.json()["refresh_token"])

    return Looper(record, "login", send, pause, keep)


def introspection_looper(
    record: Record, base: str, secret: str, token: str, pause: float = 0.05
) -> Looper:
    def send(client: httpx.Client) -> httpx.Response:
        return client.post(f"{base}/oauth/introspect", data={"token": token}, auth=("rs", secret))

    return Looper(record, "introspection", send, pause)


def readyz_looper(record: Record, base: str, pause: float = 0.1) -> Looper:
    return Looper(record, "readyz", lambda client: client.get(f"{base}/readyz"), pause)
