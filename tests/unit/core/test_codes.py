"""The rules for a presented authorization code (core.codes), pure: H-07 and H-14."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyturn.core.codes import password_changed_since, replay_ends_session
from keyturn.core.ids import ClientId, SessionId, UserId
from keyturn.core.models import AuthorizationCode, User

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
APP = ClientId("app")


def code(*, used: bool = True) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash="h",
        client_id=APP,
        user_id=UserId("u"),
        redirect_uri="https://app.test/cb",
        redirect_uri_given=True,
        code_challenge="c",
        scope=frozenset(),
        authenticated_at=T0,
        created_at=T0,
        expires_at=T0 + timedelta(seconds=60),
        used_at=T0 + timedelta(seconds=1) if used else None,
        session_id=SessionId("s") if used else None,
    )


def user(password_changed_at: datetime) -> User:
    return User(UserId("u"), "alice", "hash", True, T0, password_changed_at)


def test_h07_own_client_before_expiry_ends_the_session() -> None:
    assert replay_ends_session(code(), APP, True, T0 + timedelta(seconds=59))


@pytest.mark.parametrize(
    ("client_id", "verifier", "after", "used"),
    [
        (ClientId("web"), True, 2, True),  # another client, within the lifetime
        (APP, False, 2, True),  # its own client's id, without the verifier
        (APP, True, 60, True),  # its own client, at expiry
        (APP, True, 3 * 86400, True),  # days later
        (ClientId("web"), True, 3 * 86400, True),
        (APP, True, 2, False),  # never used: nothing to replay
    ],
)
def test_h07_every_other_presentation_ends_nothing(
    client_id: ClientId, verifier: bool, after: int, used: bool
) -> None:
    at = T0 + timedelta(seconds=after)
    assert not replay_ends_session(code(used=used), client_id, verifier, at)


def test_h14_a_password_changed_after_sign_in_refuses_the_code() -> None:
    assert password_changed_since(code(), user(T0 + timedelta(microseconds=1)))
    assert not password_changed_since(code(), user(T0))
    assert not password_changed_since(code(), user(T0 - timedelta(days=1)))
