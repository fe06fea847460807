"""How much `keyturn.verify` costs over the bare signature check, cold and warm, beside
PyJWT and joserfc on the same tokens.

For ES256, EdDSA and RS256, access tokens verified per second on one core by:

- the bare check: `cryptography` verifying the token's signature and nothing else;
- `Verifier.verify` cold (a token it has never seen, so the cache misses): header
  checks, key lookup, signature, every RFC 9068 claim check, the revocation lookup;
- `Verifier.verify` warm (every token verified once before, the usual case of a client
  calling an API many times with one token): the cache answers, and `exp`, `nbf`/`iat`,
  the revocation lookup and the DPoP binding are still checked on each call;
- PyJWT `jwt.decode_complete` with the same key and the checks it can do (algorithm,
  `iss`, `aud`, `exp`, `iat`, `nbf` with the same leeway, required claims), plus the
  `typ` and revocation checks it leaves to the caller;
- joserfc `jwt.decode` and its claims registry (the same claims and leeway), plus `typ`
  and the revocation lookup.

Every line cycles through the same pool of distinct tokens, and the lines take turns
(`--rounds`) so a busy machine slows them alike, and each ratio is the median of the
rounds' (a line against the bare check of its own round). The key set is fetched once, before
timing, through an in-process transport: the request path never touches the network.

    .venv/bin/python -m bench.verify [--seconds 3] [--rounds 15] [--no-docs]

Prints the table; writes it to docs/benchmarks.md (section `verify`) unless `--no-docs`,
and always to bench/results/verify-DATE.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from bench.engine.report import machine, machine_line, replace_section, table, write_json
from keyturn.verify import Verifier

ISSUER = "https://auth.bench.test"
AUDIENCE = "https://api.bench.test"
LEEWAY = 30
REVOKED: set[str] = {"a-revoked-session"}
POOL = 256
ALGS = ("ES256", "EdDSA", "RS256")
REQUIRED = ["iss", "sub", "aud", "exp", "iat", "jti"]


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class Case:
    alg: str
    tokens: list[str]
    jwk: dict[str, Any]
    public: Any
    jose_key: Any


def setup(alg: str, pool: int = POOL) -> Case:
    """`pool` distinct tokens of one key, as keyturn signs them (`typ: at+jwt`)."""
    if alg == "ES256":
        private: Any = ec.generate_private_key(ec.SECP256R1())
        jose_key: Any = ECKey.import_key(private)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jose_key = OKPKey.import_key(private)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        jose_key = RSAKey.import_key(private)
    jwk = {**jose_key.as_dict(private=False), "kid": f"k-{alg}", "alg": alg, "use": "sig"}
    header = {"typ": "at+jwt", "alg": alg, "kid": jwk["kid"]}
    now = int(time.time())
    tokens = []
    for i in range(pool):
        claims = {
            "iss": ISSUER,
            "sub": f"user-{i}",
            "aud": AUDIENCE,
            "exp": now + 3600,
            "iat": now,
            "jti": f"j-{i}",
            "client_id": "app",
            "scope": "read write",
            "sid": f"session-{i}",
        }
        tokens.append(jose_jwt.encode(header, claims, jose_key, algorithms=[alg]))
    public_jose = type(jose_key).import_key(jose_key.as_dict(private=False))
    return Case(alg, tokens, jwk, private.public_key(), public_jose)


def bare_check(case: Case) -> Callable[[str], object]:
    """`cryptography` checking the token's signature, and nothing else."""
    alg, public = case.alg, case.public

    def bare(text: str) -> None:
        head, payload, signature = text.split(".")
        signed, sig = f"{head}.{payload}".encode(), _b64(signature)
        if alg == "ES256":
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            public.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        elif alg == "EdDSA":
            public.verify(sig, signed)
        else:
            public.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())

    return bare


def verifier_for(jwk: dict[str, Any], **options: Any) -> Verifier:
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
    return Verifier(ISSUER, AUDIENCE, http=http, revoked=REVOKED.__contains__, **options)


def pyjwt_check(case: Case) -> Callable[[str], object]:
    alg, public = case.alg, case.public

    def check(text: str) -> dict[str, Any]:
        decoded = pyjwt.decode_complete(
            text,
            public,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": REQUIRED},
        )
        if decoded["header"].get("typ") != "at+jwt":
            raise ValueError("typ")
        claims: dict[str, Any] = decoded["payload"]
        if claims.get("sid") in REVOKED:
            raise ValueError("revoked")
        return claims

    return check


