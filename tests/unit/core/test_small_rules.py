"""Small rules of core, one each: the live-generation note of an audit event, an error
that crosses a process boundary, the refresh MAC key ids to come, which ends of a
session mean theft, a registration with redirect URIs, and the DPoP key a token
request's tokens are bound to."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from keyturn.core.audit import live_generation_in, live_generation_note
from keyturn.core.dpop_binding import admitted_key, session_key
from keyturn.core.dpop_errors import InvalidDpopProof
from keyturn.core.errors import RateLimited
from keyturn.core.ids import ClientId, KeyId
from keyturn.core.key_lifecycle import MAC_KEY_IDS, next_mac_key_id, upcoming_mac_key_ids
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    GrantType,
    KeyState,
    KeyUse,
    LifetimeOverrides,
    Lifetimes,
    RevocationReason,
    StoredKey,
)
from keyturn.core.policy import DpopMode, RotationSettings
from keyturn.core.registration import registration_problem

T0 = datetime(2026, 1, 1, tzinfo=UTC)
APP = Client(
    id=ClientId("app"),
    type=ClientType.PUBLIC,
    secret_hash=None,
    redirect_uris=("https://app.test/cb", "http://127.0.0.1/cb"),
    grant_types=frozenset({GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN}),
    scope=frozenset({"read"}),
    delivery=Delivery.BODY,
    audience=(),
    lifetimes=LifetimeOverrides(),
    enabled=True,
    created_at=T0,
)
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_an_events_live_generation_is_read_back_from_its_note() -> None:
    detail = f"reuse of generation 3; {live_generation_note(7)}"
    assert live_generation_in(detail) == 7
    assert live_generation_in("nothing noted") is None
    assert live_generation_in(None) is None


def test_a_rate_limit_crosses_a_process_boundary_with_its_retry_after() -> None:
    error = RateLimited(30, "slow down", detail="client app")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
    assert (type(copy), copy.retry_after, copy.public, copy.detail) == (
        RateLimited,
        30,
        "slow down",
        "client app",
    )


def mac_key(kid: int) -> StoredKey:
    return StoredKey(KeyId(str(kid)), KeyUse.REFRESH_MAC, "HS256", KeyState.ACTIVE, None, b"", T0)


def test_the_next_mac_key_ids_follow_the_newest_and_skip_those_in_use() -> None:
    keys = [mac_key(1), mac_key(2)]
    assert next_mac_key_id(keys) == 3
    assert upcoming_mac_key_ids(keys, 3) == {3, 4, 5}
    assert upcoming_mac_key_ids([], 1) == {1}
    # Past the last id the sequence wraps, and it never names more ids than are free.
    assert upcoming_mac_key_ids([mac_key(MAC_KEY_IDS - 1), mac_key(0)], 2) == {1, 2}


def test_only_the_ends_that_mean_a_token_in_two_hands_signal_theft() -> None:
    theft = {reason for reason in RevocationReason if reason.signals_theft}
    assert theft == {
        RevocationReason.REUSE_OUTSIDE_WINDOW,
        RevocationReason.REUSE_KEY_MISMATCH,
        RevocationReason.REPLAY_BUDGET_EXCEEDED,
        RevocationReason.CODE_REPLAYED,
    }


def test_a_registration_whose_redirect_uris_are_all_valid_passes() -> None:
    server = Lifetimes(access_token_ttl=900, session_idle_ttl=3600, session_max_ttl=86400)
    assert registration_problem(APP, server) is None


def dpop(mode: DpopMode, client: Client = APP) -> Client:
    return replace(client, rotation=RotationSettings(dpop=mode))


def test_a_client_that_requires_dpop_is_refused_a_request_without_a_proof() -> None:
    with pytest.raises(InvalidDpopProof):
        admitted_key(dpop(DpopMode.REQUIRED), None)
    assert admitted_key(dpop(DpopMode.REQUIRED), JKT) == JKT


def test_a_client_with_dpop_off_is_refused_a_request_with_a_proof() -> None:
    with pytest.raises(InvalidDpopProof):
        admitted_key(dpop(DpopMode.OFF), JKT)
    assert admitted_key(dpop(DpopMode.OFF), None) is None


def test_an_optional_dpop_client_binds_to_the_key_it_brings_or_none() -> None:
    assert admitted_key(dpop(DpopMode.OPTIONAL), JKT) == JKT
    assert admitted_key(dpop(DpopMode.OPTIONAL), None) is None


def test_a_public_clients_session_is_bound_to_its_key_a_confidential_ones_is_not() -> None:
    assert session_key(APP, JKT) == JKT
    confidential = replace(APP, type=ClientType.CONFIDENTIAL, secret_hash="hash")
    assert session_key(confidential, JKT) is None
