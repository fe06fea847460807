"""Fetching a URL that someone else chose, without becoming their way into the network.

Some URLs keyturn fetches are named by a caller it does not trust: a client's metadata
document (its `client_id` is the URL), a logout receiver a client registered. Fetched
naively, such a URL reaches what only keyturn can reach: a cloud's metadata service
(`169.254.169.254`), a database on `10.0.0.5`, keyturn's own admin port on `127.0.0.1`
(server-side request forgery, OWASP ASVS V12.6). `SafeFetcher` fetches one:

- over https only, to a host name or address without a user part or a fragment;
- to a public address only: the name is resolved once, every address it resolves to
  must be a global unicast address (loopback, private, link-local, shared, reserved,
  multicast and unspecified ones refused, and IPv4 addresses hidden in IPv6 forms
  judged as the IPv4 address they carry), and the connection goes to the address that
  was checked, with the name kept for the certificate check and SNI, so a second DNS
  answer cannot move it elsewhere (DNS rebinding);
- with no redirect followed (a 3xx is a failure), no proxy from the environment, no
  cookies, and a deadline on the whole exchange as well as each read, so a server that
  trickles its answer is cut off;
- reading at most `max_bytes` of the body.

`allow_loopback` lets tests reach a server on `127.0.0.1`; nothing else in keyturn sets it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""The addresses a host name resolves to, as text."""

NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeTarget(Exception):
    """The URL is refused before any connection: its scheme, its form, or an address it
    resolves to."""


class FetchFailed(Exception):
    """The fetch did not give a usable answer: no connection, a timeout, a status other
    than 200, a redirect, or a body too large."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    max_bytes: int = 5 * 1024
    """The most of a body read; a longer one is a failure."""
    timeout: float = 3.0
    """Seconds for the whole exchange: resolving, connecting, TLS, the answer."""
    allow_loopback: bool = False
    """Loopback addresses allowed too: for tests only."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    content_type: str | None
    max_age: int
    """Seconds the answer may be kept (`Cache-Control`): 0 for `no-store`, `no-cache`
    or none given."""


def carried_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that
    carry one (mapped, NAT64, 6to4, Teredo's client); else None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public(address: IPAddress, *, allow_loopback: bool = False) -> bool:
    """Whether `address` may be connected to on a caller's behalf."""
    inner = carried_ipv4(address)
    if inner is not None:
        return is_public(inner, allow_loopback=allow_loopback)
    if allow_loopback and address.is_loopback:
        return True
    return address.is_global and not address.is_multicast


async def system_resolve(host: str, port: int) -> Sequence[str]:
    found = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in found]


class SafeFetcher:
    def __init__(
        self,
        policy: FetchPolicy | None = None,
        *,
        resolve: Resolve = system_resolve,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy or FetchPolicy()
        self._resolve = resolve
        self._tls = tls

    async def get(self, url: str, *, accept: str = "application/json") -> Fetched:
        """The body of a 200 answer to `GET url`; `UnsafeTarget` or `FetchFailed`."""
        policy = self._policy
        try:
            async with asyncio.timeout(policy.timeout):
                return await self._get(url, accept)
        except TimeoutError:
            raise FetchFailed(f"no answer within {policy.timeout:g} s") from None

    async def _get(self, url: str, accept: str) -> Fetched:
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise UnsafeTarget("only https URLs are fetched")
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise UnsafeTarget("a URL with a user part or a fragment is not fetched")
        host = parts.hostname
        try:
            port = parts.port or 443
        except ValueError:
            raise UnsafeTarget("the URL's port is invalid") from None
        if not host:
            raise UnsafeTarget("the URL has no host")
        address = await self._address(host, port)
        # Connect to the address checked, not to the name again: the name is kept for
        # the Host header, SNI and the certificate's check.
        literal = f"[{address}]" if address.version == 6 else str(address)
        pinned = urlunsplit(("https", f"{literal}:{port}", parts.path or "/", parts.query, ""))
        host_header = host if port == 443 else f"{host}:{port}"
        if ":" in host:  # an IPv6 literal in the URL
            host_header = f"[{host}]" if port == 443 else f"[{host}]:{port}"
        async with httpx.AsyncClient(
            verify=self._tls or True,
            follow_redirects=False,
            trust_env=False,
            timeout=self._policy.timeout,
        ) as client:
            request = client.build_request(
                "GET",
                pinned,
                # No compression: the size read is the size of the document.
                headers={"Host": host_header, "Accept": accept, "Accept-Encoding": "identity"},
                extensions={"sni_hostname": host},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise FetchFailed(f"no answer: {type(error).__name__}") from None
            try:
                return await self._read(response)
            finally:
                await response.aclose()

    async def _address(self, host: str, port: int) -> IPAddress:
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                resolved = await self._resolve(host, port)
                found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
            except (OSError, ValueError):
                raise FetchFailed("the host name does not resolve") from None
        if not found:
            raise FetchFailed("the host name does not resolve")
        allow = self._policy.allow_loopback
        for address in found:
            if not is_public(address, allow_loopback=allow):
                # Every address must be public: a name that also resolves to an inner
                # one is refused, whichever one the connection would have used.
                raise UnsafeTarget("the host resolves to an address that is not public")
        return found[0]

    async def _read(self, response: httpx.Response) -> Fetched:
        if response.status_code != 200:
            raise FetchFailed(f"answered {response.status_code}")
        limit = self._policy.max_bytes
        declared = response.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise FetchFailed("the answer is too large")
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise FetchFailed("the answer is too large")
        except httpx.HTTPError as error:
            raise FetchFailed(f"the answer broke off: {type(error).__name__}") from None
        return Fetched(
            bytes(body),
            response.headers.get("content-type"),
            max_age(response.headers.get("cache-control")),
        )


def max_age(cache_control: str | None) -> int:
    """Seconds an answer may be kept under its `Cache-Control` (RFC 9111 §5.2.2): its
    `max-age`, 0 if it says `no-store` or `no-cache` or gives none."""
    if not cache_control:
        return 0
    seconds = 0
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            return 0
        if name == "max-age":
            value = value.strip().strip('"')
            if not value.isdigit():
                return 0
            seconds = int(value)
    return seconds
