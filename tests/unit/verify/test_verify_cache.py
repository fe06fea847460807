"""The verified-token cache of `keyturn.verify.Verifier`: what may change between two
presentations of a token is checked on each (expiry, not-before, revocation, the DPoP
binding), only a token that passed every check enters, and nothing hostile evicts an
entry or grows the cache past its bound.

Keys come through an in-process transport (the kit's HTTP seam); tokens are signed by
joserfc with the issuer's private keys, so the kit's own signer is not what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keyturn.verify import AccessToken, TokenRejected, Verifier
from keyturn.verify.token_cache import DEFAULT_SIZE

ISSUER = "https://as.test"
AUDIENCE = "https://api.test"
NOW = 1_800_000_000
LEEWAY = 30
ALGS = ("ES256", "EdDSA", "RS256")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "sub": "8b0d8a4e-4a53-4a8e-9d4b-0f6f1d0c2a11",
    "aud": AUDIENCE,
    "exp": NOW + 900,
    "iat": NOW,
    "jti": "j-1",
    "client_id": "app",
    "sid": "s-1",
}
"""The claims of every test token, less `scope`."""


class Issuer:
    """Signing keys, and the metadata and JWKS the kit fetches."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.published: list[dict[str, Any]] = []
        self.fetches = 0

    def add_key(self, alg: str, kid: str) -> None:
        if alg == "ES256":
            key: Any = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
        elif alg == "EdDSA":
            key = OKPKey.import_key(ed25519.Ed25519PrivateKey.generate())
        else:
            key = RSAKey.import_key(rsa.generate_private_key(65537, 2048))
        self.private[kid] = (alg, key)
        self.published.append({**key.as_dict(private=False), "kid": kid, "alg": alg})

    def sign(self, kid: str, header: dict[str, Any] | None = None, **claims: Any) -> str:
        alg, key = self.private[kid]
        body = {**CLAIMS, "scope": "read", **claims}
        head = {"typ": "at+jwt", "alg": alg, "kid": kid, **(header or {})}
        return jwt.encode(
            head, {k: v for k, v in body.items() if v is not None}, key, algorithms=[alg]
        )

    def transport(self) -> httpx.MockTransport:
        def serve(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/.well-known/oauth-authorization-server":
                return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
            self.fetches += 1
            return httpx.Response(200, json={"keys": list(self.published)})

        return httpx.MockTransport(serve)


def verifier_of(
    issuer: Issuer,
    clock: Clock,
    revoked: set[str] | None = None,
    **options: Any,
) -> Verifier:
    return Verifier(
        ISSUER,
        AUDIENCE,
        leeway=LEEWAY,
        clock=clock,
        revoked=(revoked if revoked is not None else set()).__contains__,
        http=httpx.Client(transport=issuer.transport()),
        async_http=httpx.AsyncClient(transport=issuer.transport()),
        **options,
    )


def setup(alg: str = "ES256", **options: Any) -> tuple[Issuer, Clock, set[str], Verifier]:
    issuer = Issuer()
    issuer.add_key(alg, f"k-{alg}")
    clock = Clock(NOW + 1)
    revoked: set[str] = set()
    return issuer, clock, revoked, verifier_of(issuer, clock, revoked, **options)


def count_signature_checks(verifier: Verifier) -> list[int]:
    """Wraps every prepared signature check of the verifier's key set in a counter."""
    calls = [0]
    prepared = verifier._prepared
    for kid, (alg, check) in list(prepared.keys.items()):
        assert check is not None

        def counted(signing_input: bytes, signature: bytes, check: Any = check) -> bool:
            calls[0] += 1
            return bool(check(signing_input, signature))

        prepared.keys = {**prepared.keys, kid: (alg, counted)}  # type: ignore[misc]
    prepared.headers.clear()
    return calls


@pytest.mark.parametrize("alg", ALGS)
def test_a_token_seen_again_costs_no_signature_check(alg: str) -> None:
    issuer, _, _, verifier = setup(alg)
    token = issuer.sign(f"k-{alg}")
    first = verifier.verify(token)
    calls = count_signature_checks(verifier)
    verifier._cache.clear()
    assert verifier.verify(token) == first
    assert calls == [1]
    for _ in range(5):
        assert verifier.verify(token).subject == first.subject
    assert calls == [1]
    assert token in verifier._cache


@pytest.mark.parametrize("alg", ALGS)
def test_revocation_after_caching_is_refused_at_once(alg: str) -> None:
    issuer, _, revoked, verifier = setup(alg)
    token = issuer.sign(f"k-{alg}")
    verifier.verify(token)
    assert token in verifier._cache
    revoked.add("s-1")
    with pytest.raises(TokenRejected, match="session revoked"):
        verifier.verify(token)
    with pytest.raises(TokenRejected, match="session revoked"):
        asyncio.run(verifier.verify_async(token))


def test_revocation_is_asked_on_every_call_of_a_cached_token() -> None:
    issuer, clock, _, _ = setup()
    asked: list[str] = []

    def revoked(sid: str) -> bool:
        asked.append(sid)
        return False

    verifier = Verifier(
        ISSUER,
        AUDIENCE,
        clock=clock,
        revoked=revoked,
        http=httpx.Client(transport=issuer.transport()),
    )
    token = issuer.sign("k-ES256")
    for _ in range(3):
        verifier.verify(token)
    assert asked == ["s-1"] * 3


@pytest.mark.parametrize("alg", ALGS)
def test_expiry_after_caching_is_refused(alg: str) -> None:
    issuer, clock, _, verifier = setup(alg)
    token = issuer.sign(f"k-{alg}", exp=NOW + 60)
    verifier.verify(token)
    clock.now = NOW + 60 + LEEWAY - 0.5
    verifier.verify(token)
    assert token in verifier._cache
    clock.now = NOW + 60 + LEEWAY
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(token)
    # An expired entry is dropped: it can never be good again.
    assert token not in verifier._cache
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(token)


def test_not_before_and_issued_at_are_checked_on_every_call() -> None:
    issuer, clock, _, verifier = setup()
    token = issuer.sign("k-ES256", nbf=NOW + 10)
    clock.now = NOW + 10
    verifier.verify(token)
    # The clock stepped back: the cached token is not yet valid, exactly as when cold.
    clock.now = NOW + 10 - LEEWAY - 1
    with pytest.raises(TokenRejected, match="not yet valid"):
        verifier.verify(token)
    clock.now = NOW + 10
    assert verifier.verify(token).subject
    plain = issuer.sign("k-ES256", jti="j-2")
    verifier.verify(plain)
    clock.now = NOW - LEEWAY - 1
    with pytest.raises(TokenRejected, match="not yet valid"):
        verifier.verify(plain)


@pytest.mark.parametrize("alg", ALGS)
def test_a_token_whose_signature_fails_is_never_cached(alg: str) -> None:
    issuer, _, _, verifier = setup(alg)
    token = issuer.sign(f"k-{alg}")
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 1
    forged = f"{head}.{payload}." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for _ in range(3):
        with pytest.raises(TokenRejected, match="bad signature"):
            verifier.verify(forged)
    assert len(verifier._cache) == 0
    # The genuine token, afterwards, is accepted and the only entry.
    verifier.verify(token)
    assert len(verifier._cache) == 1


@pytest.mark.parametrize("alg", ALGS)
def test_every_one_character_variant_of_a_cached_token_is_verified_not_served(
    alg: str,
) -> None:
    issuer, _, _, verifier = setup(alg)
    token = issuer.sign(f"k-{alg}")
    verifier.verify(token)
    calls = count_signature_checks(verifier)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    refused = 0
    for i, char in enumerate(token):
        if char == ".":
            continue
        other = alphabet[(alphabet.index(char) + 1 + i % 63) % len(alphabet)]
        variant = token[:i] + other + token[i + 1 :]
        with pytest.raises(TokenRejected):
            verifier.verify(variant)
        refused += 1
    assert refused == len(token) - 2
    # Variants that reach the signature are checked by it: none was served from the
    # cache. (A change in the header may fail before the signature.)
    assert calls[0] > len(token.rsplit(".", 1)[1])
    assert list(verifier._cache._entries) == [token]


@pytest.mark.parametrize("suffix", ["=", "==", ".", " ", "\n", "A", "%3D"], ids=repr)
def test_a_second_spelling_of_a_cached_token_is_refused(suffix: str) -> None:
    issuer, _, _, verifier = setup()
    token = issuer.sign("k-ES256")
    verifier.verify(token)
    with pytest.raises(TokenRejected):
        verifier.verify(token + suffix)
    assert list(verifier._cache._entries) == [token]


def test_a_non_canonical_last_character_of_the_signature_is_refused() -> None:
    # 64 octets are 86 base64url characters: the last carries 4 bits beyond the data.
    issuer, _, _, verifier = setup()
    token = issuer.sign("k-ES256")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    assert last % 16 == 0
    for spare in range(1, 16):
        with pytest.raises(TokenRejected, match="bad signature or encoding"):
            verifier.verify(token[:-1] + alphabet[last + spare])
    assert len(verifier._cache) == 0


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(lambda p: p + "==", id="padding"),
        pytest.param(lambda p: p[:10] + " " + p[10:], id="a space"),
        pytest.param(lambda p: p[:10] + "!" + p[10:], id="outside the alphabet"),
        pytest.param(lambda p: p.replace("-", "+").replace("_", "/"), id="base64 not url"),
    ],
)
def test_a_payload_read_leniently_is_still_the_one_that_was_signed(
    respell: Callable[[str], str],
) -> None:
    # The payload is decoded after its signature, by a decoder that skips what is not
    # base64url: any other spelling is another signing input, and fails the signature,
    # so it never reaches the lenient decoder, and never makes a second cache entry.
    issuer, _, _, verifier = setup()
    # "~~~" and "???" are "fn5-" and "Pz8_" in base64url, at any alignment of a run.
    token = issuer.sign("k-ES256", note="~" * 9 + "?" * 9)
    head, payload, signature = token.split(".")
    verifier.verify(token)
    variant = f"{head}.{respell(payload)}.{signature}"
    assert variant != token
    with pytest.raises(TokenRejected, match="bad signature or encoding"):
        verifier.verify(variant)
    assert list(verifier._cache._entries) == [token]


