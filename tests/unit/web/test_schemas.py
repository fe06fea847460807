"""The first-party bodies as types: each refusal is the `InvalidRequest` that
`forms.text_field` gives for the same member, and the description shows the bounds the
handlers check."""

from __future__ import annotations

from typing import Any

import pytest

from keyturn.core import errors
from keyturn.web.forms import text_field
from keyturn.web.schemas import (
    TOKEN_RESPONSE,
    ClientFields,
    LoginFields,
    PasswordChange,
    RefreshFields,
    parse,
    schema_of,
)


@pytest.mark.parametrize(
    "value",
    [["a"], {"$ne": None}, 5, True, None, "a\x00b", "\ud800", "x" * 5000, "\x00" * 5000],
)
def test_a_faulty_member_is_refused_as_text_field_refuses_it(value: object) -> None:
    data: dict[str, Any] = {"username": value, "password": "p"}
    with pytest.raises(errors.InvalidRequest) as by_text_field:
        text_field(data, "username", max_length=256)
    with pytest.raises(errors.InvalidRequest) as by_model:
        parse(LoginFields, data)
    assert by_model.value.public == by_text_field.value.public


def test_the_first_faulty_member_in_checking_order_is_named() -> None:
    with pytest.raises(errors.InvalidRequest, match="The field username is required"):
        parse(LoginFields, {"scope": 5})
    with pytest.raises(errors.InvalidRequest, match="The field new_password must be a string"):
        parse(PasswordChange, {"current_password": "a", "new_password": 1})


def test_absent_and_null_optional_members_are_none_and_unknown_ones_ignored() -> None:
    body = parse(RefreshFields, {"refresh_token": None, "extra": [1]})
    assert body.refresh_token is None
    assert body.scope is None
    client = parse(ClientFields, {"client_id": "native"})
    assert (client.client_id, client.client_secret) == ("native", None)


def test_the_description_shows_the_checked_bounds_in_the_readers_order() -> None:
    schema = schema_of(LoginFields, ClientFields)
    assert list(schema["properties"]) == [
        "username",
        "password",
        "device_name",
        "scope",
        "previous_refresh_token",
        "client_id",
        "client_secret",
    ]
    assert schema["required"] == ["username", "password", "client_id"]
    assert schema["properties"]["client_id"] == {"type": "string", "maxLength": 128}
    assert schema["properties"]["scope"] == {"type": "string", "maxLength": 1024}


def test_the_token_response_schema_is_closed_and_optional_refresh_token() -> None:
    assert TOKEN_RESPONSE["additionalProperties"] is False
    assert TOKEN_RESPONSE["required"] == ["access_token", "token_type", "expires_in", "scope"]
    assert TOKEN_RESPONSE["properties"]["token_type"] == {
        "type": "string",
        "enum": ["Bearer", "DPoP"],
    }
