"""The HTTP edge of a real `keyturn serve`, attacked over raw sockets and through a
proxy: header bytes, header and idle timeouts, a concurrency limit (H-05); forwarded
addresses trusted only from the configured proxies, and direct TLS (H-08); and the
smaller RFC points at the token and authorization endpoints (H-17)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import APP_REDIRECT, SECRET, Server, start_server
from keyturn.settings import Settings
from keyturn.web.http_protocol import OneWriteTransport
from keyturn.wiring import open_engine
from support.engine import PASSWORD
from support.server import free_port, server_process

MAX_HEADER = 16 * 1024
HEADER_TIMEOUT = 2
IDLE_TIMEOUT = 2
LOGIN_LIMIT = 3
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@dataclass(frozen=True)
class Plain:
    """A server on an empty SQLite database, reached over raw sockets."""

    base: str
    port: int
    pid: int


@contextmanager
def plain_server(tmp: Path, **env: str) -> Iterator[Plain]:
    settings = {
        "KEYTURN_DATABASE_URL": f"sqlite:///{tmp / 'keyturn.db'}",
        "KEYTURN_SECRET_KEY": SECRET,
        **env,
    }
    with server_process(settings) as (base, proc):
        yield Plain(base, int(base.rsplit(":", 1)[1]), proc.pid)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    with plain_server(
        tmp_path_factory.mktemp("edge"),
        KEYTURN_HTTP_MAX_HEADER_BYTES=str(MAX_HEADER),
        KEYTURN_HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        KEYTURN_HTTP_IDLE_TIMEOUT=str(IDLE_TIMEOUT),
    ) as server:
        yield server


def connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket, limit: float = 10) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (`True`), or until
    `limit` seconds pass with the connection still open (`False`)."""
    received = bytearray()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(received), False
        except ConnectionResetError:
            return bytes(received), True
        if not chunk:
            return bytes(received), True
        received += chunk
    return bytes(received), False


def send_quietly(sock: socket.socket, data: bytes) -> int:
    """Send `data`; how much went before the server closed the connection."""
    sent = 0
    view = memoryview(data)
    try:
        while sent < len(data):
            sent += sock.send(view[sent : sent + 65536])
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def get(path: str, *headers: bytes) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# H-05: header bytes


def test_h05_oversized_header_gets_431_and_close(edge: Plain) -> None:
    with connect(edge.port) as sock:
        send_quietly(sock, get("/healthz", b"X-Big: " + b"a" * (4 * MAX_HEADER)))
        response, closed = read_until_closed(sock)
    assert status_of(response) == 431, response[:200]
    assert b"connection: close" in response.lower()
    assert closed


def test_h05_header_bytes_are_counted_across_small_writes(edge: Plain) -> None:
    """A header block dribbled in 1 KiB pieces is measured as a whole."""
    request = get("/healthz", b"X-Big: " + b"a" * (2 * MAX_HEADER))
    with connect(edge.port) as sock:
        for start in range(0, len(request), 1024):
            if send_quietly(sock, request[start : start + 1024]) == 0:
                break
        response, closed = read_until_closed(sock)
    assert status_of(response) == 431, response[:200]
    assert closed