def test_the_bound_holds_under_a_flood_of_distinct_valid_tokens() -> None:
    issuer, _, _, verifier = setup(cache_size=16)
    tokens = [issuer.sign("k-ES256", jti=f"j-{i}") for i in range(200)]
    for i, token in enumerate(tokens):
        assert verifier.verify(token).claims["jti"] == f"j-{i}"
    assert len(verifier._cache) == 16
    # The oldest left first; the newest are kept, and every token still verifies.
    assert list(verifier._cache._entries) == tokens[-16:]
    for token in tokens[:5]:
        verifier.verify(token)
    assert len(verifier._cache) == 16


def test_hostile_floods_neither_evict_nor_grow_the_cache() -> None:
    issuer, _, revoked, verifier = setup(cache_size=4, refetch_interval=3600)
    issuer.add_key("ES256", "k-other")
    kept = [issuer.sign("k-ES256", jti=f"kept-{i}") for i in range(4)]
    # The second key is not published: tokens under it are forgeries.
    issuer.published.pop()
    for token in kept:
        verifier.verify(token)
    entries = dict(verifier._cache._entries)
    revoked.add("s-revoked")
    good = kept[0]
    head, payload, signature = good.split(".")
    hostile: list[Any] = [
        "garbage",
        "",
        "a.b.c",
        "a..c",
        "é.é.é",
        None,
        12,
        "x" * 10_000,
        f"{head}.{payload}.{'A' * 86}",
        f"{head}.{payload}",
        issuer.sign("k-other"),
        issuer.sign("k-other", header={"kid": "k-ES256"}),
        issuer.sign("k-ES256", exp=NOW - LEEWAY - 1),
        issuer.sign("k-ES256", aud="https://elsewhere.test"),
        issuer.sign("k-ES256", iss="https://evil.test"),
        issuer.sign("k-ES256", sid="s-revoked"),
        issuer.sign("k-ES256", cnf={"jkt": "thumb"}),
        issuer.sign("k-ES256", header={"jku": "https://evil.test/jwks"}),
        issuer.sign("k-ES256", header={"typ": "JWT"}),
        issuer.sign("k-ES256", sub=None),
    ]
    hostile += [issuer.sign("k-other", jti=f"forged-{i}") for i in range(300)]
    hostile += [f"{head}.{payload}.{signature[:-2]}{i:02d}" for i in range(100)]
    for _ in range(3):
        for token in hostile:
            with pytest.raises(TokenRejected):
                verifier.verify(token)
    assert verifier._cache._entries == entries
    # Forged headers are not remembered either.
    assert len(verifier._prepared.headers) == 1
    calls = count_signature_checks(verifier)
    for token in kept:
        verifier.verify(token)
    assert calls == [0]


