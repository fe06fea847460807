"""Which JOSE library signs and verifies access tokens faster: joserfc or PyJWT.

    .venv/bin/python bench/jose_choice.py [--n 5000] [--write docs/decisions/jose-library.md]

Same claims, same keys, one process; prints tokens per second for each algorithm.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

CLAIMS = {
    "iss": "https://as.test",
    "sub": "00000000-0000-4000-8000-000000000001",
    "aud": "api",
    "exp": 2_000_000_000,
    "iat": 1_700_000_000,
    "jti": "0123456789abcdef0123456789abcdef",
    "client_id": "native",
    "scope": "read write",
    "sid": "00000000-0000-4000-8000-000000000002",
}


def _jose(kind: type, private: object) -> tuple[object, object]:
    pem_private = kind.import_key(private)  # type: ignore[attr-defined]
    pem_public = kind.import_key(private.public_key())  # type: ignore[attr-defined]
    return pem_private, pem_public


def keys() -> dict[str, tuple[object, object, object, object]]:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "ES256": (ec_key, ec_key.public_key(), *_jose(ECKey, ec_key)),
        "EdDSA": (ed_key, ed_key.public_key(), *_jose(OKPKey, ed_key)),
        "RS256": (rsa_key, rsa_key.public_key(), *_jose(RSAKey, rsa_key)),
    }


def rate(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    rows = []
    for alg, (priv, pub, jpriv, jpub) in keys().items():
        header = {"alg": alg, "typ": "at+jwt", "kid": "k1"}
        extra = {"typ": "at+jwt", "kid": "k1"}
        t1 = pyjwt.encode(CLAIMS, priv, algorithm=alg, headers=extra)
        t2 = jose_jwt.encode(header, CLAIMS, jpriv, algorithms=[alg])
        rows.append(
            (
                alg,
                rate(partial(jose_jwt.encode, header, CLAIMS, jpriv, algorithms=[alg]), args.n),
                rate(partial(pyjwt.encode, CLAIMS, priv, algorithm=alg, headers=extra), args.n),
                rate(partial(jose_jwt.decode, t2, jpub, algorithms=[alg]), args.n),
                rate(
                    partial(
                        pyjwt.decode,
                        t1,
                        pub,
                        algorithms=[alg],
                        audience="api",
                        options={"verify_exp": False},
                    ),
                    args.n,
                ),
            )
        )
    lines = [
        "| alg | joserfc sign/s | PyJWT sign/s | joserfc verify/s | PyJWT verify/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for alg, js, ps, jv, pv in rows:
        lines.append(f"| {alg} | {js:,.0f} | {ps:,.0f} | {jv:,.0f} | {pv:,.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        machine = (
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"joserfc {version('joserfc')}, PyJWT {version('pyjwt')}, "
            f"cryptography {version('cryptography')}; {datetime.date.today().isoformat()}"
        )
        text = args.write.read_text()
        start, end = "<!-- jose:start -->", "<!-- jose:end -->"
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        args.write.write_text(
            f"{head}{start}\n{machine}, {args.n} tokens each:\n\n{table}\n{end}{tail}"
        )


if __name__ == "__main__":
    main()
