"""Building a real engine for tests: real crypto and a real store, a clock we move."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from keyturn.core.models import ClientType, Delivery, GrantType, User
from keyturn.service.admin import NewClient
from keyturn.service.engine import Engine
from keyturn.service.observed_store import StoreObserver
from keyturn.settings import Settings
from keyturn.wiring import open_engine

PASSWORD = "correct horse battery staple"
SECRET = "engine-master-secret-gDAAx547jVt3MJs2WV66BdRqCKtv0Adj"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def settings(database_url: str = "memory:", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET,
        "grace_seconds": 10,
        "access_token_ttl": 900,
        "session_idle_ttl": 3600,
        "session_max_ttl": 86400,
    }
    values.update(overrides)
    return Settings(**values)


async def engine_with(
    database_url: str = "memory:",
    *,
    clock: FakeClock | None = None,
    schema: str | None = None,
    observers: Sequence[StoreObserver] = (),
    **overrides: Any,
) -> Engine:
    return await open_engine(
        settings(database_url, **overrides), clock=clock, schema=schema, observers=observers
    )


async def seed(engine: Engine) -> tuple[User, NewClient, NewClient]:
    """User alice, public first-party client `native` and confidential `conf`."""
    alice = await engine.admin.add_user("alice", PASSWORD)
    native = await engine.admin.add_client(
        "native",
        ClientType.PUBLIC,
        grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read", "write"}),
        delivery=Delivery.BODY,
    )
    conf = await engine.admin.add_client(
        "conf",
        ClientType.CONFIDENTIAL,
        grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
        scope=frozenset({"read", "write"}),
    )
    return alice, native, conf


# Every store operation through which a rotation reads a session: the one-round-trip
# attempt (which reads, and may write), and the plain reads.
SESSION_READS = ("attempt_rotation", "get_presentation", "get_session_with_user")


def count_calls(store: object, names: Sequence[str] = SESSION_READS) -> list[str]:
    """Wrap each of `names` on `store` so that every call appends its name to the
    list returned; the calls go through unchanged."""
    calls: list[str] = []
    for name in names:
        original = getattr(store, name)

        async def counting(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return await _original(*args)

        setattr(store, name, counting)
    return calls
