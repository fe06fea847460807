"""keyturn's real engine behind the simulation's `Server` protocol.

A fresh store per preset: a SQLite file in a temporary directory, or a new schema in
PostgreSQL (created, migrated, dropped afterwards). Logins go through `engine.login`,
refreshes through `engine.refresher.refresh`, exactly as the HTTP surfaces call them;
the engine's clock is set to each event's simulated time. Only password hashing is made
cheap (Argon2 at its smallest cost): it is not what the simulation measures.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.continuity.keyturn_policies import KeyturnPreset
from bench.continuity.population import Device
from bench.continuity.server import Answer, Issued, Refused, Token
from keyturn.core.errors import InvalidGrant
from keyturn.core.ids import SessionId
from keyturn.core.models import Client, ClientType, Delivery, GrantType
from keyturn.core.models import Device as Peer
from keyturn.crypto.passwords import Passwords
from keyturn.service.context import RequestContext
from keyturn.service.engine import Engine
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import migrate, open_engine

START = datetime(2026, 6, 1, tzinfo=UTC)
PASSWORD = "continuity simulation password"
DAY = 86_400


class SimClock:
    """The engine's clock: simulated seconds after `START`, moved by the player."""

    def __init__(self) -> None:
        self.current = START

    def now(self) -> datetime:
        return self.current

    def set(self, seconds: float) -> None:
        self.current = START + timedelta(seconds=seconds)


def _seconds(at: datetime) -> float:
    return (at - START).total_seconds()


class KeyturnServer:
    def __init__(
        self, engine: Engine, clock: SimClock, clients: dict[int, Client], *, dpop: bool
    ) -> None:
        self._engine = engine
        self._dpop = dpop
        self._clock = clock
        self._client_of_device = clients
        self._client_of_session: dict[str, Client] = {}

    def _proof(self, key: str | None) -> str | None:
        """The key a verified DPoP proof would carry, when the preset's devices prove one
        (the simulation plays the service layer: the proof's own checks are the web
        layer's and tested there)."""
        return key if self._dpop else None

    async def login(self, device: int, now: float, key: str | None = None) -> Token:
        self._clock.set(now)
        client = self._client_of_device[device]
        issued = await self._engine.login.login(
            f"device-{device}", PASSWORD, client, key_thumbprint=self._proof(key)
        )
        assert issued.session_id is not None
        assert issued.refresh_token is not None
        self._client_of_session[issued.session_id] = client
        return Token(issued.session_id, issued.refresh_token)

    async def refresh(
        self, token: Token, now: float, key: str | None = None, ip: str | None = None
    ) -> Answer:
        self._clock.set(now)
        session_id = SessionId(str(token.family))
        client = self._client_of_session[session_id]
        try:
            issued = await self._engine.refresher.refresh(
                str(token.value),
                client,
                context=RequestContext(device=Peer(ip=ip)),
                key_thumbprint=self._proof(key),
            )
        except InvalidGrant:
            loaded = await self._engine.store.get_session_with_user(session_id)
            revoked_at = loaded[0].revoked_at if loaded is not None else None
            return Refused(None if revoked_at is None else _seconds(revoked_at))
        assert issued.refresh_token is not None
        return Issued(Token(session_id, issued.refresh_token))


def settings_for(preset: KeyturnPreset, database_url: str, schema: str | None) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": "continuity-master-secret-vMHvlrNgqXipX_YFhT_3qIFiNv3o_QRN",
        "access_token_ttl": 900,
        # Long enough that no session of the run idles or ages out: every logout
        # counted is the rotation policy's.
        "session_idle_ttl": 60 * DAY,
        "session_max_ttl": 365 * DAY,
    }
    if schema is not None:
        values["db_schema"] = schema
    values.update(preset.settings)
    return Settings(**values)


async def _pg(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def keyturn_server(
    preset: KeyturnPreset,
    devices: Sequence[Device],
    *,
    store: str,
    workdir: Path,
    postgres_url: str,
) -> AsyncIterator[KeyturnServer]:
    """An engine on a fresh store, its clients registered and one user per device."""
    schema: str | None = None
    if store == "sqlite":
        url = f"sqlite:///{workdir / f'keyturn-{preset.name}.db'}"
        await asyncio.to_thread(migrate, settings_for(preset, url, None))
    else:
        url = postgres_url
        schema = f"continuity_{secrets.token_hex(5)}"
        await _pg(url, f"CREATE SCHEMA {schema}")
        await asyncio.to_thread(upgrade, url, schema=schema)
    clock = SimClock()
    engine = await open_engine(
        settings_for(preset, url, schema),
        schema=schema,
        clock=clock,
        passwords=Passwords(memory_cost=8, time_cost=1),
    )
    try:
        registered: dict[str, Client] = {}
        for registration in {r.client_id: r for r in preset.clients.values()}.values():
            new = await engine.admin.add_client(
                registration.client_id,
                ClientType.PUBLIC,
                grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
                scope=frozenset({"read"}),
                delivery=Delivery.BODY,
                **registration.options,
            )
            registered[registration.client_id] = new.client
        clients: dict[int, Client] = {}
        for device in devices:
            await engine.admin.add_user(f"device-{device.ident}", PASSWORD)
            clients[device.ident] = registered[preset.clients[device.kind].client_id]
        yield KeyturnServer(engine, clock, clients, dpop=preset.dpop)
    finally:
        await engine.close()
        if schema is not None:
            await _pg(postgres_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
