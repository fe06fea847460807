"""A migrated database with the fault scenarios' user and clients.

User alice; public `native` (password and refresh grants, tokens in the body);
confidential `conf` (the same grants); `rs`, which may introspect; public `probe1`..
`probe3`, each only named by the rate-limit probes of the Redis scenario (a limit is
counted per client and address, so each probe starts from zero).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from keyturn.core.ids import SessionId
from keyturn.core.models import ClientType, Delivery, GrantType, Session
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine

SECRET = "faults-master-secret-Qm3v8T1xZp0LkR7sWc2NbYd6"
PASSWORD = "correct horse battery staple"
SCOPE = frozenset({"read", "write"})
PROBES = ("probe1", "probe2", "probe3")


@dataclass(frozen=True)
class Database:
    url: str
    schema: str | None
    secrets: dict[str, str]

    def env(self) -> dict[str, str]:
        env = {"KEYTURN_SECRET_KEY": SECRET, "KEYTURN_DATABASE_URL": self.url}
        if self.schema:
            env["KEYTURN_DB_SCHEMA"] = self.schema
        return env

    def settings(self) -> Settings:
        return Settings(database_url=self.url, secret_key=SECRET, db_schema=self.schema)


async def _seed(settings: Settings) -> dict[str, str]:
    engine = await open_engine(settings)
    try:
        await engine.admin.add_user("alice", PASSWORD)
        refreshing = {GrantType.PASSWORD, GrantType.REFRESH_TOKEN}
        for name in ("native", *PROBES):
            await engine.admin.add_client(
                name, ClientType.PUBLIC, grant_types=refreshing, scope=SCOPE, delivery=Delivery.BODY
            )
        conf = await engine.admin.add_client(
            "conf", ClientType.CONFIDENTIAL, grant_types=refreshing, scope=SCOPE
        )
        rs = await engine.admin.add_client(
            "rs",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            can_introspect=True,
        )
        return {"conf": conf.secret or "", "rs": rs.secret or ""}
    finally:
        await engine.close()


def prepare(url: str, schema: str | None = None) -> Database:
    """Migrate `url` (in `schema`) and seed it."""
    upgrade(url, schema=schema)
    settings = Settings(database_url=url, secret_key=SECRET, db_schema=schema)
    return Database(url, schema, asyncio.run(_seed(settings)))


async def _sessions(settings: Settings, ids: list[str]) -> dict[str, Session | None]:
    engine = await open_engine(settings)
    try:
        return {sid: await engine.store.get_session(SessionId(sid)) for sid in ids}
    finally:
        await engine.close()


def sessions(database: Database, ids: list[str]) -> dict[str, Session | None]:
    """The stored sessions `ids`, read through keyturn's own store."""
    return asyncio.run(_sessions(database.settings(), ids))


async def _replays(settings: Settings) -> dict[str, int]:
    engine = await open_engine(settings)
    try:
        found = await engine.store.list_events(type="refresh_replayed", limit=1_000_000)
        reasons = collections.Counter(str(recorded.event.reason) for recorded in found)
        return dict(sorted(reasons.items()))
    finally:
        await engine.close()


def replays(database: Database) -> dict[str, int]:
    """The replays the audit log records, by outcome (`replayed_concurrent`: the same
    device within seconds of the rotation, which spends no budget; `..._lost_response`;
    `..._same_key`)."""
    return asyncio.run(_replays(database.settings()))
