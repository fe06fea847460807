"""DPoP-bound access tokens at a resource server (RFC 9449 §7).

A token bound to a key (`cnf.jkt`, §6.1) comes as `Authorization: DPoP <token>` with a
`DPoP` header holding a fresh proof, signed by that key, of this very request:

    from keyturn.verify import Verifier
    from keyturn.verify.dpop import DpopTokenVerifier

    verifier = Verifier("https://auth.example.com", audience="https://api.example.com")
    dpop = DpopTokenVerifier(verifier)
    token = await dpop.verify(token, proofs=[dpop_header], method="GET", uri=url)

A bearer token keeps going through `Verifier.verify`, which refuses a bound one; this
refuses an unbound one. Each proof is accepted once: this keeps its own bounded
in-memory replay cache unless handed a shared one, which an API served by several
processes needs (one process would otherwise accept a proof another already took).
For Starlette and FastAPI see `keyturn.verify.starlette.require_dpop_scopes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from keyturn.core.dpop import BoundedProofReplayCache, ProofReplayCache, single_proof
from keyturn.core.dpop_errors import InvalidDpopProof, UseDpopNonce
from keyturn.crypto.dpop import (
    DEFAULT_ALGORITHMS,
    DEFAULT_LEEWAY,
    DEFAULT_NONCE_BUCKET_SECONDS,
    DpopVerifier,
)
from keyturn.verify.verifier import AccessToken, Verifier

__all__ = ["DpopTokenVerifier", "InvalidDpopProof", "UseDpopNonce"]

DEFAULT_MAX_PROOFS = 100_000


class DpopTokenVerifier:
    """Verifies DPoP-bound access tokens of `verifier`'s issuer and audience, with the
    proof of each request.

    `leeway` is how far, in seconds, a proof's `iat` may be from this server's clock.
    `max_proofs` bounds the in-memory replay cache (when full of live proofs, new ones
    are refused rather than a live one forgotten); `replay_cache` replaces it. With
    `nonce_key`, proofs must carry a nonce from `nonce()` (RFC 9449 §9).
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: int = DEFAULT_LEEWAY,
        max_proofs: int = DEFAULT_MAX_PROOFS,
        replay_cache: ProofReplayCache | None = None,
        nonce_key: bytes | None = None,
        nonce_bucket_seconds: int = DEFAULT_NONCE_BUCKET_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self._clock = clock
        # Not `replay_cache or ...`: an empty cache has no length, so it is falsy.
        cache = (
            BoundedProofReplayCache(self._now, max_proofs) if replay_cache is None else replay_cache
        )
        self._proofs = DpopVerifier(
            cache,
            algorithms=algorithms,
            leeway=leeway,
            nonce_key=nonce_key,
            nonce_bucket_seconds=nonce_bucket_seconds,
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The proof algorithms accepted, for the `algs` of a `WWW-Authenticate: DPoP`
        challenge (RFC 9449 §7.1)."""
        return self._proofs.algorithms

    def nonce(self) -> str | None:
        """The nonce to send in a `DPoP-Nonce` header now, or None without nonces."""
        return self._proofs.nonce(self._now())

    async def verify(
        self, token: str, *, proofs: Sequence[str], method: str, uri: str
    ) -> AccessToken:
        """The access token of a request made with `Authorization: DPoP <token>`, if the
        token is valid and bound to a key, and the request's one `DPoP` header value (of
        `proofs`, all of them as received) is a fresh proof of that key for `method` and
        `uri` (the request's absolute URI as the client sent it), carrying the token's
        hash (RFC 9449 §7.1, §4.3).

        Raises `TokenRejected` for a token that is invalid or not bound,
        `InvalidDpopProof` for a proof that fails, `UseDpopNonce` when nonces are
        required and the proof has no current one, and `KeysUnavailable` as `Verifier`.
        """
        proof = single_proof(proofs)
        access = await self.verifier._verify_bound_async(token)
        await self._proofs.verify(
            proof, method=method, uri=uri, now=self._now(), access_token=token, jkt=access.jkt
        )
        return access

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)
