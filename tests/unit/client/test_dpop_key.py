"""The client kit's DPoP key and proofs, checked by PyJWT and keyturn's own RFC 7638
arithmetic in `support.dpop_proofs` (not by the kit), and where the key is kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jwt
import pytest
from jwt.algorithms import ECAlgorithm

from keyturn.client import CallbackStore, DpopKey, FileStore, MemoryStore, RefreshingAuth
from keyturn.client.dpop import Nonces, access_token_hash
from support.dpop_proofs import ath, thumbprint

TOKEN_URL = "https://auth.example.com/oauth/token"


def test_a_proof_verifies_with_its_public_jwk_and_names_the_request() -> None:
    key = DpopKey.generate()
    proof = key.proof(
        "post", TOKEN_URL + "?x=1#f", nonce="n-1", access_token="at", now=1_800_000_000
    )
    header = jwt.get_unverified_header(proof)
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk}
    public = ECAlgorithm.from_jwk(header["jwk"])
    claims = jwt.decode(proof, public, algorithms=["ES256"], options={"verify_iat": False})
    assert claims["htm"] == "POST"
    assert claims["htu"] == TOKEN_URL
    assert (claims["iat"], claims["nonce"]) == (1_800_000_000, "n-1")
    assert claims["ath"] == ath("at") == access_token_hash("at")
    assert len(claims["jti"]) >= 16
    assert key.proof("GET", TOKEN_URL).count(".") == 2
    assert "nonce" not in jwt.decode(
        key.proof("GET", TOKEN_URL), options={"verify_signature": False}
    )


def test_the_thumbprint_is_rfc_7638s_and_survives_a_pem_round_trip() -> None:
    key = DpopKey.generate()
    assert key.thumbprint == thumbprint(dict(key.jwk))
    again = DpopKey.from_pem(key.to_pem())
    assert again.thumbprint == key.thumbprint
    assert key.to_pem().decode() not in repr(key)


def test_proofs_never_repeat_a_jti() -> None:
    key = DpopKey.generate()
    jtis = {
        jwt.decode(key.proof("POST", TOKEN_URL), options={"verify_signature": False})["jti"]
        for _ in range(200)
    }
    assert len(jtis) == 200


def test_the_file_store_keeps_one_key_in_a_0600_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "rt")
    assert store.load_key() is None
    first = DpopKey.generate().to_pem()
    assert store.add_key(first) == first
    assert stat.S_IMODE(os.stat(tmp_path / "rt.dpop-key").st_mode) == 0o600
    # A second process that generated one at the same time gets the first one's.
    assert store.add_key(DpopKey.generate().to_pem()) == first
    store.save("token")
    store.save(None)  # forgetting the token keeps the key
    assert store.load_key() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.dpop-key"]


def test_the_kit_generates_its_key_once_and_keeps_it_in_the_store() -> None:
    store = MemoryStore()
    auth = RefreshingAuth(TOKEN_URL, "cli", store=store, dpop=True)
    key = auth.dpop_key
    assert key is not None
    assert auth.dpop_key is key
    restarted = RefreshingAuth(TOKEN_URL, "cli", store=store, dpop=True)
    assert restarted.dpop_key is not None
    assert restarted.dpop_key.thumbprint == key.thumbprint


def test_dpop_is_opt_in_and_needs_a_place_for_the_key() -> None:
    assert RefreshingAuth(TOKEN_URL, "cli").dpop_key is None
    store = CallbackStore(lambda: None, lambda _: None)
    with pytest.raises(ValueError, match="dpop_key"):
        RefreshingAuth(TOKEN_URL, "cli", store=store, dpop=True)
    given = DpopKey.generate()
    assert RefreshingAuth(TOKEN_URL, "cli", store=store, dpop_key=given).dpop_key is given


def test_nonces_are_kept_per_origin() -> None:
    nonces = Nonces()
    assert nonces.learn("https://auth.example.com/oauth/token", "a")
    assert not nonces.learn("https://AUTH.example.com/auth/refresh", "a")
    assert not nonces.learn("https://auth.example.com/x", None)
    assert nonces.get("https://auth.example.com/anything?q") == "a"
    assert nonces.get("https://api.example.com/notes") is None
