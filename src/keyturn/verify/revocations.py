"""Following a keyturn server's revocation feed, so that a `Verifier` refuses the
still-unexpired access tokens of a session that ended, with no network call on the
request path.

    feed = RevocationFeed(issuer, "my-api", secret, interval=2.0)
    feed.start()                                    # a background thread polls
    verifier = Verifier(issuer, audience, revoked=feed.revoked)

A logout reaches the verifier within about `interval` seconds. Each poll re-reads the
last `overlap` seconds of the feed: a revocation can commit a moment after the time it
carries, and one that committed late is caught on the next poll.

With `redis_url` (the Redis keyturn is configured with), the follower also subscribes
to the channel on which keyturn announces each revocation as it commits: a logout then
arrives in milliseconds, and polling (which can be slower) catches what a subscriber
that was away missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from keyturn.verify.verifier import MAX_LEEWAY

log = logging.getLogger("keyturn.verify")

FEED_PATH = "/auth/revocations"
CHANNEL = "keyturn:revocations"


def cursor_at(epoch_seconds: float) -> str:
    """The feed cursor just before every revocation at or after `epoch_seconds`
    (cursors are `<microseconds since the epoch>.<base64url session id>`)."""
    return f"{max(0, int(epoch_seconds * 1_000_000))}."


class RevocationFeed:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        *,
        interval: float = 2.0,
        overlap: float = 10.0,
        timeout: float = 5.0,
        redis_url: str | None = None,
        channel: str = CHANNEL,
        max_token_lifetime: float = 86_400,
        leeway: float = MAX_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`max_token_lifetime` is how long an announcement on Redis is remembered
        (it does not say when the session's last access token expires; the HTTP feed
        does, and its answer replaces this guess once polled).

        `leeway` is the largest leeway of the verifiers that ask `revoked` (at most
        `MAX_LEEWAY`, the default): every entry is kept that long past the time the feed
        says it may be forgotten, since a verifier accepts a token that long past its
        `exp`. The server already allows for it; this holds with any server."""
        if leeway < 0:
            raise ValueError("leeway cannot be negative")
        self._url = issuer.rstrip("/") + FEED_PATH
        self._redis_url = redis_url
        self._channel = channel
        self._max_token_lifetime = max_token_lifetime
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._interval = interval
        self._overlap = overlap
        self._timeout = timeout
        self._clock = clock
        self._leeway = leeway
        self._forget_after: dict[str, float] = {}
        """When each revoked session may be forgotten: never before its last access
        token's `exp` plus any leeway a verifier could apply."""
        self._since: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.polls = 0
        """Completed polls, for health checks and tests."""
        self.announcements = 0
        """Revocation messages taken from the Redis channel."""

    def revoked(self, session_id: str) -> bool:
        """Whether the session ended and its access tokens may still be presented."""
        forget = self._forget_after.get(session_id)
        return forget is not None and forget > self._clock()

    # One poll

    def poll(self, http: httpx.Client | None = None) -> None:
        """Read the feed from where the last poll left it (less the overlap)."""
        client = http or httpx.Client(timeout=self._timeout)
        try:
            cursor, newest = self._since, None
            while True:
                response = client.get(self._url, params=self._params(cursor), auth=self._auth)
                cursor, more, newest = self._take(response, newest)
                if not more:
                    break
            self._advance(newest)
        finally:
            if http is None:
                client.close()

    async def poll_async(self, http: httpx.AsyncClient | None = None) -> None:
        client = http or httpx.AsyncClient(timeout=self._timeout)
        try:
            cursor, newest = self._since, None
            while True:
                response = await client.get(self._url, params=self._params(cursor), auth=self._auth)
                cursor, more, newest = self._take(response, newest)
                if not more:
                    break
            self._advance(newest)
        finally:
            if http is None:
                await client.aclose()

    @staticmethod
    def _params(cursor: str | None) -> dict[str, str]:
        return {"since": cursor} if cursor else {}

    def _take(
        self, response: httpx.Response, newest: float | None
    ) -> tuple[str, bool, float | None]:
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        for item in body["revocations"]:
            sid, forget = str(item["sid"]), float(item["forget_after"]) + self._leeway
            self._forget_after[sid] = forget  # the feed knows exactly; it replaces a guess
            revoked_at = float(item["revoked_at"])
            newest = revoked_at if newest is None else max(newest, revoked_at)
        return str(body["cursor"]), bool(body["more"]), newest

    def _announced(self, data: bytes | str) -> None:
        message = json.loads(data)
        forget = float(message["revoked_at"]) + self._max_token_lifetime + self._leeway
        for sid in message["sids"]:
            self._forget_after.setdefault(str(sid), forget)
        self.announcements += 1

    def _advance(self, newest: float | None) -> None:
        self.polls += 1
        if newest is not None:
            self._since = cursor_at(newest - self._overlap)
        elif self._since is None:
            self._since = cursor_at(self._clock() - self._overlap)
        now = self._clock()
        for sid in [s for s, forget in self._forget_after.items() if forget <= now]:
            del self._forget_after[sid]

    # Following

    def start(self) -> None:
        """Poll every `interval` seconds (and listen on Redis, if configured) on
        daemon threads until `stop()`."""
        if self._threads:
            return
        self._stop.clear()
        targets = [self._follow] + ([self._listen] if self._redis_url else [])
        for target in targets:
            thread = threading.Thread(target=target, name="keyturn-revocations", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout + self._interval)
        self._threads = []

    def _listen(self) -> None:
        assert self._redis_url is not None  # noqa: S101 - started only with a URL
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2)
                with client.pubsub(ignore_subscribe_messages=True) as subscription:  # type: ignore[no-untyped-call]
                    subscription.subscribe(self._channel)
                    while not self._stop.is_set():
                        message = subscription.get_message(timeout=0.5)
                        if message is not None:
                            self._announced(message["data"])
            except (RedisError, OSError, ValueError, KeyError, TypeError) as error:
                log.warning("revocation channel: %s", error)
                self._stop.wait(1.0)

    def _follow(self) -> None:
        with httpx.Client(timeout=self._timeout) as http:
            while not self._stop.is_set():
                try:
                    self.poll(http)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                    log.warning("revocation feed poll failed: %s", error)
                self._stop.wait(self._interval)

    async def follow(self) -> None:
        """The asyncio form of `start()`: run it as a task; cancel it to stop."""
        listener = asyncio.create_task(self._listen_async()) if self._redis_url else None
        try:
            await self._poll_forever()
        finally:
            if listener is not None:
                listener.cancel()

    async def _listen_async(self) -> None:
        assert self._redis_url is not None  # noqa: S101 - started only with a URL
        while True:
            try:
                client = aioredis.Redis.from_url(self._redis_url, socket_connect_timeout=2)
                async with client.pubsub(ignore_subscribe_messages=True) as subscription:
                    await subscription.subscribe(self._channel)
                    async for message in subscription.listen():
                        self._announced(message["data"])
            except (RedisError, OSError, ValueError, KeyError, TypeError) as error:
                log.warning("revocation channel: %s", error)
                await asyncio.sleep(1.0)

    async def _poll_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            while True:
                try:
                    await self.poll_async(http)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                    log.warning("revocation feed poll failed: %s", error)
                await asyncio.sleep(self._interval)
