"""The error mapping and the strict body parsers of the HTTP layer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyturn.core import errors
from keyturn.core.dpop_errors import DPOP_ERRORS
from keyturn.service.inspection import InsufficientScope
from keyturn.web.errors import (
    STATUS,
    CrossSiteRefused,
    DpopScopeRefused,
    DpopTokenRefused,
    ResourceNonceRequired,
    ResourceProofRefused,
    clean_description,
    to_response,
)
from keyturn.web.forms import (
    MAX_BODY,
    BodyTooLarge,
    parse_form,
    parse_json_object,
    read_limited,
    text_field,
)

FORM = "application/x-www-form-urlencoded"


def test_every_domain_error_is_mapped_to_a_status() -> None:
    assert {*errors.ALL_ERRORS, *DPOP_ERRORS} <= set(STATUS)
    assert set(STATUS) - {*errors.ALL_ERRORS, *DPOP_ERRORS} == {
        CrossSiteRefused,
        ResourceProofRefused,
        ResourceNonceRequired,
        InsufficientScope,
    }


def test_bearer_errors_carry_the_rfc_6750_challenge_and_csrf_is_403() -> None:
    invalid = to_response(errors.InvalidToken())
    assert invalid.status == 401
    assert invalid.headers["WWW-Authenticate"] == 'Bearer realm="keyturn", error="invalid_token"'
    assert to_response(CrossSiteRefused()).status == 403


def test_h03_account_api_refusals_are_challenged_in_the_scheme_the_request_used() -> None:
    scope = to_response(InsufficientScope())
    assert scope.status == 403
    assert scope.headers["WWW-Authenticate"] == (
        'Bearer realm="keyturn", error="insufficient_scope", scope="keyturn:account"'
    )
    dpop_scope = to_response(DpopScopeRefused())
    assert dpop_scope.status == 403
    assert dpop_scope.headers["WWW-Authenticate"].startswith('DPoP realm="keyturn", error="insu')
    dpop_token = to_response(DpopTokenRefused())
    assert dpop_token.status == 401
    assert dpop_token.headers["WWW-Authenticate"] == 'DPoP realm="keyturn", error="invalid_token"'


def test_error_body_is_rfc_shaped_and_not_cached() -> None:
    response = to_response(errors.InvalidGrant(detail="reuse_detected"))
    assert response.status == 400
    assert json.loads(response.body) == {
        "error": "invalid_grant",
        "error_description": "The provided grant is invalid, expired or revoked.",
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert b"reuse" not in response.body


def test_invalid_client_over_basic_gets_www_authenticate() -> None:
    response = to_response(errors.InvalidClient(), basic_auth_used=True)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "WWW-Authenticate" not in to_response(errors.InvalidClient()).headers


def test_unavailable_and_rate_limited_say_when_to_retry() -> None:
    assert to_response(errors.StoreUnavailable()).headers["Retry-After"] == "2"
    limited = to_response(errors.RateLimited(30))
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "30"


@given(st.text())
def test_descriptions_keep_only_the_rfc_characters(text: str) -> None:
    cleaned = clean_description(text)
    assert all(c in {" ", "!"} or "#" <= c <= "[" or "]" <= c <= "~" for c in cleaned)


def test_form_parses_and_drops_empty_values() -> None:
    assert parse_form(FORM, b"grant_type=refresh_token&scope=&a=%C3%A9") == {
        "grant_type": "refresh_token",
        "a": "é",
    }


def test_form_accepts_utf8_charset_parameter() -> None:
    assert parse_form(FORM + "; charset=UTF-8", b"a=b") == {"a": "b"}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "invalid/@@##",
        "</><script>alert(1)</script>",
        "text",
        "text/[html]",
        "",
        None,
    ],
)
def test_form_refuses_every_other_content_type(content_type: str | None) -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_form(content_type, b"grant_type=refresh_token")


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type=a&grant_type=b",
        b"a=%00b",
        b"a=%FF%FE",
        b"a=%ED%A0%80",
        "a=\u00e9".encode(),
        b"&".join(b"f%d=1" % i for i in range(40)),
    ],
)
def test_form_refuses_hostile_bodies(body: bytes) -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_form(FORM, body)


def test_form_refuses_other_charsets() -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_form(FORM + "; charset=latin-1", b"a=b")


@pytest.mark.parametrize(
    "body",
    [
        b'{"username":"alice","username":"bob"}',
        b"[" * 50_000 + b"]" * 50_000,
        b'["not an object"]',
        b"\xff",
        b"{",
    ],
)
def test_json_refuses_duplicates_depth_and_non_objects(body: bytes) -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_json_object("application/json", body)


def test_json_needs_its_content_type() -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_json_object("text/plain", b"{}")
    assert parse_json_object("application/json; charset=utf-8", b'{"a":1}') == {"a": 1}


@pytest.mark.parametrize(
    "value",
    [["a"], {"$ne": None}, 5, True, "a\x00b", "\ud800", "x" * 5000],
)
def test_text_field_refuses_wrong_types_and_characters(value: object) -> None:
    with pytest.raises(errors.InvalidRequest):
        text_field({"username": value}, "username")


def test_text_field_required_and_optional() -> None:
    with pytest.raises(errors.InvalidRequest):
        text_field({}, "username")
    assert text_field({}, "device_name", required=False) is None
    assert text_field({"username": "alice"}, "username") == "alice"


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_read_limited_refuses_by_declared_length_and_by_stream() -> None:
    with pytest.raises(BodyTooLarge):
        await read_limited(_chunks(b""), str(MAX_BODY + 1))
    with pytest.raises(BodyTooLarge):
        await read_limited(_chunks(b"x" * MAX_BODY, b"x"), None)
    with pytest.raises(errors.InvalidRequest):
        await read_limited(_chunks(b""), "ten")
    assert await read_limited(_chunks(b"ab", b"c"), "3") == b"abc"
