"""H-10 at the server: the feed lists a revoked session until its last access token has
expired plus the largest leeway the verify kit allows, and a margin."""

from __future__ import annotations

from datetime import timedelta

from keyturn.core.models import ClientType, GrantType
from keyturn.service.revocation_feed import FORGET_MARGIN, VERIFIER_LEEWAY
from keyturn.verify.verifier import MAX_LEEWAY
from support.engine import PASSWORD, FakeClock, engine_with, seed


def test_h10_server_allowance_covers_every_leeway_the_kit_allows() -> None:
    assert VERIFIER_LEEWAY >= MAX_LEEWAY
    assert FORGET_MARGIN > 0


async def test_h10_feed_lists_a_revoked_session_past_exp_for_the_leeway() -> None:
    clock = FakeClock()
    engine = await engine_with(clock=clock, access_token_ttl=60)
    try:
        _, native, _ = await seed(engine)
        rs = await engine.admin.add_client(
            "rs",
            ClientType.CONFIDENTIAL,
            grant_types={GrantType.CLIENT_CREDENTIALS},
            can_introspect=True,
        )
        issued = await engine.login.login("alice", PASSWORD, native.client)
        session = await engine.store.get_session(issued.session_id)  # type: ignore[arg-type]
        assert session is not None
        await engine.admin.revoke_session(session.id)
        revoked_at = clock.now()
        # The token expires 60 s on; a verifier may accept it up to MAX_LEEWAY more.
        clock.advance(60 + MAX_LEEWAY - 1)
        page = await engine.revocation_feed.page(rs.client, None)
        [item] = [i for i in page.items if i.session_id == session.id]
        assert item.forget_after >= revoked_at + timedelta(seconds=60 + MAX_LEEWAY)
        clock.advance(FORGET_MARGIN + 2)
        page = await engine.revocation_feed.page(rs.client, None)
        assert session.id not in {i.session_id for i in page.items}
    finally:
        await engine.close()
