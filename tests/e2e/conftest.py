"""A started server on each store, seeded with the checklist's fixtures: confidential
`conf` and `conf2`, public `native` (body) and `spa` (cookie), `cc` (client credentials
only), `rs` (introspection), the authorization code clients `app` (public) and `web`
(confidential), users alice and bob."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.service.inspection import ACCOUNT_SCOPE
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD
from support.server import running_server

SECRET = "e2e-master-secret-YVNF4c2OYlNKuAZ7RQWdduevgoXfzoII"
SCOPE = frozenset({"read", "write"})
ORIGIN = "https://app.test"
APP_REDIRECT = "https://app.test/callback"
LOOPBACK_REDIRECT = "http://127.0.0.1/native-cb"
WEB_REDIRECT = "https://web.test/cb?tenant=1"
REFRESHING = {GrantType.PASSWORD, GrantType.REFRESH_TOKEN, GrantType.CLIENT_CREDENTIALS}


@dataclass(frozen=True)
class Server:
    base: str
    settings: Settings
    secrets: dict[str, str]

    async def login(self, client_id: str = "native", username: str = "alice") -> tuple[str, str]:
        """Refresh and access tokens from a login through the engine on the server's
        database."""
        engine = await open_engine(Settings(**{**self.settings.model_dump(), "issuer": self.base}))
        try:
            client = await engine.admin.get_client(client_id)
            issued = await engine.login.login(username, PASSWORD, client)
            return issued.refresh_token or "", issued.access_token
        finally:
            await engine.close()

    def rt0(self, client_id: str = "native") -> str:
        return asyncio.run(self.login(client_id))[0]

    def tokens(self, client_id: str = "native") -> tuple[str, str]:
        return asyncio.run(self.login(client_id))


async def _seed(settings: Settings) -> dict[str, str]:
    engine = await open_engine(settings)
    try:
        await engine.admin.add_user("alice", PASSWORD)
        await engine.admin.add_user("bob", PASSWORD)
        secrets: dict[str, str] = {}
        for name in ("conf", "conf2"):
            made = await engine.admin.add_client(
                name, ClientType.CONFIDENTIAL, grant_types=REFRESHING, scope=SCOPE, audience=["api"]
            )
            secrets[name] = made.secret or ""
        made = await engine.admin.add_client(
            "cc", ClientType.CONFIDENTIAL, grant_types={GrantType.CLIENT_CREDENTIALS}, scope=SCOPE
        )
        secrets["cc"] = made.secret or ""
        made = await engine.admin.add_client(
            "rs",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            can_introspect=True,
        )
        secrets["rs"] = made.secret or ""
        await engine.admin.add_client(
            "native",
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
            delivery=Delivery.BODY,
            redirect_uris=["https://native.test/cb"],
        )
        # Authorization code clients: `app` is public with several redirect URIs (a
        # web origin, a loopback one and a private-use scheme), `web` confidential with
        # one, whose query must be kept.
        # `app` may ask for `keyturn:account`: its tokens then act at the account API.
        await engine.admin.add_client(
            "app",
            ClientType.PUBLIC,
            grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
            scope=SCOPE | {ACCOUNT_SCOPE},
            redirect_uris=[APP_REDIRECT, LOOPBACK_REDIRECT, "com.example.app:/cb"],
        )
        made = await engine.admin.add_client(
            "web",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
            redirect_uris=[WEB_REDIRECT],
            audience=["api"],
        )
        secrets["web"] = made.secret or ""
        await engine.admin.add_client(
            "spa",
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
            delivery=Delivery.COOKIE,
            allowed_origins=[ORIGIN],
        )
        return secrets
    finally:
        await engine.close()


def start_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """A seeded server on the store `request.param` names ("sqlite" or "postgres"),
    with `extra_env` settings on top of the e2e defaults."""
    env = {"KEYTURN_SECRET_KEY": SECRET, "KEYTURN_GRACE_SECONDS": "10", **(extra_env or {})}
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'keyturn.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        schema = create_pg_schema(url)
        env["KEYTURN_DB_SCHEMA"] = schema
    env["KEYTURN_DATABASE_URL"] = url
    settings = Settings(database_url=url, secret_key=SECRET, db_schema=schema)
    if request.param == "sqlite":
        upgrade(url)
    secrets = asyncio.run(_seed(settings))
    with running_server(env) as base:
        yield Server(base, settings, secrets)
    if schema:
        drop_pg_schema(url, schema)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from start_server(request, tmp_path_factory)
