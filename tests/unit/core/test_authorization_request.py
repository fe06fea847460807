"""The authorization request rules (core.authorization) and PKCE (crypto.pkce), pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyturn.core.authorization import (
    AuthorizationRefused,
    check_authorization_request,
    redirect_uri_matches,
    redirect_uri_problem,
    with_query,
)
from keyturn.core.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from keyturn.core.ids import ClientId
from keyturn.core.models import Client, ClientType, Delivery, GrantType, LifetimeOverrides
from keyturn.crypto.pkce import s256, verifier_matches

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
APP = Client(
    id=ClientId("app"),
    type=ClientType.PUBLIC,
    secret_hash=None,
    redirect_uris=("https://app.test/cb", "http://127.0.0.1/cb"),
    grant_types=frozenset({GrantType.AUTHORIZATION_CODE}),
    scope=frozenset({"read", "write"}),
    delivery=Delivery.BODY,
    audience=(),
    lifetimes=LifetimeOverrides(),
    enabled=True,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def params(**values: str | Sequence[str] | None) -> dict[str, list[str]]:
    base: dict[str, str | Sequence[str] | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": "https://app.test/cb",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "state": "s",
    }
    base.update(values)
    return {k: [v] if isinstance(v, str) else list(v) for k, v in base.items() if v is not None}


def refused(given: dict[str, list[str]], client: Client | None = APP) -> AuthorizationRefused:
    with pytest.raises(AuthorizationRefused) as caught:
        check_authorization_request(given, client)
    return caught.value


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == CHALLENGE
    assert verifier_matches(verifier, CHALLENGE)
    assert not verifier_matches(verifier[:-1] + "j", CHALLENGE)
    assert not verifier_matches(None, CHALLENGE)
    assert not verifier_matches("short", s256("short"))
    assert not verifier_matches("a" * 129, s256("a" * 129))


def test_a_good_request_keeps_what_the_code_needs() -> None:
    request = check_authorization_request(params(scope="read"), APP)
    assert request.redirect_uri == "https://app.test/cb"
    assert request.redirect_uri_given
    assert request.scope == {"read"}
    assert request.state == "s"
    assert request.code_challenge == CHALLENGE
    assert request.form_fields()["redirect_uri"] == "https://app.test/cb"


def test_no_scope_asked_means_the_clients_scope() -> None:
    assert check_authorization_request(params(), APP).scope == {"read", "write"}


@pytest.mark.parametrize(
    ("given", "client", "error"),
    [
        (params(client_id=None), APP, InvalidRequest),
        (params(client_id=["app", "app"]), APP, InvalidRequest),
        (params(), None, InvalidClient),
        (params(redirect_uri="https://evil.example/cb"), APP, InvalidRequest),
        (params(redirect_uri=None), APP, InvalidRequest),
        (params(redirect_uri=["https://app.test/cb"] * 2), APP, InvalidRequest),
    ],
)
def test_client_and_redirect_failures_are_never_redirected(
    given: dict[str, list[str]], client: Client | None, error: type[Exception]
) -> None:
    refusal = refused(given, client)
    assert isinstance(refusal.error, error)
    assert refusal.redirect_uri is None


@pytest.mark.parametrize(
    ("given", "error"),
    [
        (params(response_type=None), InvalidRequest),
        (params(response_type="token"), UnsupportedResponseType),
        (params(code_challenge=None), InvalidRequest),
        (params(code_challenge_method=None), InvalidRequest),
        (params(code_challenge_method="plain"), InvalidRequest),
        (params(code_challenge="abc"), InvalidRequest),
        (params(scope="admin"), InvalidScope),
        (params(scope="bad\\scope"), InvalidScope),
        (params(scope=["read", "write"]), InvalidRequest),
    ],
)
def test_later_failures_go_back_to_the_client_with_state(
    given: dict[str, list[str]], error: type[Exception]
) -> None:
    refusal = refused(given)
    assert isinstance(refusal.error, error)
    assert refusal.redirect_uri == "https://app.test/cb"
    assert refusal.state == "s"


def test_a_client_without_the_grant_is_unauthorized_client() -> None:
    from dataclasses import replace

    refusal = refused(params(), replace(APP, grant_types=frozenset({GrantType.PASSWORD})))
    assert isinstance(refusal.error, UnauthorizedClient)


def test_a_repeated_state_is_refused_without_echoing_either() -> None:
    refusal = refused(params(state=["a", "b"]))
    assert refusal.redirect_uri == "https://app.test/cb"
    assert refusal.state is None


def test_a_disabled_client_is_unknown() -> None:
    from dataclasses import replace

    assert isinstance(refused(params(), replace(APP, enabled=False)).error, InvalidClient)


@given(st.text(max_size=40))
def test_redirect_uris_match_only_exactly_outside_loopback(suffix: str) -> None:
    registered = "https://app.test/cb"
    assert redirect_uri_matches(registered, registered)
    if suffix:
        assert not redirect_uri_matches(registered, registered + suffix)


@pytest.mark.parametrize(
    ("presented", "ok"),
    [
        ("http://127.0.0.1/cb", True),
        ("http://127.0.0.1:1234/cb", True),
        ("http://127.0.0.1:65535/cb", True),
        ("http://127.0.0.1:1234/cb/", False),
        ("http://127.0.0.1:1234/cb?x", False),
        ("http://localhost:1234/cb", False),
        ("https://127.0.0.1:1234/cb", False),
        ("http://user@127.0.0.1:1234/cb", False),
        ("http://127.0.0.1:port/cb", False),
    ],
)
def test_a_loopback_redirect_may_change_only_its_port(presented: str, ok: bool) -> None:
    assert redirect_uri_matches("http://127.0.0.1/cb", presented) is ok


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("https://app.test/cb", True),
        ("https://app.test/cb?tenant=1", True),
        ("http://127.0.0.1/cb", True),
        ("http://localhost:3000/cb", True),
        ("com.example.app:/oauth", True),
        ("http://app.test/cb", False),
        ("https://app.test/cb#x", False),
        ("/relative", False),
        ("javascript:alert(1)", False),
        ("https:///nohost", False),
        ("https://app.test/a b", False),
    ],
)
def test_which_redirect_uris_can_be_registered(uri: str, ok: bool) -> None:
    assert (redirect_uri_problem(uri) is None) is ok


@given(
    st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=10), max_size=3),
    st.dictionaries(st.sampled_from(["code", "state", "iss"]), st.text(max_size=10), max_size=3),
)
def test_with_query_keeps_the_registered_query_and_adds_ours(
    existing: dict[str, str], added: dict[str, str]
) -> None:
    from urllib.parse import urlencode

    base = "https://app.test/cb" + ("?" + urlencode(existing) if existing else "")
    result = urlsplit(with_query(base, dict(added)))
    pairs = parse_qsl(result.query, keep_blank_values=True)
    assert pairs == [*existing.items(), *added.items()]
    assert result.path == "/cb"
