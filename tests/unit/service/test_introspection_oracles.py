"""Introspection does no database work a caller could time to tell a token's state:
a public caller is refused before any, and a confidential caller asking about another
client's token costs the same whether that token is live, rotated or ended. On every
store, through a store that records each call."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest

from keyturn.core.errors import InvalidClient
from keyturn.core.models import Client, ClientType, GrantType
from keyturn.core.ports import Store
from keyturn.service.ending import SessionEnding
from keyturn.service.engine import Engine
from keyturn.service.inspection import INACTIVE, Inspection
from support.engine import PASSWORD, FakeClock, engine_with, seed


class CountingStore:
    """The store, with the name of every operation called on it written down."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not inspect.iscoroutinefunction(found):
            return found

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await found(*args, **kwargs)

        return counted


@dataclass
class World:
    engine: Engine
    store: CountingStore
    inspection: Inspection
    native: Client
    conf: Client
    conf2: Client
    rs: Client

    async def login(self, client: Client) -> tuple[str, str]:
        issued = await self.engine.login.login("alice", PASSWORD, client)
        return issued.refresh_token or "", issued.access_token

    async def cost(
        self, ask: Callable[[], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], list[str]]:
        """The answer of `ask` and the store operations it took."""
        self.store.calls.clear()
        answer = await ask()
        return answer, list(self.store.calls)


@pytest.fixture
async def world(store_url: tuple[str, str | None]) -> AsyncIterator[World]:
    url, schema = store_url
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema)
    _, native, conf = await seed(engine)
    conf2 = await engine.admin.add_client(
        "conf2", ClientType.CONFIDENTIAL, grant_types={GrantType.CLIENT_CREDENTIALS}
    )
    rs = await engine.admin.add_client(
        "rs",
        ClientType.CONFIDENTIAL,
        grant_types={GrantType.CLIENT_CREDENTIALS},
        can_introspect=True,
    )
    store = CountingStore(engine.store)
    counted = cast(Store, store)
    ending = SessionEnding(counted, clock, engine.config)
    inspection = Inspection(counted, engine.tokens, clock, engine.config, ending)
    try:
        yield World(engine, store, inspection, native.client, conf.client, conf2.client, rs.client)
    finally:
        await engine.close()


async def test_a_public_caller_is_refused_before_any_database_work(world: World) -> None:
    rotated, _ = await world.login(world.native)
    live = (await world.engine.refresher.refresh(rotated, world.native)).refresh_token or ""
    _, access = await world.login(world.native)
    for token in (live, rotated, access, "garbage", "kt_rt_" + "A" * 79):
        world.store.calls.clear()
        with pytest.raises(InvalidClient):
            await world.inspection.introspect(token, world.native)
        assert world.store.calls == [], token


async def test_another_clients_refresh_token_costs_the_same_live_rotated_or_ended(
    world: World,
) -> None:
    rotated, _ = await world.login(world.native)
    live = (await world.engine.refresher.refresh(rotated, world.native)).refresh_token or ""
    ended, _ = await world.login(world.native)
    await world.engine.inspection.revoke(ended, world.native)
    for caller in (world.conf2, world.rs, world.conf):
        costs = {
            name: await world.cost(lambda t=token, c=caller: world.inspection.introspect(t, c))
            for name, token in (("live", live), ("rotated", rotated), ("ended", ended))
        }
        assert {answer == INACTIVE for answer, _ in costs.values()} == {True}, caller.id
        assert len({tuple(calls) for _, calls in costs.values()}) == 1, (caller.id, costs)


async def test_another_clients_access_token_costs_what_garbage_costs(world: World) -> None:
    _, access = await world.login(world.conf)
    garbage = await world.cost(lambda: world.inspection.introspect("a.b.c", world.conf2))
    foreign = await world.cost(lambda: world.inspection.introspect(access, world.conf2))
    assert foreign == garbage == (INACTIVE, [])


async def test_a_resource_server_still_learns_any_access_token_and_an_owner_its_own(
    world: World,
) -> None:
    rt, access = await world.login(world.conf)
    seen_by_rs = await world.inspection.introspect(access, world.rs)
    assert seen_by_rs["active"] is True
    assert seen_by_rs["client_id"] == "conf"
    own = await world.inspection.introspect(rt, world.conf)
    assert own["active"] is True
    assert own["token_type"] == "refresh_token"
    assert await world.inspection.introspect(rt, world.rs) == INACTIVE
