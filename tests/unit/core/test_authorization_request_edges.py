"""The authorization request rules (core.authorization) at their edges: lengths, the
one registered redirect URI that may be left out, response modes, and what the login
form carries back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from keyturn.core.authorization import (
    MAX_PARAMETER_LENGTH,
    MAX_STATE_LENGTH,
    AuthorizationRefused,
    check_authorization_request,
    redirect_uri_matches,
    redirect_uri_problem,
)
from keyturn.core.errors import InvalidRequest
from keyturn.core.ids import ClientId
from keyturn.core.models import Client, ClientType, Delivery, GrantType, LifetimeOverrides

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
APP = Client(
    id=ClientId("app"),
    type=ClientType.PUBLIC,
    secret_hash=None,
    redirect_uris=("https://app.test/cb",),
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


def test_a_client_with_one_redirect_uri_may_leave_it_out_and_the_form_leaves_it_out() -> None:
    request = check_authorization_request(params(redirect_uri=None, state=None), APP)
    assert (request.redirect_uri, request.redirect_uri_given) == ("https://app.test/cb", False)
    fields = request.form_fields()
    assert "redirect_uri" not in fields
    assert "state" not in fields


def test_the_form_carries_a_given_redirect_uri_and_state_back() -> None:
    fields = check_authorization_request(params(), APP).form_fields()
    assert (fields["redirect_uri"], fields["state"]) == ("https://app.test/cb", "s")


def test_a_parameter_past_its_length_is_refused_to_the_user() -> None:
    caught = refused(params(client_id="a" * (MAX_PARAMETER_LENGTH + 1)))
    assert isinstance(caught.error, InvalidRequest)
    assert caught.redirect_uri is None


def test_a_state_past_its_length_goes_back_to_the_client_without_it() -> None:
    caught = refused(params(state="s" * (MAX_STATE_LENGTH + 1)))
    assert isinstance(caught.error, InvalidRequest)
    assert (caught.redirect_uri, caught.state) == ("https://app.test/cb", None)


@pytest.mark.parametrize("mode", ["fragment", "form_post", "jwt"])
def test_a_response_mode_other_than_query_is_refused_in_the_query(mode: str) -> None:
    caught = refused(params(response_mode=mode))
    assert isinstance(caught.error, InvalidRequest)
    assert (caught.redirect_uri, caught.state) == ("https://app.test/cb", "s")
    assert check_authorization_request(params(response_mode="query"), APP).state == "s"


def test_plain_http_outside_loopback_matches_only_itself() -> None:
    registered = "http://app.test/cb"
    assert redirect_uri_matches(registered, registered)
    assert not redirect_uri_matches(registered, "http://app.test:8080/cb")


def test_a_uri_whose_port_is_not_a_number_cannot_be_registered() -> None:
    assert redirect_uri_problem("https://app.test:port/cb") == "it is not a valid URI"


def test_a_client_without_one_registered_uri_must_name_it() -> None:
    two = replace(APP, redirect_uris=("https://app.test/cb", "https://app.test/other"))
    assert isinstance(refused(params(redirect_uri=None), two).error, InvalidRequest)
