"""How much `keyturn.verify` costs over the bare signature check.

For ES256, EdDSA and RS256: access tokens verified per second on one core by
`Verifier.verify` (header checks, key lookup, signature, every RFC 9068 claim check,
the revocation lookup) against `cryptography` verifying the same token's signature
and nothing else. The key set is fetched once, before timing, through an in-process
transport: the request path never touches the network, which is the point.

    .venv/bin/python -m bench.verify [--seconds 3]

Prints the table and writes it to docs/benchmarks.md (section `verify`) and
bench/results/verify-DATE.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from bench.engine.report import machine, machine_line, replace_section, table, write_json
from keyturn.verify import Verifier

ISSUER = "https://auth.bench.test"
AUDIENCE = "https://api.bench.test"
REVOKED: set[str] = {"a-revoked-session"}


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def setup(alg: str) -> tuple[str, dict[str, Any], Callable[[str], None]]:
    """A token, its public JWK, and the bare signature check for it."""
    if alg == "ES256":
        private: Any = ec.generate_private_key(ec.SECP256R1())
        jose_key: Any = ECKey.import_key(private)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jose_key = OKPKey.import_key(private)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        jose_key = RSAKey.import_key(private)
    public = private.public_key()
    jwk = {**jose_key.as_dict(private=False), "kid": f"k-{alg}", "alg": alg, "use": "sig"}
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": now + 3600,
        "iat": now,
        "jti": "j-1",
        "client_id": "app",
        "scope": "read write",
        "sid": "a-live-session",
    }
    header = {"typ": "at+jwt", "alg": alg, "kid": jwk["kid"]}
    token = jwt.encode(header, claims, jose_key, algorithms=[alg])

    def raw(text: str) -> None:
        head, payload, signature = text.split(".")
        signed, sig = f"{head}.{payload}".encode(), _b64(signature)
        if alg == "ES256":
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            public.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        elif alg == "EdDSA":
            public.verify(sig, signed)
        else:
            public.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())

    return token, jwk, raw


def verifier_for(jwk: dict[str, Any]) -> Verifier:
    documents = {
        "/.well-known/oauth-authorization-server": {
            "issuer": ISSUER,
            "jwks_uri": f"{ISSUER}/jwks.json",
        },
        "/jwks.json": {"keys": [jwk]},
    }

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=documents[request.url.path], headers={"Cache-Control": "max-age=86400"}
        )

    http = httpx.Client(transport=httpx.MockTransport(serve))
    return Verifier(ISSUER, AUDIENCE, http=http, revoked=REVOKED.__contains__)


def rate(check: Callable[[str], object], token: str, seconds: float) -> float:
    for _ in range(200):
        check(token)
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            check(token)
        done += 100
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per line")
    args = parser.parse_args()
    facts = machine()
    rows, results = [], []
    for alg in ("ES256", "EdDSA", "RS256"):
        token, jwk, raw = setup(alg)
        verifier = verifier_for(jwk)
        assert verifier.verify(token).subject == "user-1"
        full = rate(verifier.verify, token, args.seconds)
        bare = rate(raw, token, args.seconds)
        results.append({"alg": alg, "keyturn_verify_per_s": full, "raw_signature_per_s": bare})
        rows.append(
            [
                alg,
                f"{full:,.0f}",
                f"{1e6 / full:,.0f}",
                f"{bare:,.0f}",
                f"{1e6 / bare:,.0f}",
                f"{full / bare:.2f}",
            ]
        )
        print(f"{alg}: keyturn.verify {full:,.0f}/s, bare signature {bare:,.0f}/s")
    lines = [
        "## Verifying access tokens in a resource server",
        "",
        "Tokens per second on one core: `keyturn.verify.Verifier.verify` (header and key "
        "checks, signature, every RFC 9068 claim, the revocation lookup) against "
        "`cryptography` checking the same signature and nothing else. The key set is "
        "cached; no request touches the network. "
        f"`.venv/bin/python -m bench.verify --seconds {args.seconds:g}`",
        "",
        machine_line(facts),
        "",
        *table(
            ["alg", "verify/s", "µs each", "bare signature/s", "µs each", "ratio"],
            "lrrrrr",
            rows,
        ),
        "",
        "The ratio is the share of the bare signature rate that full verification keeps.",
    ]
    replace_section("verify", "\n".join(lines))
    write_json(f"verify-{facts['date']}.json", {"machine": facts, "results": results})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