def test_a_cached_bound_token_is_still_refused_as_a_bearer_token_and_back() -> None:
    issuer, _, _, verifier = setup()
    bound = issuer.sign("k-ES256", cnf={"jkt": "thumb"})
    assert asyncio.run(verifier._verify_bound_async(bound)).jkt == "thumb"
    assert bound in verifier._cache
    with pytest.raises(TokenRejected, match="DPoP-bound token presented as a bearer"):
        verifier.verify(bound)
    bearer = issuer.sign("k-ES256", jti="j-2")
    verifier.verify(bearer)
    assert bearer in verifier._cache
    with pytest.raises(TokenRejected, match="bearer token presented with the DPoP"):
        asyncio.run(verifier._verify_bound_async(bearer))


def test_a_key_the_issuer_withdraws_takes_its_cached_tokens_with_it() -> None:
    issuer, _, _, verifier = setup(refetch_interval=0)
    old = issuer.sign("k-ES256")
    verifier.verify(old)
    assert old in verifier._cache
    issuer.published.clear()
    issuer.add_key("ES256", "k-new")
    # A token of the new key makes the kit fetch the set again.
    verifier.verify(issuer.sign("k-new"))
    assert old not in verifier._cache
    with pytest.raises(TokenRejected, match="unknown kid"):
        verifier.verify(old)


