"""Clients that are a URL: the rules of a Client ID Metadata Document (the IETF OAuth
draft the MCP authorization specification adopted).

A client may present, as its `client_id`, the https URL of a JSON document that
describes it. keyturn fetches the document (`keyturn.net.fetch.SafeFetcher`), and these
pure rules decide whether the URL and the document make a client, and for how long the
answer may be kept. Such a client is always public: nothing in a document anyone can
read can be a shared secret, so keyturn takes `"none"` as its only authentication
method, and the code flow with PKCE (S256) as its only way to a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from keyturn.core import json_object
from keyturn.core.authorization import redirect_uri_problem
from keyturn.core.errors import InvalidClient
from keyturn.core.models import GrantType

MAX_URL_LENGTH = 255
"""Longer than any client id an operator registers, short enough to show a user."""
MAX_NAME_LENGTH = 100
MAX_REDIRECT_URIS = 10
MIN_CACHE_SECONDS = 60
"""A document is kept at least this long, whatever it says: a client cannot make keyturn
fetch it on every request."""
MAX_CACHE_SECONDS = 24 * 3600
"""…and at most this long, so a changed document is seen within a day."""
GRANTS = frozenset({GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN})
SECRET_MEMBERS = ("client_secret", "client_secret_expires_at")


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """What keyturn takes from a valid document."""

    client_id: str
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[GrantType]
    client_name: str | None = None


def is_metadata_url(client_id: str) -> bool:
    """Whether `client_id` names a metadata document rather than a registered client."""
    return client_id.startswith("https://")


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a client identifier URL, or `None`: https, a host, a path, no
    `.` or `..` segment, no fragment, no user or password (the draft's "Client
    Identifier"); and, stricter than the draft's SHOULD NOT, no query."""
    if len(url) > MAX_URL_LENGTH or not url.isprintable() or " " in url:
        return f"it must be a printable URL of at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme != "https" or not parts.hostname:
        return "it must be an https URL with a host"
    if "#" in url:
        return "it must not have a fragment"
    if "@" in parts.netloc:
        return "it must not have a user or password"
    if parts.query or "?" in url:
        return "it must not have a query"
    segments = parts.path.split("/")[1:]
    if not parts.path or not any(segments):
        return "it must have a path"
    if any(segment in (".", "..") for segment in segments):
        return "it must not have a . or .. path segment"
    return None


def parse_document(url: str, body: bytes, content_type: str | None) -> ClientMetadata:
    """The client that the document fetched from `url` describes; `InvalidClient` (its
    detail says why, for the log) when the document cannot be one."""
    kind = (content_type or "").partition(";")[0].strip().lower()
    if kind != "application/json" and not (
        kind.startswith("application/") and kind.endswith("+json")
    ):
        raise InvalidClient(detail="the client metadata document is not JSON")
    try:
        document = json_object.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidClient(detail="the client metadata document is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidClient(detail="the client metadata document is not a JSON object")
    problem = _document_problem(url, document)
    if problem is not None:
        raise InvalidClient(detail=f"client metadata document: {problem}")
    name = document.get("client_name")
    grants = document.get("grant_types", [GrantType.AUTHORIZATION_CODE.value])
    return ClientMetadata(
        client_id=url,
        redirect_uris=tuple(document["redirect_uris"]),
        grant_types=frozenset(GrantType(g) for g in grants),
        client_name=name,
    )


def _document_problem(url: str, document: dict[str, Any]) -> str | None:
    # The draft: equal to the URL it was fetched from, by simple string comparison.
    if document.get("client_id") != url:
        return "its client_id is not the URL it was fetched from"
    if any(member in document for member in SECRET_MEMBERS):
        return "it holds a client secret, which a public document cannot keep"
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        return "keyturn takes such clients as public: token_endpoint_auth_method must be none"
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        return f"redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"
    for uri in uris:
        if not isinstance(uri, str):
            return "every redirect URI must be a string"
        problem = redirect_uri_problem(uri)
        if problem is not None:
            return f"redirect URI {uri[:80]!r}: {problem}"
    grants = document.get("grant_types", [GrantType.AUTHORIZATION_CODE.value])
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        return "grant_types must be a list of strings"
    if not set(grants) <= {g.value for g in GRANTS} or GrantType.AUTHORIZATION_CODE not in grants:
        return "grant_types may be authorization_code and refresh_token only"
    responses = document.get("response_types", ["code"])
    if responses != ["code"]:
        return 'response_types must be ["code"]'
    name = document.get("client_name")
    if name is not None and (
        not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable()
    ):
        return f"client_name must be 1 to {MAX_NAME_LENGTH} printable characters"
    return None


def cache_seconds(max_age: int) -> int:
    """How long to keep a valid document its answer said to keep `max_age` seconds,
    within keyturn's bounds (the draft lets a server bound it). An error or an invalid
    document is never kept (the draft: MUST NOT cache them)."""
    return min(max(max_age, MIN_CACHE_SECONDS), MAX_CACHE_SECONDS)
