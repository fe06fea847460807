"""H-10 in the kit: a revoked session is never forgotten while a verifier could still
accept one of its tokens (`exp` plus the verifier's leeway)."""

from __future__ import annotations

import json

import httpx
import pytest

from keyturn.verify import Verifier
from keyturn.verify.revocations import RevocationFeed
from keyturn.verify.verifier import MAX_LEEWAY

ISSUER = "https://auth.test"
REVOKED_AT = 1_800_000_000
FORGET_AFTER = REVOKED_AT + 900


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _feed_server(request: httpx.Request) -> httpx.Response:
    body = {
        "revocations": [{"sid": "s1", "revoked_at": REVOKED_AT, "forget_after": FORGET_AFTER}],
        "cursor": f"{REVOKED_AT * 1_000_000}.czE",
        "more": False,
    }
    return httpx.Response(200, json=body, request=request)


def _polled(clock: Clock, **options: float) -> RevocationFeed:
    feed = RevocationFeed(ISSUER, "rs", "secret", clock=clock, **options)  # type: ignore[arg-type]
    with httpx.Client(transport=httpx.MockTransport(_feed_server)) as http:
        feed.poll(http)
    return feed


@pytest.mark.parametrize("past", [1, 30, MAX_LEEWAY - 1])
def test_h10_kit_keeps_an_entry_for_the_leeway_past_forget_after(past: int) -> None:
    clock = Clock(FORGET_AFTER + past)
    feed = _polled(clock)
    assert feed.revoked("s1")
    # Forgetting happens on a later poll: still kept within the leeway.
    with httpx.Client(transport=httpx.MockTransport(_feed_server)) as http:
        feed.poll(http)
    assert feed.revoked("s1")


def test_h10_kit_forgets_once_no_verifier_could_accept_the_token() -> None:
    clock = Clock(FORGET_AFTER)
    feed = _polled(clock, leeway=10)
    clock.now = FORGET_AFTER + 9
    assert feed.revoked("s1")
    clock.now = FORGET_AFTER + 10
    assert not feed.revoked("s1")


def test_h10_redis_announcement_is_kept_for_the_leeway_too() -> None:
    clock = Clock(REVOKED_AT)
    feed = RevocationFeed(ISSUER, "rs", "secret", clock=clock, max_token_lifetime=900)
    feed._announced(json.dumps({"revoked_at": REVOKED_AT, "sids": ["s2"]}))
    clock.now = REVOKED_AT + 900 + MAX_LEEWAY - 1
    assert feed.revoked("s2")


def test_h10_verifier_refuses_a_leeway_the_feed_does_not_cover() -> None:
    with pytest.raises(ValueError, match="leeway"):
        Verifier(ISSUER, "api", leeway=MAX_LEEWAY + 1)
    with pytest.raises(ValueError, match="leeway"):
        Verifier(ISSUER, "api", leeway=-1)
    with pytest.raises(ValueError, match="leeway"):
        RevocationFeed(ISSUER, "rs", "secret", leeway=-1)
    Verifier(ISSUER, "api", leeway=MAX_LEEWAY)
