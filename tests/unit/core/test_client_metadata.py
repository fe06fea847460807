"""Clients that are a URL (`keyturn.core.client_metadata`): which URLs may name a client,
which documents make one, and how long one is kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyturn.core.client_metadata import (
    MAX_CACHE_SECONDS,
    MIN_CACHE_SECONDS,
    cache_seconds,
    is_metadata_url,
    parse_document,
    url_problem,
)
from keyturn.core.errors import InvalidClient
from keyturn.core.models import GrantType

URL = "https://app.example.com/oauth/client.json"


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "client_id": URL,
        "client_name": "Example Agent",
        "redirect_uris": ["http://127.0.0.1:33418/callback", "https://app.example.com/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not ...}


def _parse(document: Any, content_type: str = "application/json") -> Any:
    return parse_document(URL, json.dumps(document).encode(), content_type)


def test_a_valid_document_makes_a_public_client() -> None:
    client = _parse(_document())
    assert client.client_id == URL
    assert client.redirect_uris == ("http://127.0.0.1:33418/callback", "https://app.example.com/cb")
    assert client.grant_types == {GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN}
    assert client.client_name == "Example Agent"


def test_the_least_document_is_a_client_id_and_a_redirect_uri() -> None:
    client = _parse({"client_id": URL, "redirect_uris": ["https://app.example.com/cb"]})
    assert client.grant_types == {GrantType.AUTHORIZATION_CODE}
    assert client.client_name is None


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/client-metadata+json"],
)
def test_json_media_types_are_taken(content_type: str) -> None:
    assert _parse(_document(), content_type).client_id == URL


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (_document(client_id="https://app.example.com/oauth/client.json/"), "fetched from"),
        (_document(client_id="https://APP.example.com/oauth/client.json"), "fetched from"),
        (_document(client_id=...), "fetched from"),
        (_document(client_secret="s3cret"), "secret"),
        (_document(client_secret_expires_at=0), "secret"),
        (_document(token_endpoint_auth_method="client_secret_basic"), "public"),
        (_document(token_endpoint_auth_method="private_key_jwt"), "public"),
        (_document(redirect_uris=[]), "redirect_uris"),
        (_document(redirect_uris="https://app.example.com/cb"), "redirect_uris"),
        (
            _document(redirect_uris=[f"https://app.example.com/{n}" for n in range(11)]),
            "redirect_uris",
        ),
        (_document(redirect_uris=[42]), "string"),
        (_document(redirect_uris=["http://evil.example/cb"]), "loopback"),
        (_document(redirect_uris=["https://app.example.com/cb#frag"]), "fragment"),
        (_document(redirect_uris=["javascript:alert(1)"]), "redirect URI"),
        (_document(grant_types=["client_credentials"]), "grant_types"),
        (_document(grant_types=["refresh_token"]), "grant_types"),
        (_document(grant_types=["authorization_code", "password"]), "grant_types"),
        (_document(grant_types="authorization_code"), "grant_types"),
        (_document(grant_types=[1]), "grant_types"),
        (_document(response_types=["token"]), "response_types"),
        (_document(client_name=""), "client_name"),
        (_document(client_name="x" * 101), "client_name"),
        (_document(client_name="Bank\u202e"), "client_name"),
        (_document(client_name=7), "client_name"),
    ],
)
def test_a_document_that_cannot_be_a_public_client_is_refused(
    document: dict[str, Any], why: str
) -> None:
    with pytest.raises(InvalidClient) as refused:
        _parse(document)
    assert why in (refused.value.detail or "")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>not found</html>", "text/html"),
        (b'{"client_id": 1}', "text/plain"),
        (b"", None),
        (b"{not json", "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes, content_type: str | None) -> None:
    with pytest.raises(InvalidClient):
        parse_document(URL, body, content_type)


def test_a_repeated_member_is_refused() -> None:
    # Two parsers could each read a different client_id out of one document.
    body = (
        f'{{"client_id": "{URL}", "redirect_uris": ["https://app.example.com/cb"], '
        '"client_id": "https://evil.example/x"}'
    ).encode()
    with pytest.raises(InvalidClient) as refused:
        parse_document(URL, body, "application/json")
    assert "not valid JSON" in (refused.value.detail or "")


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "https://app.example.com/client",
        "https://app.example.com:8443/c.json",
        "https://[2001:db8::1]/client.json",
    ],
)
def test_a_client_identifier_url_is_https_with_a_path(url: str) -> None:
    assert url_problem(url) is None
    assert is_metadata_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://app.example.com/client.json", "https"),
        ("https:///client.json", "https"),
        ("https://app.example.com", "path"),
        ("https://app.example.com/", "path"),
        ("https://app.example.com/./client.json", ". or .."),
        ("https://app.example.com/a/../client.json", ". or .."),
        ("https://app.example.com/client.json#x", "fragment"),
        ("https://user:pw@app.example.com/client.json", "user"),
        ("https://user@app.example.com/client.json", "user"),
        ("https://app.example.com/client.json?v=1", "query"),
        ("https://app.example.com/client.json?", "query"),
        ("https://app.example.com:99999/c", "valid"),
        ("https://app.example.com/" + "a" * 300, "printable"),
        ("https://app.example.com/a b", "printable"),
        ("https://app.example.com/\u0000", "printable"),
    ],
)
def test_a_url_that_cannot_name_a_client_is_refused(url: str, why: str) -> None:
    problem = url_problem(url)
    assert problem is not None
    assert why in problem


def test_registered_client_ids_are_not_metadata_urls() -> None:
    assert not is_metadata_url("grafana")
    assert not is_metadata_url("http://app.example.com/client.json")


def test_a_document_is_kept_within_bounds_whatever_it_asks() -> None:
    assert cache_seconds(0) == MIN_CACHE_SECONDS
    assert cache_seconds(600) == 600
    assert cache_seconds(10**9) == MAX_CACHE_SECONDS
