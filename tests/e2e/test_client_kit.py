"""keyturn.client, the Python client kit, against a started keyturn server (SQLite and
PostgreSQL): one refresh for many callers, a lost answer retried safely, ahead-of-expiry
refresh, refresh-once-and-retry on a 401, "login required" when the session is over,
and logout that ends the session at the server."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import Server
from keyturn.client import (
    CallbackStore,
    FileStore,
    LoginRequired,
    MemoryStore,
    RefreshFailed,
    RefreshingAuth,
)
from support.engine import PASSWORD
from support.lossy_proxy import LossyProxy


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def login(server: Server, username: str = "alice") -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base}/auth/login",
        json={"username": username, "password": PASSWORD, "client_id": "native"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def counting(requests: list[str]) -> dict[str, Any]:
    return {"event_hooks": {"request": [lambda r: requests.append(r.url.path)]}}


def async_counting(requests: list[str]) -> dict[str, Any]:
    async def hook(request: httpx.Request) -> None:
        requests.append(request.url.path)

    return {"event_hooks": {"request": [hook]}}


def kit(server: Server, **options: Any) -> RefreshingAuth:
    return RefreshingAuth(
        f"{server.base}/oauth/token",
        "native",
        revocation_endpoint=f"{server.base}/oauth/revoke",
        **options,
    )


def test_fifty_tasks_needing_a_refresh_send_one_request(server: Server) -> None:
    clock, sent = Clock(), []
    store = MemoryStore()

    async def scenario() -> set[int]:
        async with httpx.AsyncClient(**async_counting(sent)) as token_http:
            auth = kit(server, store=store, clock=clock, async_http=token_http)
            auth.set_tokens(login(server))
            first_rt = store.load()
            clock.now += 3600  # every caller now finds the access token due
            async with httpx.AsyncClient(auth=auth, base_url=server.base) as api:
                answers = await asyncio.gather(*(api.get("/auth/sessions") for _ in range(50)))
            assert store.load() != first_rt
            assert auth.refreshes == 1
            return {a.status_code for a in answers}

    assert asyncio.run(scenario()) == {200}
    assert sent == ["/oauth/token"], "exactly one refresh request reached the server"


def test_twenty_threads_needing_a_refresh_send_one_request(server: Server) -> None:
    clock, sent, statuses = Clock(), [], []
    with httpx.Client(**counting(sent)) as token_http:
        auth = kit(server, clock=clock, http=token_http)
        auth.set_tokens(login(server))
        clock.now += 3600
        with httpx.Client(auth=auth, base_url=server.base) as api:
            barrier = threading.Barrier(20)

            def call() -> None:
                barrier.wait()
                statuses.append(api.get("/auth/sessions").status_code)

            threads = [threading.Thread(target=call) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert statuses == [200] * 20
    assert sent == ["/oauth/token"]


def test_a_refresh_whose_answer_is_lost_is_retried_and_the_session_survives(
    server: Server,
) -> None:
    store, clock = MemoryStore(), Clock()
    base = urlsplit(server.base)
    with LossyProxy(base.hostname or "127.0.0.1", base.port or 80) as proxy:
        auth = RefreshingAuth(
            proxy.url("/oauth/token"), "native", store=store, clock=clock, backoff=0.05
        )
        auth.set_tokens(login(server))
        presented = store.load()
        clock.now += 3600
        proxy.drop_next = 1
        with httpx.Client(auth=auth, base_url=server.base) as api:
            assert api.get("/auth/sessions").status_code == 200
        assert proxy.dropped == 1
        assert auth.refreshes == 2, "the lost refresh was sent again"
    # The server rotated once: the retry got the same successor (grace replay), and the
    # saved token is that successor, live.
    saved = store.load()
    assert saved is not None
    assert saved != presented
    again = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": saved, "client_id": "native"},
    )
    assert again.status_code == 200, again.text


def test_the_access_token_is_refreshed_ahead_of_its_expiry(server: Server) -> None:
    clock, sent = Clock(), []
    with httpx.Client(**counting(sent)) as token_http:
        auth = kit(server, clock=clock, http=token_http, refresh_at=0.5, jitter=0)
        tokens = login(server)
        auth.set_tokens(tokens)
        with httpx.Client(auth=auth, base_url=server.base) as api:
            clock.now += tokens["expires_in"] * 0.49
            api.get("/auth/sessions")
            assert sent == []
            clock.now += tokens["expires_in"] * 0.02
            answer = api.get("/auth/sessions")
    assert answer.status_code == 200
    assert sent == ["/oauth/token"], "refreshed before the server could answer 401"


def test_a_401_refreshes_once_and_retries_once(server: Server) -> None:
    sent: list[str] = []
    with httpx.Client(**counting(sent)) as token_http:
        auth = kit(server, http=token_http)
        tokens = login(server)
        auth.set_tokens({**tokens, "access_token": tokens["access_token"][:-4] + "AAAA"})
        with httpx.Client(auth=auth, base_url=server.base) as api:
            answer = api.get("/auth/sessions")
    assert answer.status_code == 200
    assert sent == ["/oauth/token"]


def test_an_api_that_keeps_answering_401_gets_one_refresh_and_one_retry(
    server: Server,
) -> None:
    seen: list[str] = []

    def always_401(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    auth = kit(server)
    auth.set_tokens(login(server))
    with httpx.Client(auth=auth, transport=httpx.MockTransport(always_401)) as api:
        assert api.get("https://api.test/notes").status_code == 401
    assert auth.refreshes == 1
    assert len(seen) == 2
    assert seen[0] != seen[1], "the retry carries the refreshed token"


def test_an_ended_session_is_login_required_and_forgets_the_tokens(server: Server) -> None:
    store, clock = MemoryStore(), Clock()
    auth = kit(server, store=store, clock=clock)
    tokens = login(server)
    auth.set_tokens(tokens)
    httpx.post(
        f"{server.base}/auth/logout",
        json={"client_id": "native", "refresh_token": tokens["refresh_token"]},
    )
    clock.now += 3600
    with httpx.Client(auth=auth, base_url=server.base) as api, pytest.raises(LoginRequired):
        api.get("/auth/sessions")
    assert store.load() is None
    assert auth.access_token is None
    with httpx.Client(auth=auth, base_url=server.base) as api, pytest.raises(LoginRequired):
        api.get("/auth/sessions")


def test_async_login_required_too(server: Server) -> None:
    auth = kit(server, store=MemoryStore("kt_rt_not-a-real-token"))

    async def call() -> None:
        async with httpx.AsyncClient(auth=auth, base_url=server.base) as api:
            await api.get("/auth/sessions")

    with pytest.raises(LoginRequired):
        asyncio.run(call())


def test_a_misconfigured_client_is_refresh_failed_and_keeps_the_tokens(server: Server) -> None:
    store = MemoryStore()
    auth = RefreshingAuth(f"{server.base}/oauth/token", "conf", client_secret="wrong", store=store)
    auth.set_tokens(login(server))
    with pytest.raises(RefreshFailed) as failed:
        auth.refresh(stale=auth.access_token)
    assert failed.value.error == "invalid_client"
    assert store.load() is not None


def test_logout_revokes_at_the_server_and_forgets(server: Server) -> None:
    store = MemoryStore()
    auth = kit(server, store=store)
    tokens = login(server)
    auth.set_tokens(tokens)
    auth.logout()
    assert store.load() is None
    refused = httpx.post(
        f"{server.base}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "native",
        },
    )
    assert refused.json()["error"] == "invalid_grant"
    introspected = httpx.post(
        f"{server.base}/oauth/introspect",
        data={"token": tokens["access_token"]},
        auth=("rs", server.secrets["rs"]),
    ).json()
    assert introspected == {"active": False}


def test_every_rotation_is_saved_before_it_is_used(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "app" / "refresh-token"
    file_store = FileStore(path)
    saved: list[str | None] = []

    def save(token: str | None) -> None:
        file_store.save(token)
        saved.append(token)

    store = CallbackStore(file_store.load, save)
    clock = Clock()
    seen: list[str] = []
    auth = kit(
        server, store=store, clock=clock, on_tokens=lambda _body: seen.append(path.read_text())
    )
    auth.set_tokens(login(server))
    with httpx.Client(auth=auth, base_url=server.base) as api:
        for _ in range(5):
            clock.now += 3600
            assert api.get("/auth/sessions").status_code == 200
    assert len(set(saved)) == 6
    assert seen == saved, "the hook runs after the new token is on disk"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["refresh-token"], "no temporary left"
    auth.forget()
    assert not path.exists()