def test_h05_header_under_the_cap_and_a_body_over_it_are_served(edge: Plain) -> None:
    """Only header bytes count: a request whose headers fit and whose body (sent in the
    same write) would not is answered by the endpoint, not 431."""
    body = b"grant_type=password&" + b"x" * (MAX_HEADER - 100)
    head = (
        b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"X-Pad: " + b"p" * (MAX_HEADER - 500) + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    with connect(edge.port) as sock:
        sock.sendall(head + body)
        response, _ = read_until_closed(sock)
    assert status_of(response) == 401, response[:300]


def test_h05_cap_applies_to_each_request_on_a_kept_alive_connection(edge: Plain) -> None:
    with connect(edge.port) as sock:
        sock.sendall(get("/healthz", b"X-Small: " + b"s" * 1000))
        first = sock.recv(65536)
        assert status_of(first) == 200, first
        send_quietly(sock, get("/healthz", b"X-Big: " + b"a" * (2 * MAX_HEADER)))
        response, closed = read_until_closed(sock)
    assert status_of(response) == 431, response[:200]
    assert closed


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_h05_unfinished_headers_do_not_grow_memory(tmp_path: Path) -> None:
    """Three connections each sending 32 MiB of a header that never ends: measured on
    the unchanged server, 153 MiB more resident memory."""
    with plain_server(tmp_path) as server:
        before = rss(server.pid)
        socks = [connect(server.port, timeout=30) for _ in range(3)]
        try:
            for sock in socks:
                send_quietly(sock, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (32 << 20))
            time.sleep(0.5)
            grown = rss(server.pid) - before
        finally:
            for sock in socks:
                sock.close()
    assert grown < 24 << 20, f"{grown / 2**20:.1f} MiB more"


# H-05: timeouts


def test_h05_slow_header_connection_closed(edge: Plain) -> None:
    """One header byte every half second: the headers are not complete within the
    header timeout, so the connection is answered 408 and closed."""
    started = time.monotonic()
    with connect(edge.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        closed = False
        response = b""
        while time.monotonic() - started < HEADER_TIMEOUT + 6:
            if send_quietly(sock, b"a") == 0:
                break
            response, closed = read_until_closed(sock, 0.5)
            if closed:
                break
        if not closed:
            response, closed = read_until_closed(sock, 1)
    assert closed, "the slow connection is still open"
    assert time.monotonic() - started < HEADER_TIMEOUT + 3
    assert status_of(response) in (408, 0), response


def test_h05_slow_second_request_on_a_kept_alive_connection_closed(edge: Plain) -> None:
    """uvicorn's keep-alive timeout stops at the first byte of the next request: the
    header timeout starts there."""
    with connect(edge.port) as sock:
        sock.sendall(get("/healthz"))
        assert status_of(sock.recv(65536)) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        response, closed = read_until_closed(sock, HEADER_TIMEOUT + 6)
    assert closed
    assert time.monotonic() - started < HEADER_TIMEOUT + 3
    assert status_of(response) in (408, 0), response


def test_h05_slow_body_connection_closed(edge: Plain) -> None:
    """Complete headers, then a body a byte at a time: the same timeout bounds reading
    the whole request (bodies are at most 16 KiB), else a worker's connection slots
    could be held by bodies that never end."""
    started = time.monotonic()
    with connect(edge.port) as sock:
        sock.sendall(
            b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
            b"grant_type="
        )
        closed = False
        response = b""
        while time.monotonic() - started < HEADER_TIMEOUT + 6:
            if send_quietly(sock, b"a") == 0:
                break
            response, closed = read_until_closed(sock, 0.5)
            if closed:
                break
    assert closed, "the slow body's connection is still open"
    assert time.monotonic() - started < HEADER_TIMEOUT + 3
    assert status_of(response) in (408, 0), response


def test_h05_idle_connection_closed(edge: Plain) -> None:
    """Connected, nothing sent: closed after the idle timeout, without an answer."""
    started = time.monotonic()
    with connect(edge.port) as sock:
        response, closed = read_until_closed(sock, IDLE_TIMEOUT + 6)
    assert closed, "the idle connection is still open"
    assert time.monotonic() - started < IDLE_TIMEOUT + 3
    assert response == b""


def test_h05_a_request_slower_than_nothing_is_still_served(edge: Plain) -> None:
    """A client that connects, waits under the idle timeout, then sends its request in
    two pieces under the header timeout is served as usual."""
    with connect(edge.port) as sock:
        time.sleep(IDLE_TIMEOUT / 2)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT / 2)
        sock.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response, closed = read_until_closed(sock)
    assert status_of(response) == 200, response
    assert closed


def test_h05_a_refusal_after_a_held_header_block_keeps_the_order() -> None:
    """The half-close after a refusal sends what the one-write transport holds first."""

    class Recording(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[bytes | str] = []

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.calls.append(bytes(data))

        def write_eof(self) -> None:
            self.calls.append("eof")

        def is_closing(self) -> bool:
            return False

    async def scenario() -> list[bytes | str]:
        sock = Recording()
        transport = OneWriteTransport(sock, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        transport.write_eof()
        return sock.calls

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "eof"]


# H-05: concurrency


def test_h05_over_the_concurrency_limit_gets_503_with_retry_after(tmp_path: Path) -> None:
    with plain_server(tmp_path, KEYTURN_HTTP_MAX_CONCURRENCY="3") as server:
        held = [connect(server.port) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # unfinished
            time.sleep(0.3)
            refused = httpx.get(f"{server.base}/healthz", timeout=10)
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        again = httpx.get(f"{server.base}/healthz", timeout=10)
    assert refused.status_code == 503
    assert refused.json()["error"] == "temporarily_unavailable"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["connection"] == "close"
    assert again.status_code == 200


# H-08: addresses behind a proxy


def trusted_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trusted: str
) -> Iterator[Server]:
    env = {"KEYTURN_LOGIN_REQUESTS_PER_MINUTE": str(LOGIN_LIMIT)}
    if trusted:
        env["KEYTURN_TRUSTED_PROXIES"] = trusted
    yield from start_server(request, tmp_path_factory, env)


@pytest.fixture(params=["sqlite", "postgres"])
def direct(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """No proxy trusted: the default."""
    yield from trusted_server(request, tmp_path_factory, "")


@pytest.fixture(params=["sqlite", "postgres"])
def proxied(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The test's own address is the trusted proxy, as a CIDR beside another one."""
    yield from trusted_server(request, tmp_path_factory, "10.9.8.0/24, 127.0.0.0/8")


def failed_login(base: str, forwarded_for: str | None, proto: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    if proto:
        headers["X-Forwarded-Proto"] = proto
    body = {"client_id": "native", "username": "alice", "password": "wrong password"}
    return httpx.post(f"{base}/auth/login", json=body, headers=headers, timeout=10).status_code


def failed_login_ips(server: Server) -> list[str | None]:
    async def read() -> list[str | None]:
        engine = await open_engine(Settings(**{**server.settings.model_dump()}))
        try:
            events = await engine.store.list_events(type="login_failed")
            return [e.event.device.ip for e in events]
        finally:
            await engine.close()

    return asyncio.run(read())


def test_h08_untrusted_peer_cannot_choose_its_address(direct: Server) -> None:
    """Without trusted proxies, X-Forwarded-For is the client's word: ignored, so a new
    value per attempt neither escapes the per-address limit nor writes the audit IP."""
    answers = [failed_login(direct.base, f"198.51.100.{i}") for i in range(LOGIN_LIMIT + 1)]
    assert answers == [401] * LOGIN_LIMIT + [429]
    assert set(failed_login_ips(direct)) == {"127.0.0.1"}


def test_h08_trusted_proxy_forwarded_address_is_used(proxied: Server) -> None:
    """Behind a trusted proxy, the per-address limit is per real client: one client
    over its limit does not lock out another; the audit names each client."""
    one, other = "203.0.113.7", "203.0.113.8"
    answers = [failed_login(proxied.base, one) for _ in range(LOGIN_LIMIT + 1)]
    assert answers == [401] * LOGIN_LIMIT + [429]
    assert failed_login(proxied.base, other) == 401
    # The proxy appends the address it saw; whatever the client wrote before it is not
    # trusted, so a client cannot escape its limit by prefixing addresses.
    assert failed_login(proxied.base, f"192.0.2.1, {one}") == 429
    assert set(failed_login_ips(proxied)) == {one, other}


def test_h08_forwarded_proto_does_not_change_the_issuer(proxied: Server) -> None:
    """X-Forwarded-Proto changes the request's scheme, never the configured issuer
    that tokens, metadata and DPoP `htu` are checked against."""
    url = f"{proxied.base}/.well-known/oauth-authorization-server"
    for proto in ("https", "http"):
        answer = httpx.get(url, headers={"X-Forwarded-Proto": proto}, timeout=10)
        assert answer.json()["issuer"] == proxied.base


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@contextmanager
def tls_server(tmp: Path, args: list[str], env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    log = tmp / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyturn", "serve", "--port", str(port), *args],
            env={
                **os.environ,
                "KEYTURN_DATABASE_URL": f"sqlite:///{tmp / 'keyturn.db'}",
                "KEYTURN_SECRET_KEY": SECRET,
                "KEYTURN_ISSUER": base,
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                time.sleep(0.1)
            assert proc.poll() is None, log.read_text()
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.mark.parametrize("how", ["options", "settings"])
def test_h08_tls_serves(tmp_path: Path, how: str) -> None:
    cert, key = self_signed(tmp_path)
    if how == "options":
        args, env = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], {}
    else:
        args, env = [], {"KEYTURN_SSL_CERTFILE": str(cert), "KEYTURN_SSL_KEYFILE": str(key)}
    with tls_server(tmp_path, args, env) as base:
        trust = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(f"{base}/.well-known/oauth-authorization-server", verify=trust)
        assert answer.status_code == 200
        assert answer.json()["issuer"] == base
        with pytest.raises(httpx.TransportError):
            httpx.get(base.replace("https://", "http://") + "/healthz", timeout=5)


def test_h05_oversized_header_over_tls_gets_431_and_close(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    with tls_server(tmp_path, args, {"KEYTURN_HTTP_MAX_HEADER_BYTES": str(MAX_HEADER)}) as base:
        trust = ssl.create_default_context(cafile=str(cert))
        port = int(base.rsplit(":", 1)[1])
        with trust.wrap_socket(connect(port), server_hostname="127.0.0.1") as sock:
            send_quietly(sock, get("/healthz", b"X-Big: " + b"a" * (4 * MAX_HEADER)))
            response, closed = read_until_closed(sock)
    assert status_of(response) == 431, response[:200]
    assert closed


def test_h08_tls_needs_both_files(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "keyturn", "serve", "--ssl-certfile", str(cert)],
        env={**os.environ, "KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "ssl_certfile and ssl_keyfile go together" in done.stderr, done.stderr


# H-17: token endpoint challenge, response_mode, form fields


@pytest.mark.parametrize(
    "authorization", ["Bearer abc", 'Digest username="conf", realm="x"', "Negotiate YII="]
)
def test_h17_non_basic_scheme_at_token_endpoint_gets_a_challenge(
    server: Server, authorization: str
) -> None:
    """RFC 6749 §5.2: a client that authenticated with an Authorization header gets 401
    with WWW-Authenticate; keyturn's only header scheme is Basic, so that is the one
    challenged."""
    answer = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("POST", "/oauth/introspect", {"token": "x"}),
        ("POST", "/oauth/revoke", {"token": "x"}),
        ("GET", "/auth/revocations", None),
    ],
)
def test_h17_non_basic_scheme_elsewhere_gets_a_challenge(
    server: Server, method: str, path: str, form: dict[str, str] | None
) -> None:
    """The other endpoints that read client credentials answer the same way."""
    answer = httpx.request(
        method,
        f"{server.base}{path}",
        data=form,
        headers={"Authorization": "Bearer abc"},
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith("Basic ")


def authorize(server: Server, **extra: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": APP_REDIRECT,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "state": "st-1",
        **extra,
    }
    return httpx.get(f"{server.base}/oauth/authorize", params=params, timeout=10)


@pytest.mark.parametrize("mode", ["form_post", "fragment", "query.jwt", "QUERY"])
def test_h17_response_mode_other_than_query_is_refused(server: Server, mode: str) -> None:
    """keyturn answers in the query only: a client asking for another response mode
    would look for the code where it is not, so it is told at its redirect URI."""
    answer = authorize(server, response_mode=mode)
    assert answer.status_code in (302, 303), answer.text
    location = answer.headers["location"]
    assert location.startswith(APP_REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["invalid_request"]
    assert "response_mode" in query["error_description"][0]
    assert query["state"] == ["st-1"]
    assert "code" not in query


def test_h17_response_mode_query_is_served(server: Server) -> None:
    assert authorize(server, response_mode="query").status_code == 200
    assert authorize(server).status_code == 200


def test_h17_response_mode_repeated_is_refused(server: Server) -> None:
    url = str(authorize(server).request.url) + "&response_mode=query&response_mode=query"
    answer = httpx.get(url, timeout=10)
    assert answer.status_code in (302, 303)
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["invalid_request"]


def test_h17_too_many_form_fields_says_what_is_wrong(server: Server) -> None:
    fields = "&".join(f"f{i}=v" for i in range(100))
    answer = httpx.post(
        f"{server.base}/oauth/token",
        content=f"grant_type=password&{fields}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_request"
    assert "too many" in body["error_description"].lower(), body


def test_h17_password_fixture_is_what_the_server_knows(server: Server) -> None:
    """Guard for the tests above: the seeded login works, so the refusals are the
    rules under test and not a broken fixture."""
    body = {"client_id": "native", "username": "alice", "password": PASSWORD}
    answer = httpx.post(f"{server.base}/auth/login", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.text)["token_type"]


def test_h05_a_body_cut_short_is_no_unexpected_error(tmp_path: Path) -> None:
    """A client that leaves mid-body (or that the request timeout closes) is an ordinary
    event: no `unexpected error` in the log and no 500 in the access log."""
    log_path = tmp_path / "server.log"
    settings = {
        "KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path / 'keyturn.db'}",
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_LOG_LEVEL": "INFO",
    }
    with server_process(settings, log_path=log_path) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        with connect(port) as sock:
            sock.sendall(
                b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
                b"grant_type="
            )
            time.sleep(0.3)
        time.sleep(0.5)
        assert httpx.get(f"{base}/healthz").status_code == 200
        logged = log_path.read_text()
    assert "unexpected error" not in logged, logged
    assert '"status":500' not in logged.replace(" ", ""), logged
