"""What `keyturn purge` deletes and what a wrong client secret writes, on SQLite and
PostgreSQL (H-11, H-07): audit rows go after their own retention, authorization codes
soon after they expire, and a burst of wrong secrets writes a bounded number of rows."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.errors import InvalidClient
from keyturn.core.ids import ClientId
from keyturn.core.models import AuthorizationCode, ClientType, Device, GrantType
from keyturn.service.client_auth import AuthMethod, ClientCredentials
from support.engine import FakeClock, engine_with, seed

DAY = 86_400


def _code(client_id: str, user_id: str, clock: FakeClock, **kw: object) -> AuthorizationCode:
    now = clock.now()
    values: dict[str, object] = {
        "code_hash": uuid.uuid4().hex * 2,
        "client_id": ClientId(client_id),
        "user_id": user_id,
        "redirect_uri": "https://app.test/cb",
        "redirect_uri_given": True,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "scope": frozenset({"read"}),
        "authenticated_at": now,
        "created_at": now,
        "expires_at": now + timedelta(seconds=60),
        "device": Device(ip="203.0.113.9"),
    }
    values.update(kw)
    return AuthorizationCode(**values)  # type: ignore[arg-type]


async def test_h11_audit_rows_purged_after_retention(store_url: tuple[str, str | None]) -> None:
    url, schema = store_url
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema, audit_retention=30 * DAY)
    try:
        now = clock.now()
        for age in (400, 31, 29, 1):
            await engine.store.record(
                SecurityEvent(
                    type=EventType.LOGIN_FAILED,
                    at=now - timedelta(days=age),
                    reason=f"age {age}",
                )
            )
        await engine.admin.purge(batch_size=1)  # batched: one row a round
        kept = await engine.admin.audit(type=EventType.LOGIN_FAILED.value)
        assert sorted(e.event.reason or "" for e in kept) == ["age 1", "age 29"]
    finally:
        await engine.close()


async def test_h11_failed_secrets_aggregate(durable_store_url: tuple[str, str | None]) -> None:
    url, schema = durable_store_url
    clock = FakeClock()
    engine = await engine_with(url, clock=clock, schema=schema)
    try:
        _, _, conf = await seed(engine)
        wrong = ClientCredentials("conf", "not-" + secrets.token_hex(8), AuthMethod.BASIC)
        for _ in range(60):
            try:
                await engine.clients.authenticate(wrong)
            except InvalidClient:
                pass
            else:  # pragma: no cover - a wrong secret never authenticates
                raise AssertionError("a wrong secret authenticated")
        failed = EventType.CLIENT_AUTHENTICATION_FAILED.value
        rows = await engine.admin.audit(type=failed)
        # The first of a burst are each recorded; the rest add nothing but volume.
        assert 1 <= len(rows) <= 10, len(rows)
        assert all(r.event.client_id == "conf" for r in rows)
        assert any("not recorded" in (r.event.detail or "") for r in rows)
        # Only the record is thinned, never the answer: the right secret still works.
        right = ClientCredentials("conf", conf.secret or "", AuthMethod.BASIC)
        assert (await engine.clients.authenticate(right)).id == "conf"
    finally:
        await engine.close()


async def test_h07_used_codes_purged_soon_after_expiry(
    durable_store_url: tuple[str, str | None],
) -> None:
    url, schema = durable_store_url
    clock = FakeClock()
    # Ended sessions are kept a week; that is no reason to keep codes a week.
    engine = await engine_with(url, clock=clock, schema=schema, purge_retention=7 * DAY)
    try:
        alice, _, _ = await seed(engine)
        await engine.admin.add_client(
            "app",
            ClientType.PUBLIC,
            grant_types={GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN},
            redirect_uris=["https://app.test/cb"],
        )
        login = SecurityEvent(type=EventType.LOGIN_SUCCEEDED, at=clock.now())
        used = _code("app", alice.id, clock)
        unused = _code("app", alice.id, clock)
        await engine.store.add_authorization_code(used, login)
        await engine.store.add_authorization_code(unused, login)
        await engine.store.redeem_authorization_code(used.code_hash, clock.now(), None, login)
        clock.advance(60 * 60)  # an hour: the first two expired long ago
        just_expired = _code("app", alice.id, clock, expires_at=clock.now())
        fresh = _code("app", alice.id, clock)
        for each in (just_expired, fresh):
            await engine.store.add_authorization_code(each, login)
        clock.advance(1)
        assert await engine.admin.purge() == 2
        assert await engine.store.get_authorization_code(used.code_hash) is None
        assert await engine.store.get_authorization_code(unused.code_hash) is None
        # Kept a little past expiry (clock differences between hosts), then gone.
        assert await engine.store.get_authorization_code(just_expired.code_hash) is not None
        assert await engine.store.get_authorization_code(fresh.code_hash) is not None
        clock.advance(60 * 10)
        assert await engine.admin.purge() == 2
    finally:
        await engine.close()