def test_a_refetch_of_the_same_keys_keeps_the_cache() -> None:
    issuer, _, _, verifier = setup(refetch_interval=0)
    token = issuer.sign("k-ES256")
    verifier.verify(token)
    fetches = issuer.fetches
    with pytest.raises(TokenRejected, match="unknown kid"):
        verifier.verify(_with_kid(token, "k-unknown"))
    assert issuer.fetches == fetches + 1
    assert token in verifier._cache


def test_an_entry_verified_under_keys_that_changed_meanwhile_is_not_kept() -> None:
    issuer, _, _, verifier = setup()
    token = issuer.sign("k-ES256")
    generation = verifier._cache.generation
    verifier._cache.clear()
    entry: Any = object()
    verifier._cache.put(token, entry, generation)
    assert token not in verifier._cache
    verifier._cache.put(token, entry, verifier._cache.generation)
    assert token in verifier._cache


def test_cache_size_zero_keeps_nothing_and_a_negative_size_is_refused() -> None:
    issuer, _, _, verifier = setup(cache_size=0)
    token = issuer.sign("k-ES256")
    verifier.verify(token)
    verifier.verify(token)
    assert len(verifier._cache) == 0
    with pytest.raises(ValueError, match="cache size"):
        setup(cache_size=-1)
    assert setup()[3]._cache.size == DEFAULT_SIZE


def test_async_verification_shares_the_cache() -> None:
    issuer, _, revoked, verifier = setup()
    token = issuer.sign("k-ES256")
    asyncio.run(verifier.verify_async(token))
    calls = count_signature_checks(verifier)
    assert verifier.verify(token).subject
    assert asyncio.run(verifier.verify_async(token)).subject
    assert calls == [0]
    revoked.add("s-1")
    with pytest.raises(TokenRejected, match="session revoked"):
        asyncio.run(verifier.verify_async(token))


def _with_kid(token: str, kid: str) -> str:
    head, rest = token.split(".", 1)
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["kid"] = kid
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{rest}"


