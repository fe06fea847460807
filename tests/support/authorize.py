"""Driving keyturn's sign-in page the way a browser does: GET the authorization URL,
read the form, post it back with the cookie the page set. No JavaScript involved."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str


def new_pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return Pkce(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


class FormReader(HTMLParser):
    """The first form of a page: its action and every named input's value."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action") or ""
            self.in_form = True
        elif tag == "input" and self.in_form and values.get("name"):
            self.fields[values["name"] or ""] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.in_form = False


def read_form(html: str) -> tuple[str, dict[str, str]]:
    reader = FormReader()
    reader.feed(html)
    assert reader.action is not None, "the page has no form"
    return reader.action, reader.fields


def submit(
    http: httpx.Client, page: httpx.Response, username: str, password: str, **override: str
) -> httpx.Response:
    """Fill in and post the sign-in form of `page`; the answer is not followed."""
    action, fields = read_form(page.text)
    fields.update(username=username, password=password, **override)
    return http.post(urljoin(str(page.url), action), data=fields, follow_redirects=False)


def sign_in(
    http: httpx.Client, authorization_url: str, username: str, password: str
) -> httpx.Response:
    """GET the authorization URL, then post its form: the answer (a 303 on success)."""
    page = http.get(authorization_url, follow_redirects=False)
    assert page.status_code == 200, page.text
    return submit(http, page, username, password)


def query_of(location: str) -> dict[str, Any]:
    """The parameters of a redirect's query, one value each."""
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
