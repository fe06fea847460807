"""Scopes (RFC 6749 §3.3), lifetimes and the small rules on the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyturn.core import errors
from keyturn.core.errors import ALL_ERRORS, InvalidScope, KeyturnError, RateLimited
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import (
    Client,
    ClientType,
    Delivery,
    LifetimeOverrides,
    Lifetimes,
    Session,
)
from keyturn.core.scopes import format_scope, narrow, parse_scope

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_parse_scope_splits_on_spaces_and_ignores_repeats() -> None:
    assert parse_scope("read  write read") == frozenset({"read", "write"})


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_parse_scope_blank_means_not_requested(blank: str | None) -> None:
    assert parse_scope(blank) is None


@pytest.mark.parametrize("bad", ['read "x"', "a\\b", "é", "tab\there", "nul\x00"])
def test_parse_scope_refuses_characters_outside_the_grammar(bad: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(bad)


def test_parse_scope_refuses_absurd_sizes() -> None:
    with pytest.raises(InvalidScope):
        parse_scope(" ".join(f"s{i}" for i in range(65)))
    with pytest.raises(InvalidScope):
        parse_scope("x" * 129)


@given(st.frozensets(st.from_regex(r"[a-z:.]{1,12}", fullmatch=True), min_size=1, max_size=10))
def test_format_then_parse_round_trips(scope: frozenset[str]) -> None:
    assert parse_scope(format_scope(scope)) == scope


def test_format_scope_is_sorted() -> None:
    assert format_scope(frozenset({"write", "read"})) == "read write"


def test_narrow() -> None:
    granted = frozenset({"read", "write"})
    assert narrow(granted, None) == granted
    assert narrow(granted, frozenset({"read"})) == frozenset({"read"})
    assert narrow(granted, frozenset({"read", "admin"})) is None


def test_lifetimes_must_be_positive_and_idle_within_absolute() -> None:
    with pytest.raises(ValueError, match="positive"):
        Lifetimes(0, 1, 1)
    with pytest.raises(ValueError, match="idle"):
        Lifetimes(1, 10, 5)


def test_lifetime_overrides_replace_only_what_they_set() -> None:
    base = Lifetimes(900, 3600, 86400)
    assert LifetimeOverrides().apply(base) == base
    assert LifetimeOverrides(access_token_ttl=60).apply(base) == Lifetimes(60, 3600, 86400)


def _session(**kw: object) -> Session:
    values: dict[str, object] = {
        "id": SessionId("s"),
        "user_id": UserId("u"),
        "client_id": ClientId("c"),
        "scope": frozenset({"read"}),
        "salt": b"12345678",
        "generation": 0,
        "mac_key_id": 1,
        "created_at": T0,
        "last_used_at": T0,
        "rotated_at": None,
        "idle_expires_at": T0 + timedelta(hours=1),
        "absolute_expires_at": T0 + timedelta(hours=2),
    }
    values.update(kw)
    return Session(**values)  # type: ignore[arg-type]


def test_access_token_expiry_is_capped_by_the_absolute_deadline() -> None:
    s = _session()
    assert s.access_token_expiry(T0, 900) == T0 + timedelta(seconds=900)
    late = T0 + timedelta(hours=2) - timedelta(seconds=30)
    assert s.access_token_expiry(late, 900) == s.absolute_expires_at


def test_auth_time_defaults_to_creation() -> None:
    assert _session().auth_time == T0
    later = T0 + timedelta(minutes=5)
    assert _session(authenticated_at=later).auth_time == later
    assert not _session().revoked
    assert _session(revoked_at=T0).revoked


def test_client_is_confidential() -> None:
    client = Client(
        id=ClientId("c"),
        type=ClientType.CONFIDENTIAL,
        secret_hash="x",
        redirect_uris=(),
        grant_types=frozenset(),
        scope=frozenset(),
        delivery=Delivery.BODY,
        audience=(),
        lifetimes=LifetimeOverrides(),
        enabled=True,
        created_at=T0,
    )
    assert client.is_confidential


def test_every_error_has_a_stable_code_and_a_public_message() -> None:
    exported = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, KeyturnError)
    }
    assert exported == set(ALL_ERRORS)
    for cls in ALL_ERRORS:
        error = cls(detail="internal") if cls is not RateLimited else cls(5, detail="internal")
        assert error.code
        assert error.public
        assert "internal" not in error.public


def test_public_message_can_be_overridden() -> None:
    assert errors.InvalidRequest("The body is too large.").public == "The body is too large."
    assert RateLimited(30).retry_after == 30
