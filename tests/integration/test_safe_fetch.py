"""Fetching a URL a caller chose (`keyturn.net.fetch.SafeFetcher`): never an address
inside the network, never a redirect, never more than the limit, never longer than the
deadline. Real TLS servers on 127.0.0.1 (their certificates from a test CA); the
refusals of inner addresses happen before any connection, so they need no server."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Sequence

import pytest

from keyturn.core.client_metadata import parse_document
from keyturn.core.errors import InvalidClient
from keyturn.net.fetch import (
    FetchFailed,
    FetchPolicy,
    SafeFetcher,
    UnsafeTarget,
    carried_ipv4,
    is_public,
    max_age,
)
from support.tls import HttpsServer, TestAuthority, response

DOCUMENT = b'{"client_id": "https://app.example.com/client.json"}'


@pytest.fixture(scope="module")
def authority() -> TestAuthority:
    return TestAuthority()


def _fetcher(authority: TestAuthority, **policy: object) -> SafeFetcher:
    return SafeFetcher(
        FetchPolicy(allow_loopback=True, **policy),  # type: ignore[arg-type]
        tls=authority.client_context(),
    )


def _answering(body: bytes, status: int = 200, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    async def answer(_head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(response(status, body, headers))

    return answer


async def test_a_public_document_is_fetched_with_its_cache_lifetime(
    authority: TestAuthority,
) -> None:
    server = HttpsServer(
        authority.server_context("localhost", "127.0.0.1"),
        _answering(
            DOCUMENT,
            headers={"Content-Type": "application/json", "Cache-Control": "public, max-age=600"},
        ),
    )
    async with server.running():
        fetched = await _fetcher(authority).get(f"https://localhost:{server.port}/client.json")
    assert fetched.body == DOCUMENT
    assert fetched.content_type == "application/json"
    assert fetched.max_age == 600
    head = server.requests[0].decode()
    assert head.startswith("GET /client.json HTTP/1.1\r\n")
    assert f"host: localhost:{server.port}" in head.lower()
    assert "accept-encoding: identity" in head.lower()
    assert "cookie" not in head.lower()


async def test_the_certificate_must_name_the_host_asked_for(authority: TestAuthority) -> None:
    # The connection goes to the address resolved, but the certificate is checked
    # against the name in the URL: a certificate for the address alone is refused.
    server = HttpsServer(authority.server_context("127.0.0.1"), _answering(DOCUMENT))
    async with server.running():
        with pytest.raises(FetchFailed):
            await _fetcher(authority).get(f"https://localhost:{server.port}/client.json")


async def test_a_certificate_from_an_unknown_authority_is_refused(
    authority: TestAuthority,
) -> None:
    stranger = TestAuthority()
    server = HttpsServer(stranger.server_context("localhost"), _answering(DOCUMENT))
    async with server.running():
        with pytest.raises(FetchFailed):
            await _fetcher(authority).get(f"https://localhost:{server.port}/")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/client.json",
        "https://localhost/client.json",
        "https://[::1]/",
        "https://10.0.0.5/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "https://100.64.0.1/",  # shared address space (carrier NAT)
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "https://[::ffff:169.254.169.254]/",
        "https://[64:ff9b::a00:5]/",  # NAT64 of 10.0.0.5
        "https://[2002:a00:5::]/",  # 6to4 of 10.0.0.5
        "https://2130706433/",  # 127.0.0.1 as one number
        "https://0x7f.0.0.1/",
        "https://127.1/",
    ],
)
async def test_an_inner_address_is_refused_before_any_connection(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        await SafeFetcher().get(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://app.example.com/client.json",
        "ftp://app.example.com/",
        "file:///etc/passwd",
        "https://user:secret@app.example.com/",
        "https://app.example.com/client.json#fragment",
        "https:///client.json",
        "https://app.example.com:99999/",
    ],
)
async def test_only_plain_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        await SafeFetcher().get(url)


async def test_a_name_that_also_resolves_inside_is_refused() -> None:
    contacted: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        contacted.append(host)
        return ["93.184.215.14", "10.0.0.5"]  # one public answer, one inner

    with pytest.raises(UnsafeTarget):
        await SafeFetcher(resolve=resolve).get("https://rebind.example/client.json")
    assert contacted == ["rebind.example"], "resolved once"


async def test_loopback_stays_refused_unless_the_test_setting_allows_it(
    authority: TestAuthority,
) -> None:
    server = HttpsServer(authority.server_context("localhost"), _answering(DOCUMENT))
    async with server.running():
        with pytest.raises(UnsafeTarget):
            await SafeFetcher(tls=authority.client_context()).get(
                f"https://localhost:{server.port}/"
            )
    assert server.requests == []


async def test_a_redirect_is_a_failure_and_is_never_followed(authority: TestAuthority) -> None:
    target = HttpsServer(authority.server_context("localhost"), _answering(DOCUMENT))
    async with target.running():
        redirect = HttpsServer(
            authority.server_context("localhost"),
            _answering(b"", 302, {"Location": f"https://localhost:{target.port}/inner"}),
        )
        async with redirect.running():
            with pytest.raises(FetchFailed, match="302"):
                await _fetcher(authority).get(f"https://localhost:{redirect.port}/")
            metadata = HttpsServer(
                authority.server_context("localhost"),
                _answering(b"", 307, {"Location": "https://169.254.169.254/latest/meta-data/"}),
            )
            async with metadata.running():
                with pytest.raises(FetchFailed, match="307"):
                    await _fetcher(authority).get(f"https://localhost:{metadata.port}/")
    assert target.requests == []


@pytest.mark.parametrize("status", [201, 204, 304, 404, 500])
async def test_only_a_200_is_an_answer(authority: TestAuthority, status: int) -> None:
    server = HttpsServer(authority.server_context("localhost"), _answering(DOCUMENT, status))
    async with server.running():
        with pytest.raises(FetchFailed, match=str(status)):
            await _fetcher(authority).get(f"https://localhost:{server.port}/")


async def test_a_body_over_the_limit_is_refused_declared_or_not(
    authority: TestAuthority,
) -> None:
    big = b"x" * 6000
    declared = HttpsServer(authority.server_context("localhost"), _answering(big))

    async def chunked(_head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for _ in range(100):  # 100 KB, 1 KB a chunk, with no length given ahead
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        writer.write(b"0\r\n\r\n")

    undeclared = HttpsServer(authority.server_context("localhost"), chunked)
    async with declared.running(), undeclared.running():
        fetcher = _fetcher(authority, max_bytes=5 * 1024)
        with pytest.raises(FetchFailed, match="too large"):
            await fetcher.get(f"https://localhost:{declared.port}/")
        with pytest.raises(FetchFailed, match="too large"):
            await fetcher.get(f"https://localhost:{undeclared.port}/")
        exact = HttpsServer(authority.server_context("localhost"), _answering(b"z" * 5120))
        async with exact.running():
            assert len((await fetcher.get(f"https://localhost:{exact.port}/")).body) == 5120


async def test_a_server_that_trickles_is_cut_off_at_the_deadline(
    authority: TestAuthority,
) -> None:
    async def trickle(_head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # each byte well within a read timeout, the whole far past it
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.1)

    async def silent(_head: bytes, _writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    slow = HttpsServer(authority.server_context("localhost"), trickle)
    mute = HttpsServer(authority.server_context("localhost"), silent)
    async with slow.running(), mute.running():
        fetcher = _fetcher(authority, timeout=1.0)
        for server in (slow, mute):
            began = time.monotonic()
            with pytest.raises(FetchFailed, match="within"):
                await fetcher.get(f"https://localhost:{server.port}/")
            assert time.monotonic() - began < 2.0


async def test_a_proxy_in_the_environment_is_not_used(
    authority: TestAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would make the connection itself, to a name resolved anew.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    server = HttpsServer(authority.server_context("localhost"), _answering(DOCUMENT))
    async with server.running():
        assert (await _fetcher(authority).get(f"https://localhost:{server.port}/")).body == DOCUMENT


async def test_a_name_that_does_not_resolve_is_a_failure() -> None:
    async def nowhere(host: str, port: int) -> Sequence[str]:
        raise OSError("no such name")

    with pytest.raises(FetchFailed, match="resolve"):
        await SafeFetcher(resolve=nowhere).get("https://nowhere.example/")

    async def empty(host: str, port: int) -> Sequence[str]:
        return []

    with pytest.raises(FetchFailed, match="resolve"):
        await SafeFetcher(resolve=empty).get("https://nowhere.example/")


def test_ipv4_carried_in_ipv6_is_judged_as_that_ipv4() -> None:
    ip = ipaddress.ip_address
    assert carried_ipv4(ip("::ffff:10.0.0.1")) == ip("10.0.0.1")
    assert carried_ipv4(ip("64:ff9b::808:808")) == ip("8.8.8.8")
    assert carried_ipv4(ip("2001:db8::1")) is None
    assert carried_ipv4(ip("10.0.0.1")) is None
    assert is_public(ip("64:ff9b::808:808"))
    assert not is_public(ip("64:ff9b::a00:1"))
    assert is_public(ip("2606:4700::1111"))
    assert is_public(ip("1.1.1.1"))
    assert not is_public(ip("127.0.0.1"))
    assert is_public(ip("127.0.0.1"), allow_loopback=True)
    assert not is_public(ip("10.0.0.1"), allow_loopback=True)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 0),
        ("", 0),
        ("max-age=300", 300),
        ("public, max-age=60", 60),
        ('max-age="120"', 120),
        ("max-age=60, no-store", 0),
        ("no-cache", 0),
        ("max-age=-5", 0),
        ("max-age=abc", 0),
        ("private", 0),
    ],
)
def test_the_cache_lifetime_follows_cache_control(header: str | None, seconds: int) -> None:
    assert max_age(header) == seconds


async def test_a_fetched_metadata_document_naming_another_url_makes_no_client(
    authority: TestAuthority,
) -> None:
    # The whole path of a client that is a URL: fetched safely, then judged. A document
    # copied from another client (its client_id another URL) is no client here.
    copied = json.dumps(
        {
            "client_id": "https://trusted.example/client.json",
            "redirect_uris": ["https://evil.example/cb"],
        }
    ).encode()
    server = HttpsServer(
        authority.server_context("localhost"),
        _answering(copied, headers={"Content-Type": "application/json"}),
    )
    async with server.running():
        url = f"https://localhost:{server.port}/client.json"
        fetched = await _fetcher(authority).get(url)
    with pytest.raises(InvalidClient) as refused:
        parse_document(url, fetched.body, fetched.content_type)
    assert "fetched from" in (refused.value.detail or "")