def joserfc_check(case: Case) -> Callable[[str], object]:
    alg, key = case.alg, case.jose_key
    registry = JWTClaimsRegistry(
        leeway=LEEWAY,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        sub={"essential": True},
        jti={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )

    def check(text: str) -> dict[str, Any]:
        token = jose_jwt.decode(text, key, algorithms=[alg])
        if token.header.get("typ") != "at+jwt":
            raise ValueError("typ")
        registry.validate(token.claims)
        if token.claims.get("sid") in REVOKED:
            raise ValueError("revoked")
        return token.claims

    return check


def timed(check: Callable[[str], object], tokens: list[str], seconds: float) -> tuple[int, float]:
    """Verifications done and seconds spent, cycling through `tokens`."""
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for token in tokens:
            check(token)
        done += len(tokens)
    return done, time.perf_counter() - started


def measure(case: Case, seconds: float, rounds: int) -> dict[str, float]:
    # A cache of one, cycled through 256 tokens: every call misses, and pays for the
    # lookup and the entry it leaves, as a token never seen does.
    cold = verifier_for(case.jwk, cache_size=1)
    warm = verifier_for(case.jwk, cache_size=len(case.tokens))
    checks: dict[str, Callable[[str], object]] = {
        "bare": bare_check(case),
        "keyturn_cold": cold.verify,
        "keyturn_warm": warm.verify,
        "pyjwt": pyjwt_check(case),
        "joserfc": joserfc_check(case),
    }
    for check in checks.values():  # each accepts every token, and warms up
        for token in case.tokens:
            check(token)
    assert len(warm._cache) == len(case.tokens)
    assert len(cold._cache) == 1
    totals = dict.fromkeys(checks, (0, 0.0))
    ratios: dict[str, list[float]] = {name: [] for name in checks}
    for _ in range(rounds):
        bare = 0.0
        for name, check in checks.items():
            done, spent = timed(check, case.tokens, seconds / rounds)
            totals[name] = (totals[name][0] + done, totals[name][1] + spent)
            bare = bare or done / spent
            ratios[name].append(done / spent / bare)
    rates = {name: done / spent for name, (done, spent) in totals.items()}
    # Each line against the bare check of its own round, a moment before: a shared
    # machine's speed drifts by more than the differences measured here.
    return rates | {f"{name}_ratio": statistics.median(ratios[name]) for name in LINES}


LINES = ("keyturn_cold", "keyturn_warm", "pyjwt", "joserfc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per line")
    parser.add_argument("--rounds", type=int, default=15, help="turns the lines take")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md")
    args = parser.parse_args()
    facts = machine()
    rows, results = [], []
    for alg in ALGS:
        rates = measure(setup(alg), args.seconds, args.rounds)
        bare = rates["bare"]
        results.append(
            {
                "alg": alg,
                "raw_signature_per_s": bare,
                **{f"{name}_per_s": rates[name] for name in LINES},
                **{f"{name}_ratio": rates[f"{name}_ratio"] for name in LINES},
            }
        )
        row = [alg, f"{bare:,.0f}", f"{1e6 / bare:,.1f}"]
        for name in LINES:
            ratio = rates[f"{name}_ratio"]
            row += [f"{rates[name]:,.0f}", f"{1e6 / rates[name]:,.1f}", f"{ratio:.2f}"]
        rows.append(row)
        print(
            f"{alg}: bare {bare:,.0f}/s; "
            + "; ".join(
                f"{name} {rates[name]:,.0f}/s ({rates[f'{name}_ratio']:.2f}x)" for name in LINES
            )
        )
    header = ["alg", "bare/s", "µs"]
    for name in ("keyturn cold", "keyturn warm", "PyJWT", "joserfc"):
        header += [f"{name}/s", "µs", "×bare"]
    command = (
        f"`.venv/bin/python -m bench.verify --seconds {args.seconds:g} --rounds {args.rounds}`"
    )
    lines = [
        "## Verifying access tokens in a resource server",
        "",
        "Tokens per second on one core, each line cycling through the same "
        f"{POOL} distinct tokens: the bare signature check of `cryptography` (nothing "
        "else); `keyturn.verify.Verifier.verify` cold (a token never seen: header and "
        "key checks, signature, every RFC 9068 claim, the revocation lookup) and warm "
        "(a token verified before: `exp`, `nbf`/`iat`, the revocation lookup and the "
        "DPoP binding checked again, the rest from its cache); PyJWT's "
        "`jwt.decode_complete` and joserfc's `jwt.decode` with its claims registry, each "
        "with the same key, claims, leeway, and the `typ` and revocation checks they "
        "leave to the caller. The key set is cached; no request touches the network. " + command,
        "",
        machine_line(facts),
        "",
        *table(header, "l" + "r" * (len(header) - 1), rows),
        "",
        "×bare is the share of the bare signature rate a line keeps (above 1: faster): "
        "the median over the rounds of the line's rate against the bare check's in the "
        "same round, so a drift of the machine's speed between rounds cancels out.",
    ]
    section = "\n".join(lines)
    if args.no_docs:
        print(section)
    else:
        replace_section("verify", section)
    path = write_json(
        f"verify-{facts['date']}.json",
        {"machine": facts, "command": command.strip("`"), "pool": POOL, "results": results},
    )
    print(f"wrote {path}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