def test_a_cached_token_is_the_access_token_the_constructor_makes() -> None:
    issuer, _, _, verifier = setup()
    token = issuer.sign("k-ES256", scope="read write", cnf=None)
    got = verifier.verify(token)
    assert got == AccessToken(
        subject="8b0d8a4e-4a53-4a8e-9d4b-0f6f1d0c2a11",
        client_id="app",
        scopes=frozenset({"read", "write"}),
        session_id="s-1",
        expires_at=datetime.fromtimestamp(NOW + 900, UTC),
        claims=got.claims,
        jkt=None,
    )
    assert got.claims["jti"] == "j-1"
    with pytest.raises(AttributeError):
        got.subject = "someone else"  # type: ignore[misc]


CLAIM_CASES: list[dict[str, Any]] = [
    {},
    {"iss": "https://evil.test"},
    {"aud": [AUDIENCE, "https://other.test"]},
    {"aud": ["https://other.test"]},
    {"aud": []},
    {"aud": ""},
    {"aud": 5},
    {"aud": [5, AUDIENCE]},
    {"aud": {"x": AUDIENCE}},
    *({name: None} for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")),
    {"sub": 7},
    {"jti": ["j"]},
    {"client_id": {"id": "app"}},
    {"scope": 5},
    {"scope": "read write"},
    {"exp": "1800000900"},
    {"exp": True},
    {"exp": NOW + 900.5},
    {"exp": 2**53},
    {"exp": -1},
    {"exp": float("inf")},
    {"exp": float("nan")},
    {"exp": NOW - LEEWAY},
    {"exp": NOW - LEEWAY + 2},
    {"iat": NOW + LEEWAY + 2},
    {"iat": NOW + LEEWAY + 1},
    {"iat": False},
    {"nbf": NOW + LEEWAY + 2},
    {"nbf": NOW + LEEWAY + 1},
    {"nbf": "soon"},
    {"nbf": 1e300},
    {"cnf": {"jkt": "thumb"}},
]


@pytest.mark.parametrize("claims", CLAIM_CASES, ids=repr)
def test_the_kit_and_the_issuers_check_agree_on_every_claim_rule(claims: dict[str, Any]) -> None:
    from keyturn.crypto.access_tokens import InvalidAccessToken
    from keyturn.crypto.access_tokens import verify as issuer_verify
    from keyturn.verify.keyset import KeySet

    issuer, clock, _, verifier = setup()
    token = _signed_with_nulls(issuer, claims)
    keys = KeySet.from_jwks({"keys": issuer.published}).keys
    try:
        issuer_verify(
            token,
            keys,
            issuer=ISSUER,
            audience=AUDIENCE,
            now=datetime.fromtimestamp(clock.now, UTC),
            leeway=LEEWAY,
        )
        issuer_accepts = True
    except InvalidAccessToken:
        issuer_accepts = False
    try:
        asyncio.run(verifier._verify_async(token, bound="cnf" in claims))
        kit_accepts = True
    except TokenRejected:
        kit_accepts = False
    assert kit_accepts == issuer_accepts


def _signed_with_nulls(issuer: Issuer, claims: dict[str, Any]) -> str:
    """`issuer.sign`, where a claim given as None is sent as JSON null, not dropped."""
    alg, key = issuer.private["k-ES256"]
    body = {**CLAIMS, **claims}
    header = {"typ": "at+jwt", "alg": alg, "kid": "k-ES256"}
    return jwt.encode(header, body, key, algorithms=[alg])


def test_the_bound_holds_with_threads_adding_at_once() -> None:
    import threading

    issuer, _, _, verifier = setup(cache_size=8)
    tokens = [issuer.sign("k-ES256", jti=f"j-{i}") for i in range(120)]
    refused: list[BaseException] = []

    def work(share: list[str]) -> None:
        try:
            for token in share:
                verifier.verify(token)
        except BaseException as error:  # reported by the assertion below
            refused.append(error)

    threads = [threading.Thread(target=work, args=(tokens[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refused == []
    # At most one entry over per thread adding at the same moment, and back within the
    # bound at the next addition.
    assert len(verifier._cache) <= 8 + 3
    verifier.verify(tokens[0])
    assert len(verifier._cache) <= 8
