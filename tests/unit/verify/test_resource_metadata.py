"""Protected resource metadata (RFC 9728) from `keyturn.verify.resource_metadata`: the
document at its well-known URL, and its URL named in the refusals of a Starlette or
FastAPI application, so a client that knows only the API finds the authorization server.
The applications are real Starlette and FastAPI ones, called over httpx's ASGI transport;
the issuer's keys are a local JWKS."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyturn.verify import AccessToken, DpopTokenVerifier, Verifier
from keyturn.verify.resource_metadata import ProtectedResource, with_parameter
from keyturn.verify.starlette import require_dpop_scopes, require_scopes

ISSUER = "https://auth.example.com"
RESOURCE = "https://mcp.example.com/mcp"
METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
NAMED = f'resource_metadata="{METADATA}"'


class Issuer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}

    def token(self, scope: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": RESOURCE,
            "exp": now + 300,
            "iat": now,
            "jti": secrets.token_hex(8),
            "client_id": "agent",
            "scope": scope,
        }
        return jwt.encode(
            claims, self.key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "k1"}
        )

    def verifier(self) -> Verifier:
        transport = self.transport()
        return Verifier(
            ISSUER,
            audience=RESOURCE,
            http=httpx.Client(transport=transport),
            async_http=httpx.AsyncClient(transport=transport),
        )

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/.well-known/oauth-authorization-server":
                return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks"})
            return httpx.Response(200, json=self.jwks)

        return httpx.MockTransport(answer)


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


def _resource(**options: Any) -> ProtectedResource:
    return ProtectedResource(RESOURCE, authorization_servers=[ISSUER], **options)


def _starlette_app(issuer: Issuer, resource: ProtectedResource) -> Starlette:
    verifier = issuer.verifier()
    tools = require_scopes(verifier, "mcp:tools")
    realm = require_scopes(verifier, "mcp:tools", realm="mcp")
    dpop = require_dpop_scopes(DpopTokenVerifier(verifier), "mcp:tools")

    async def call(request: Request) -> Response:
        token = await tools(request)
        return JSONResponse({"sub": token.subject})

    async def call_realm(request: Request) -> Response:
        await realm(request)
        return JSONResponse({})

    async def call_dpop(request: Request) -> Response:
        await dpop(request)
        return JSONResponse({})

    async def basic_only(request: Request) -> Response:
        return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="admin"'})

    app = Starlette(
        routes=[
            Route("/mcp", call, methods=["POST"]),
            Route("/mcp/realm", call_realm, methods=["POST"]),
            Route("/mcp/dpop", call_dpop, methods=["POST"]),
            Route("/admin", basic_only),
        ]
    )
    resource.mount(app)
    return app


@pytest.fixture
async def client(issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    app = _starlette_app(issuer, _resource(scopes_supported=["mcp:tools"], resource_name="Notes"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://mcp.example.com") as c:
        yield c


async def test_the_document_is_served_where_rfc_9728_puts_it(client: httpx.AsyncClient) -> None:
    answer = await client.get("/.well-known/oauth-protected-resource/mcp")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp:tools"],
        "resource_name": "Notes",
    }
    assert answer.headers["cache-control"] == "max-age=300"
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_resource_at_the_root_has_its_document_at_the_bare_well_known_path() -> None:
    resource = ProtectedResource("https://api.example.com", authorization_servers=[ISSUER])
    assert resource.path == "/.well-known/oauth-protected-resource"
    assert resource.metadata_url == "https://api.example.com/.well-known/oauth-protected-resource"
    trailing = ProtectedResource("https://api.example.com/v1/", authorization_servers=[ISSUER])
    assert trailing.path == "/.well-known/oauth-protected-resource/v1"


async def test_a_request_without_a_token_is_told_where_the_metadata_is(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/mcp")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == f"Bearer {NAMED}"
    # What an MCP client does next: read the document the challenge names.
    found = await client.get(_named_url(answer.headers["www-authenticate"]))
    assert found.json()["authorization_servers"] == [ISSUER]


async def test_an_invalid_token_and_a_missing_scope_both_name_the_metadata(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    refused = await client.post("/mcp", headers={"Authorization": "Bearer not-a-jwt"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == f'Bearer error="invalid_token", {NAMED}'
    narrow = issuer.token("mcp:read")
    stepped = await client.post("/mcp", headers={"Authorization": f"Bearer {narrow}"})
    assert stepped.status_code == 403
    assert stepped.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="mcp:tools", {NAMED}'
    )
    good = await client.post(
        "/mcp", headers={"Authorization": f"Bearer {issuer.token('mcp:tools')}"}
    )
    assert good.status_code == 200
    assert "www-authenticate" not in good.headers


async def test_a_realm_and_every_scheme_of_a_dpop_challenge_get_it(
    client: httpx.AsyncClient,
) -> None:
    realm = await client.post("/mcp/realm", headers={"Authorization": "Bearer x.y.z"})
    assert realm.headers["www-authenticate"] == (
        f'Bearer realm="mcp", error="invalid_token", {NAMED}'
    )
    dpop = await client.post("/mcp/dpop")
    challenge = dpop.headers["www-authenticate"]
    assert challenge.startswith(f"Bearer {NAMED}, DPoP algs=")
    assert challenge.endswith(f", {NAMED}")


async def test_other_schemes_and_other_answers_are_left_alone(client: httpx.AsyncClient) -> None:
    basic = await client.get("/admin")
    assert basic.status_code == 401
    assert basic.headers["www-authenticate"] == 'Basic realm="admin"'
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert "www-authenticate" not in missing.headers


async def test_the_document_takes_only_get_and_head(client: httpx.AsyncClient) -> None:
    path = "/.well-known/oauth-protected-resource/mcp"
    assert (await client.head(path)).status_code == 200
    for method in ("POST", "PUT", "DELETE"):
        answer = await client.request(method, path, content=b'{"resource": "https://evil"}')
        assert answer.status_code == 405
    # Whatever a caller sends, the document is the same fixed bytes.
    assert (await client.get(path + "?resource=https://evil")).json()["resource"] == RESOURCE


async def test_fastapi_applications_mount_it_the_same_way(issuer: Issuer) -> None:
    verifier = issuer.verifier()
    tools = require_scopes(verifier, "mcp:tools")
    app = FastAPI()

    @app.post("/mcp")
    async def call(token: AccessToken = Depends(tools)) -> dict[str, str]:  # noqa: B008
        return {"sub": token.subject}

    _resource().mount(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://mcp.example.com") as c:
        refused = await c.post("/mcp")
        assert refused.headers["www-authenticate"] == f"Bearer {NAMED}"
        assert (await c.get("/.well-known/oauth-protected-resource/mcp")).status_code == 200
        assert "/.well-known/oauth-protected-resource/mcp" not in json.dumps(app.openapi())


@pytest.mark.parametrize(
    "resource",
    [
        "http://mcp.example.com/mcp",  # plain http off loopback
        "https://mcp.example.com/mcp#part",
        "https://mcp.example.com/mcp?tenant=1",
        "https://user@mcp.example.com/mcp",
        "https:///mcp",
        "mcp.example.com/mcp",
        "javascript:alert(1)",
    ],
)
def test_a_resource_identifier_must_be_an_https_url_without_query_or_fragment(
    resource: str,
) -> None:
    with pytest.raises(ValueError, match="resource"):
        ProtectedResource(resource, authorization_servers=[ISSUER])


def test_loopback_http_is_allowed_for_development() -> None:
    for url in ("http://localhost:8080/mcp", "http://127.0.0.1:9000", "http://[::1]:8000/api"):
        assert ProtectedResource(url, authorization_servers=["http://localhost:8000"]).resource


def test_authorization_servers_are_issuer_urls_in_a_list() -> None:
    with pytest.raises(ValueError, match="list"):
        ProtectedResource(RESOURCE, authorization_servers=ISSUER)
    with pytest.raises(ValueError, match="list"):
        ProtectedResource(RESOURCE, authorization_servers=[])
    with pytest.raises(ValueError, match="authorization server"):
        ProtectedResource(RESOURCE, authorization_servers=["http://auth.example.com"])
    with pytest.raises(ValueError, match="documentation"):
        _resource(resource_documentation="ftp://docs.example.com")
    with pytest.raises(ValueError, match="negative"):
        _resource(cache_seconds=-1)


def test_dpop_members_are_published_when_set() -> None:
    document = _resource(
        dpop_signing_alg_values_supported=["ES256"], dpop_bound_access_tokens_required=True
    ).document()
    assert document["dpop_signing_alg_values_supported"] == ["ES256"]
    assert document["dpop_bound_access_tokens_required"] is True
    assert "dpop_bound_access_tokens_required" not in _resource().document()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer", f"Bearer {NAMED}"),
        ('Bearer error="invalid_token"', f'Bearer error="invalid_token", {NAMED}'),
        # A comma inside a quoted string does not start a parameter or a challenge.
        ('Bearer scope="a,b", error="x"', f'Bearer scope="a,b", error="x", {NAMED}'),
        ('Bearer error="a\\"b,c"', f'Bearer error="a\\"b,c", {NAMED}'),
        # Whitespace around '=' (RFC 9110 §11.2) is a parameter, not a scheme.
        ('Bearer realm="r", error = "x"', f'Bearer realm="r", error = "x", {NAMED}'),
        ('Basic realm="x", Bearer', f'Basic realm="x", Bearer {NAMED}'),
        # Named already (by the application itself): never twice.
        (
            f"Bearer {NAMED.replace(METADATA, 'https://other')}",
            f"Bearer {NAMED.replace(METADATA, 'https://other')}",
        ),
        # A token68 challenge takes no parameters.
        ("Bearer abc==", "Bearer abc=="),
        ("Negotiate abcdef", "Negotiate abcdef"),
        # Not a challenge list: left as it was.
        ('error="x"', 'error="x"'),
        ("", ""),
    ],
)
def test_with_parameter_adds_to_bearer_and_dpop_challenges_only(header: str, expected: str) -> None:
    assert with_parameter(header, NAMED) == expected


async def test_a_challenge_that_is_not_ascii_is_left_as_it_was() -> None:
    async def latin(request: Request) -> Response:
        response = Response(status_code=401)
        response.raw_headers.append((b"www-authenticate", 'Bearer realm="\xe9"'.encode("latin-1")))
        return response

    app = Starlette(routes=[Route("/latin", latin)])
    _resource().mount(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://mcp.example.com") as c:
        answer = await c.get("/latin")
    assert answer.status_code == 401
    assert answer.headers.raw == [(b"www-authenticate", b'Bearer realm="\xe9"')] or [
        value for name, value in answer.headers.raw if name.lower() == b"www-authenticate"
    ] == [b'Bearer realm="\xe9"']


def _named_url(challenge: str) -> str:
    return challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
