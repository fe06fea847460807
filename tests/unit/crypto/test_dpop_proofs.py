"""DPoP proofs (RFC 9449 §4.3): `keyturn.crypto.dpop.DpopVerifier` and the pure claim
checks of `keyturn.core.dpop`, against proofs PyJWT signs. Hostile proofs first; each
names the check that must refuse it (the error's `detail`), so a test fails if another
check, or none, does."""

from __future__ import annotations

import hmac
import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from keyturn.core.dpop import (
    ProofClaims,
    check_claims,
    normalise_htu,
    replay_expiry,
    replay_key,
    single_proof,
)
from keyturn.core.dpop_errors import DPOP_ERRORS, InvalidDpopProof, UseDpopNonce
from keyturn.core.errors import KeyturnError
from keyturn.crypto.dpop import DpopVerifier
from support.dpop_proofs import NOW, URI, Client, ath, b64, b64json, new_key, public_jwk

NONCE_KEY = b"n" * 32
TOKEN = "an.access.token"


class RecordingCache:
    """A replay cache that remembers what it was asked: refusals must ask nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, datetime]] = []

    async def first_use(self, jti_key: str, expires_at: datetime) -> bool:
        seen = any(key == jti_key for key, _ in self.calls)
        self.calls.append((jti_key, expires_at))
        return not seen


@pytest.fixture
def cache() -> RecordingCache:
    return RecordingCache()


@pytest.fixture
def verifier(cache: RecordingCache) -> DpopVerifier:
    return DpopVerifier(cache)


@pytest.fixture
def client() -> Client:
    return Client()


async def verify(
    verifier: DpopVerifier,
    proof: str,
    *,
    method: str = "POST",
    uri: str = URI,
    now: datetime = NOW,
    access_token: str | None = None,
    jkt: str | None = None,
) -> str:
    verified = await verifier.verify(
        proof, method=method, uri=uri, now=now, access_token=access_token, jkt=jkt
    )
    return verified.jkt


async def refused(verifier: DpopVerifier, proof: str, detail: str, **request: Any) -> None:
    with pytest.raises(InvalidDpopProof) as raised:
        await verify(verifier, proof, **request)
    assert raised.value.code == "invalid_dpop_proof"
    assert detail in raised.value.detail
    # The public message never says which check failed.
    assert raised.value.public == "The DPoP proof is invalid."


# Hostile proofs: the header and the key


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "DPOP+JWT", "application/dpop+jwt", 1])
async def test_a_proof_without_typ_dpop_jwt_exactly_is_refused(
    verifier: DpopVerifier, client: Client, cache: RecordingCache, typ: object
) -> None:
    await refused(verifier, client.proof({"typ": typ}), "typ is not dpop+jwt")
    assert cache.calls == []


async def test_alg_none_is_refused_signed_or_not(verifier: DpopVerifier, client: Client) -> None:
    payload = b64json(client.claims())
    for alg in ("none", "None", "NONE"):
        header = b64json({"typ": "dpop+jwt", "alg": alg, "jwk": client.jwk})
        await refused(verifier, f"{header}.{payload}.", "not a compact JWS")
        await refused(verifier, f"{header}.{payload}.AAAA", "alg not allowed")
    # PyJWT's own unsigned JWT, too.
    unsigned = jwt.encode(
        client.claims(), None, algorithm="none", headers={"typ": "dpop+jwt", "jwk": client.jwk}
    )
    await refused(verifier, unsigned, "not a compact JWS")


async def test_hs256_keyed_with_the_jwk_itself_is_refused(
    verifier: DpopVerifier, client: Client
) -> None:
    # The classic confusion: an HMAC whose secret is the public key everyone can read.
    # (PyJWT itself refuses to make it, so it is made by hand.)
    payload = b64json(client.claims())
    for jwk, secret in (
        (client.jwk, json.dumps(client.jwk).encode()),
        ({"kty": "oct", "k": b64(b"s" * 32)}, b"s" * 32),
    ):
        head = b64json({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk})
        mac = hmac.digest(secret, f"{head}.{payload}".encode(), "sha256")
        await refused(verifier, f"{head}.{payload}.{b64(mac)}", "alg not allowed")


async def test_an_asymmetric_alg_outside_the_allow_list_is_refused(cache: RecordingCache) -> None:
    es384 = Client("ES384")
    await refused(DpopVerifier(cache), es384.proof(), "alg not allowed")
    assert await verify(DpopVerifier(cache, algorithms=["ES384"]), es384.proof()) == es384.jkt
    await refused(DpopVerifier(cache, algorithms=["EdDSA"]), Client().proof(), "alg not allowed")


@pytest.mark.parametrize("algorithms", [["none"], ["HS256"], ["ES256", "HS512"], [], ["es256"]])
def test_the_allow_list_holds_asymmetric_algorithms_only(
    cache: RecordingCache, algorithms: list[str]
) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        DpopVerifier(cache, algorithms=algorithms)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_a_private_key_in_the_jwk_is_refused(
    verifier: DpopVerifier, cache: RecordingCache, alg: str
) -> None:
    client = Client(alg)
    private = public_jwk(client.key, private=True)
    assert "d" in private
    await refused(verifier, client.proof({"jwk": private}), "private key material")
    for member in ("d", "p", "q", "dp", "dq", "qi", "oth", "k"):
        await refused(verifier, client.proof({"jwk": {**client.jwk, member: "AQAB"}}), "private")
    assert cache.calls == []


@pytest.mark.parametrize("jwk", [None, "a key", ["kty"], 7])
async def test_a_proof_without_a_jwk_object_is_refused(
    verifier: DpopVerifier, client: Client, jwk: object
) -> None:
    await refused(verifier, client.proof({"jwk": jwk}), "jwk missing")


async def test_a_jwk_of_another_type_or_curve_than_alg_is_refused(
    verifier: DpopVerifier, client: Client
) -> None:
    okp = public_jwk(new_key("EdDSA"))
    await refused(verifier, client.proof({"jwk": okp}), "jwk type does not fit alg")
    p384 = public_jwk(new_key("ES384"))
    await refused(verifier, client.proof({"jwk": p384}), "jwk type does not fit alg")
    no_crv = {k: v for k, v in client.jwk.items() if k != "crv"}
    await refused(verifier, client.proof({"jwk": no_crv}), "jwk type does not fit alg")


async def test_a_jwk_that_is_not_a_key_is_refused(verifier: DpopVerifier, client: Client) -> None:
    off_curve = {**client.jwk, "y": b64(b"\x01" * 32)}
    await refused(verifier, client.proof({"jwk": off_curve}), "not a valid public key")
    no_x = {k: v for k, v in client.jwk.items() if k != "x"}
    await refused(verifier, client.proof({"jwk": no_x}), "not a valid public key")


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits", "ignore:Key size should be")
async def test_an_rsa_key_too_small_or_too_large_is_refused(verifier: DpopVerifier) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    client = Client("RS256")
    for bits in (1024, 4096 + 64):
        client.key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        await refused(verifier, client.proof(), "RSA key size out of range")
    client.key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    assert await verify(verifier, client.proof()) == client.jkt


async def test_a_jwk_padded_past_its_limit_is_refused(
    verifier: DpopVerifier, client: Client
) -> None:
    padded = {**client.jwk, "x-padding": "a" * 1500}
    await refused(verifier, client.proof({"jwk": padded}), "jwk too large")


@pytest.mark.parametrize(
    "header",
    [{"jku": "https://evil.example/jwks"}, {"x5u": "https://evil.example/x"}, {"x5c": ["MII"]}],
)
async def test_a_header_pointing_at_another_key_is_refused(
    verifier: DpopVerifier, client: Client, header: dict[str, Any]
) -> None:
    await refused(verifier, client.proof(header), "forbidden header parameter")


async def test_crit_and_b64_headers_are_refused(verifier: DpopVerifier, client: Client) -> None:
    await refused(verifier, client.proof({"crit": ["exp"], "exp": 1}), "forbidden header")
    await refused(
        verifier, client.raw(client.header_bytes(b64=True), b"{}"), "forbidden header parameter"
    )


async def test_a_proof_signed_by_another_key_than_its_jwk_is_refused(
    verifier: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    await refused(verifier, client.proof(signer=new_key("ES256")), "signature does not verify")
    rsa_client = Client("RS256")
    await refused(verifier, rsa_client.proof(signer=new_key("RS256")), "signature does not verify")
    assert cache.calls == []


async def test_a_proof_with_its_claims_changed_after_signing_is_refused(
    verifier: DpopVerifier, client: Client
) -> None:
    head, _, signature = client.proof().split(".")
    changed = b64json(client.claims(htu="https://api.example.com/admin"))
    await refused(verifier, f"{head}.{changed}.{signature}", "signature does not verify")
    await refused(verifier, f"{head}.{changed}.{'A' * 86}", "signature does not verify")


# Hostile proofs: size and shape


async def test_an_oversized_proof_is_refused_before_anything_else(
    verifier: DpopVerifier, client: Client
) -> None:
    await refused(verifier, client.proof(padding="a" * 9000), "too large")
    await refused(verifier, "a" * 100_000, "too large")


async def test_an_oversized_header_is_refused(verifier: DpopVerifier, client: Client) -> None:
    await refused(verifier, client.proof({"x-padding": "a" * 3200}), "header too large")


@pytest.mark.parametrize("joiner", [",", ", "])
async def test_two_proofs_in_one_header_are_refused(
    verifier: DpopVerifier, client: Client, joiner: str
) -> None:
    both = client.proof() + joiner + client.proof()
    await refused(verifier, both, "more than one proof")
    with pytest.raises(InvalidDpopProof, match="not exactly one proof"):
        single_proof([both])


def test_a_request_must_carry_exactly_one_dpop_header() -> None:
    with pytest.raises(InvalidDpopProof, match="0 DPoP header fields"):
        single_proof([])
    with pytest.raises(InvalidDpopProof, match="2 DPoP header fields"):
        single_proof(["a.b.c", "d.e.f"])
    with pytest.raises(InvalidDpopProof, match="not exactly one proof"):
        single_proof(["  "])
    assert single_proof([" a.b.c "]) == "a.b.c"


@pytest.mark.parametrize(
    "proof", ["", "abc", "a.b", "a.b.c.d", "a..c", "a.b.c d", "a.b.c\n", "a=.b.c", "a.b.+/"]
)
async def test_what_is_not_a_compact_jws_is_refused(verifier: DpopVerifier, proof: str) -> None:
    await refused(verifier, proof, "not a compact JWS")


async def test_a_header_that_is_not_a_base64url_json_object_is_refused(
    verifier: DpopVerifier, client: Client
) -> None:
    rest = client.proof().split(".", 1)[1]
    await refused(verifier, f"abcde.{rest}", "header is not base64url")
    await refused(verifier, f"{b64(b'not json')}.{rest}", "header is not JSON")
    await refused(verifier, f"{b64json(['typ'])}.{rest}", "header is not a JSON object")
    await refused(verifier, f"{b64(b'[' * 3000)}.{rest}", "header")


async def test_duplicate_member_names_are_refused(verifier: DpopVerifier, client: Client) -> None:
    # Two parsers could read two different algorithms or claims (RFC 7515 §5.2).
    jwk = json.dumps(client.jwk)
    header = f'{{"typ":"dpop+jwt","alg":"ES256","alg":"ES256","jwk":{jwk}}}'.encode()
    await refused(verifier, client.raw(header, json.dumps(client.claims()).encode()), "header")
    claims = json.dumps(client.claims())[:-1] + ', "htu": "https://evil.example/"}'
    await refused(verifier, client.raw(client.header_bytes(), claims.encode()), "payload is not")


async def test_a_payload_that_is_not_a_json_object_is_refused(
    verifier: DpopVerifier, client: Client
) -> None:
    await refused(verifier, client.raw(client.header_bytes(), b"[1, 2]"), "payload is not a JSON")
    await refused(verifier, client.raw(client.header_bytes(), b"\xff{"), "payload is not JSON")


# Hostile proofs: the claims


@pytest.mark.parametrize("htm", ["GET", "post", "POST ", None, 1])
async def test_a_proof_for_another_method_is_refused(
    verifier: DpopVerifier, client: Client, htm: object
) -> None:
    await refused(verifier, client.proof(htm=htm), "htm")


@pytest.mark.parametrize(
    ("htu", "detail"),
    [
        ("https://api.example.com/admin", "does not match"),
        ("https://api.example.com/notes/", "does not match"),
        ("https://evil.example.com/notes", "does not match"),
        ("http://api.example.com/notes", "does not match"),
        ("https://api.example.com:8443/notes", "does not match"),
        ("https://api.example.com:80/notes", "does not match"),
        ("ftp://api.example.com/notes", "not an http or https URI"),
        ("/notes", "not an http or https URI"),
        ("https://user@api.example.com/notes", "user information"),
        ("https:///notes", "no host"),
        ("https://api.example.com:99999/notes", "invalid port"),
        ("https://api.example.com/no\tes", "not a URI"),
        ("https://api.example.com/no\nes", "not a URI"),
        ("https://api.example.com/nötes", "not a URI"),
        ("", "not a URI"),
        (None, "htu missing"),
        (42, "htu missing"),
    ],
)
async def test_a_proof_for_another_uri_is_refused(
    verifier: DpopVerifier, client: Client, htu: object, detail: str
) -> None:
    await refused(verifier, client.proof(htu=htu), detail)


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/notes?page=2",  # RFC 9449 §4.2: no query compared
        "https://api.example.com/notes#top",  # nor fragment
        "https://API.Example.COM/notes",  # RFC 3986 §6.2.2.1: host is case-insensitive
        "HTTPS://api.example.com/notes",  # and so is the scheme
        "https://api.example.com:443/notes",  # RFC 3986 §6.2.3: the default port
        "https://api.example.com/./x/../notes",  # RFC 3986 §6.2.2.3: dot segments
        "https://api.example.com/%6eotes",  # RFC 3986 §6.2.2.2: unreserved, decoded
    ],
)
async def test_an_htu_equal_after_normalisation_is_accepted(
    verifier: DpopVerifier, client: Client, htu: str
) -> None:
    assert await verify(verifier, client.proof(htu=htu)) == client.jkt


async def test_the_request_uri_is_normalised_too(verifier: DpopVerifier, client: Client) -> None:
    request = "https://API.example.com:443/notes?page=3"
    assert await verify(verifier, client.proof(), uri=request) == client.jkt


@pytest.mark.parametrize(
    ("uri", "normal"),
    [
        ("https://a.example", "https://a.example/"),
        ("http://a.example:80/x", "http://a.example/x"),
        ("http://a.example:443/x", "http://a.example:443/x"),
        ("https://[::1]:443/x", "https://[::1]/x"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("https://a.example/a%2fb%7e", "https://a.example/a%2Fb~"),
        ("https://a.example/a/b/..", "https://a.example/a/"),
        ("https://a.example/a/.", "https://a.example/a/"),
        ("https://a.example/..", "https://a.example/"),
        ("https://a.example/v1.2/x", "https://a.example/v1.2/x"),
        ("https://a.example/x?q=1#f", "https://a.example/x"),
    ],
)
def test_normalise_htu(uri: str, normal: str) -> None:
    assert normalise_htu(uri) == normal


@pytest.mark.parametrize(
    ("iat", "detail"),
    [
        (NOW.timestamp() + 61, "iat in the future"),
        (NOW.timestamp() - 61, "iat too old"),
        (NOW.timestamp() - 3600, "iat too old"),
        (-1, "iat out of range"),
        (2**53, "iat out of range"),
        (float("nan"), "iat out of range"),
        (float("inf"), "iat out of range"),
        ("1796644800", "not a NumericDate"),
        (True, "not a NumericDate"),
        (None, "iat missing"),
    ],
)
async def test_a_proof_made_too_far_from_now_is_refused(
    verifier: DpopVerifier, client: Client, iat: object, detail: str
) -> None:
    await refused(verifier, client.proof(iat=iat), detail)


@pytest.mark.parametrize("offset", [-60, -59.5, 0, 60])
async def test_a_proof_within_the_leeway_either_way_is_accepted(
    verifier: DpopVerifier, client: Client, offset: float
) -> None:
    assert await verify(verifier, client.proof(iat=NOW.timestamp() + offset)) == client.jkt


async def test_the_leeway_is_configurable(cache: RecordingCache, client: Client) -> None:
    strict = DpopVerifier(cache, leeway=5)
    await refused(strict, client.proof(iat=NOW.timestamp() + 6), "iat in the future")
    await refused(strict, client.proof(iat=NOW.timestamp() - 6), "iat too old")
    assert await verify(strict, client.proof(iat=NOW.timestamp() - 5)) == client.jkt
    with pytest.raises(ValueError, match="leeway"):
        DpopVerifier(cache, leeway=0)


@pytest.mark.parametrize(
    ("jti", "detail"),
    [(None, "jti missing"), ("", "jti missing"), (7, "jti missing"), ("j" * 257, "too long")],
)
async def test_a_proof_without_a_usable_jti_is_refused(
    verifier: DpopVerifier, client: Client, jti: object, detail: str
) -> None:
    await refused(verifier, client.proof(jti=jti), detail)


async def test_a_jti_of_the_longest_length_is_accepted(
    verifier: DpopVerifier, client: Client
) -> None:
    assert await verify(verifier, client.proof(jti="j" * 256)) == client.jkt


async def test_a_replayed_proof_is_refused(
    verifier: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    proof = client.proof()
    assert await verify(verifier, proof) == client.jkt
    await refused(verifier, proof, "jti already used")
    # A new proof reusing the jti is a replay too: the key and jti are what is remembered.
    jti = json.loads(jwt.utils.base64url_decode(proof.split(".")[1]))["jti"]
    await refused(verifier, client.proof(jti=jti, iat=NOW.timestamp() + 1), "jti already used")


async def test_one_jti_under_two_keys_is_two_proofs(verifier: DpopVerifier) -> None:
    # Scoped by key: a client cannot block another's proofs by guessing their jti.
    first, second = Client(), Client()
    assert await verify(verifier, first.proof(jti="same")) == first.jkt
    assert await verify(verifier, second.proof(jti="same")) == second.jkt


async def test_the_jti_is_remembered_until_its_iat_window_closes(
    verifier: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    iat = NOW.timestamp() - 10
    await verify(verifier, client.proof(jti="once", iat=iat))
    [(key, expires_at)] = cache.calls
    assert key == replay_key(client.jkt, "once")
    assert key.startswith(client.jkt + ".")
    assert expires_at == NOW - timedelta(seconds=10) + timedelta(seconds=61)
    assert expires_at == replay_expiry(NOW - timedelta(seconds=10), 60)


# The access token and the key it is bound to (RFC 9449 §4.3 point 12)


async def test_a_proof_with_an_access_token_must_carry_its_hash(
    verifier: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    await refused(verifier, client.proof(), "ath missing", access_token=TOKEN)
    await refused(verifier, client.proof(ath=5), "ath missing", access_token=TOKEN)
    await refused(verifier, client.proof(ath=ath("another")), "ath does not", access_token=TOKEN)
    await refused(verifier, client.proof(ath=ath(TOKEN) + "A"), "ath does not", access_token=TOKEN)
    assert cache.calls == []
    assert await verify(verifier, client.proof(ath=ath(TOKEN)), access_token=TOKEN) == client.jkt


async def test_a_proof_by_another_key_than_the_tokens_is_refused(
    verifier: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    other = Client()
    await refused(verifier, client.proof(), "not the key the token is bound to", jkt=other.jkt)
    # Compared as octets: a token naming a non-ASCII jkt is refused, not an error.
    await refused(verifier, client.proof(), "not the key the token is bound to", jkt="jkté")
    assert cache.calls == []
    assert await verify(verifier, client.proof(), jkt=client.jkt) == client.jkt


# Server nonces (RFC 9449 §8)


@pytest.fixture
def nonced(cache: RecordingCache) -> DpopVerifier:
    return DpopVerifier(cache, nonce_key=NONCE_KEY)


async def nonce_refused(verifier: DpopVerifier, proof: str, detail: str) -> UseDpopNonce:
    with pytest.raises(UseDpopNonce) as raised:
        await verify(verifier, proof)
    assert raised.value.code == "use_dpop_nonce"
    assert detail in raised.value.detail
    assert raised.value.nonce == verifier.nonce(NOW)
    return raised.value


async def test_a_proof_without_the_required_nonce_is_answered_with_one(
    nonced: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    await nonce_refused(nonced, client.proof(), "nonce missing")
    assert cache.calls == []


async def test_a_stale_or_forged_nonce_is_answered_with_a_fresh_one(
    nonced: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    stale = nonced.nonce(NOW - timedelta(minutes=10))
    assert stale is not None
    await nonce_refused(nonced, client.proof(nonce=stale), "nonce stale")
    other_server = DpopVerifier(cache, nonce_key=b"o" * 32).nonce(NOW)
    await nonce_refused(nonced, client.proof(nonce=other_server), "not issued here")
    await nonce_refused(nonced, client.proof(nonce="forged"), "not issued here")
    await nonce_refused(nonced, client.proof(nonce=""), "not issued here")
    assert cache.calls == []
    await refused(nonced, client.proof(nonce=["x"]), "nonce is not a string")


async def test_a_nonce_of_this_bucket_or_the_last_is_accepted(
    nonced: DpopVerifier, client: Client
) -> None:
    for issued in (NOW, NOW - timedelta(minutes=5)):
        nonce = nonced.nonce(issued)
        assert await verify(nonced, client.proof(nonce=nonce)) == client.jkt
    assert nonced.nonce(NOW) != nonced.nonce(NOW - timedelta(minutes=5))


async def test_a_proof_refused_for_its_nonce_is_not_remembered_so_its_retry_passes(
    nonced: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    # The client retries with the nonce; even a retry reusing the jti must not be taken
    # for a replay, since the first proof was never accepted (RFC 9449 §8).
    refusal = await nonce_refused(nonced, client.proof(jti="retry"), "nonce missing")
    assert cache.calls == []
    proof = client.proof(jti="retry", nonce=refusal.nonce)
    assert await verify(nonced, proof) == client.jkt
    assert [key for key, _ in cache.calls] == [replay_key(client.jkt, "retry")]
    await refused(nonced, proof, "jti already used")


async def test_every_refusal_leaves_the_replay_cache_untouched(
    nonced: DpopVerifier, client: Client, cache: RecordingCache
) -> None:
    nonce = nonced.nonce(NOW)
    hostile = [
        client.proof({"typ": "JWT"}, nonce=nonce),
        client.proof(signer=new_key("ES256"), nonce=nonce),
        client.proof(htm="GET", nonce=nonce),
        client.proof(htu="https://evil.example/", nonce=nonce),
        client.proof(iat=0, nonce=nonce),
        client.proof(jti=None, nonce=nonce),
        client.proof(nonce="stale"),
    ]
    for proof in hostile:
        with pytest.raises((InvalidDpopProof, UseDpopNonce)):
            await verify(nonced, proof)
    assert cache.calls == []


def test_nonces_are_keyed_and_bucketed(cache: RecordingCache) -> None:
    assert DpopVerifier(cache).nonce(NOW) is None
    assert not DpopVerifier(cache).requires_nonce
    one = DpopVerifier(cache, nonce_key=NONCE_KEY, nonce_bucket_seconds=60)
    assert one.requires_nonce
    # Stateless: another process with the key issues the same nonce.
    assert one.nonce(NOW) == DpopVerifier(
        cache, nonce_key=NONCE_KEY, nonce_bucket_seconds=60
    ).nonce(NOW + timedelta(seconds=59))
    assert one.nonce(NOW) != one.nonce(NOW + timedelta(seconds=60))
    with pytest.raises(ValueError, match="32 bytes"):
        DpopVerifier(cache, nonce_key=b"short")
    with pytest.raises(ValueError, match="nonce_bucket_seconds"):
        DpopVerifier(cache, nonce_key=NONCE_KEY, nonce_bucket_seconds=0)


# Good proofs


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256", "PS256"])
async def test_a_proof_pyjwt_signs_is_accepted_with_its_rfc7638_thumbprint(
    verifier: DpopVerifier, alg: str
) -> None:
    client = Client(alg)
    verified = await verifier.verify(
        client.proof(ath=ath(TOKEN)), method="POST", uri=URI, now=NOW, access_token=TOKEN
    )
    assert verified.jkt == client.jkt
    assert verified.htm == "POST"
    assert verified.htu == URI
    assert verified.issued_at == NOW


RFC_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0"
    "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10"
    "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoi"
    "UE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-G"
    "xA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
"""RFC 9449 §4.1, figure 3; its key's thumbprint is the `jkt` of §6.1's example token."""
RFC_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


async def test_the_rfc_9449_example_proof_is_accepted_with_the_rfc_thumbprint(
    verifier: DpopVerifier,
) -> None:
    made = datetime.fromtimestamp(1562262616, UTC)
    verified = await verifier.verify(
        RFC_PROOF, method="POST", uri="https://server.example.com/token", now=made
    )
    assert (verified.jkt, verified.jti) == (RFC_JKT, "-BwC3ESc6acc2lTc")
    await refused(
        verifier, RFC_PROOF, "jti already used", uri="https://server.example.com/token", now=made
    )
    await refused(verifier, RFC_PROOF, "iat too old", uri="https://server.example.com/token")


def test_check_claims_returns_what_it_checked(client: Client) -> None:
    claims = client.claims(jti="j", nonce="n")
    assert check_claims(claims, method="POST", uri=URI, now=NOW, leeway=60) == ProofClaims(
        htm="POST", htu=URI, issued_at=NOW, jti="j", nonce="n"
    )


def test_the_dpop_errors_are_domain_errors_with_stable_codes() -> None:
    assert {e.code for e in DPOP_ERRORS} == {"invalid_dpop_proof", "use_dpop_nonce"}
    assert all(issubclass(e, KeyturnError) for e in DPOP_ERRORS)
    again = pickle.loads(pickle.dumps(UseDpopNonce("n1", detail="why")))  # noqa: S301
    assert (again.nonce, again.detail, again.code) == ("n1", "why", "use_dpop_nonce")
    proof = pickle.loads(pickle.dumps(InvalidDpopProof(detail="why")))  # noqa: S301
    assert (type(proof), proof.detail) == (InvalidDpopProof, "why")
