"""The DPoP errors as HTTP (RFC 9449): 400 at the token endpoint, 401 with a `DPoP`
challenge at an endpoint that takes a bound access token, the nonce in `DPoP-Nonce`."""

from __future__ import annotations

import json

from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.web.errors import ResourceNonceRequired, ResourceProofRefused, to_response


def test_a_bad_proof_at_the_token_endpoint_is_400_invalid_dpop_proof() -> None:
    answer = to_response(InvalidDpopProof(detail="jti already used"))
    assert answer.status == 400
    assert json.loads(answer.body)["error"] == "invalid_dpop_proof"
    assert "jti" not in answer.body.decode()  # the detail goes to the log only
    assert "WWW-Authenticate" not in answer.headers
    assert answer.headers["Cache-Control"] == "no-store"


def test_a_nonce_challenge_at_the_token_endpoint_is_400_with_the_nonce() -> None:
    answer = to_response(UseDpopNonce("n-123"))
    assert answer.status == 400
    assert json.loads(answer.body)["error"] == "use_dpop_nonce"
    assert answer.headers["DPoP-Nonce"] == "n-123"


def test_at_a_protected_endpoint_both_are_401_with_a_dpop_challenge() -> None:
    refused = to_response(ResourceProofRefused())
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == 'DPoP realm="keyturn", error="invalid_dpop_proof"'
    nonce = to_response(ResourceNonceRequired("n-9"))
    assert nonce.status == 401
    assert nonce.headers["WWW-Authenticate"] == 'DPoP realm="keyturn", error="use_dpop_nonce"'
    assert nonce.headers["DPoP-Nonce"] == "n-9"
