"""DPoP proofs (RFC 9449) of requests to keyturn's own endpoints: the token endpoint,
the first-party login and refresh, and the first-party endpoints that take an access
token.

A proof names the URI it was made for (`htu`). keyturn compares it with its issuer
followed by the endpoint's path, never with the `Host` the request arrived with: behind
a proxy that rewrites the host, the scheme or a path prefix, the issuer is the public
address clients were told (the metadata's `token_endpoint` is built the same way), and
a header anyone can set decides nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyturn.core.dpop import single_proof
from keyturn.core.ports import Clock
from keyturn.crypto.dpop import DpopVerifier


@dataclass(frozen=True, slots=True)
class ProofRequest:
    """What a request says for its proof: every `DPoP` header value it carried (none,
    one, or a hostile several), its method, and its path below the issuer."""

    proofs: Sequence[str]
    method: str
    path: str


class DpopProofs:
    """Verifies the proofs of requests to this server, with one replay cache and one
    nonce key for every endpoint (a proof is good once, anywhere)."""

    def __init__(self, verifier: DpopVerifier, clock: Clock, issuer: str) -> None:
        self._verifier = verifier
        self._clock = clock
        self._base = issuer.rstrip("/")

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The proof algorithms accepted (metadata `dpop_signing_alg_values_supported`)."""
        return self._verifier.algorithms

    @property
    def requires_nonce(self) -> bool:
        return self._verifier.requires_nonce

    def nonce(self) -> str | None:
        """The nonce to send in a `DPoP-Nonce` header now, or None without nonces."""
        return self._verifier.nonce(self._clock.now())

    def uri_of(self, path: str) -> str:
        """The public URI of the endpoint at `path`, as a proof's `htu` must name it."""
        return self._base + path

    async def key_of(self, request: ProofRequest) -> str | None:
        """The RFC 7638 thumbprint of the key of the request's one valid proof, or None
        when it sent no `DPoP` header. Raises `InvalidDpopProof` (two headers, a bad or
        replayed proof) or `UseDpopNonce`; a refused proof is not remembered.

        Called before anything else is read or written for the request, so a refusal,
        a nonce challenge included, consumes no code and no refresh token.
        """
        if not request.proofs:
            return None
        proof = single_proof(request.proofs)
        verified = await self._verifier.verify(
            proof, method=request.method, uri=self.uri_of(request.path), now=self._clock.now()
        )
        return verified.jkt

    async def check_resource(self, request: ProofRequest, access_token: str, jkt: str) -> None:
        """RFC 9449 §7.1: a request made with `Authorization: DPoP <access_token>` carries
        one proof, of this request, by the key the token is bound to (`jkt`), with the
        token's hash (`ath`). Raises `InvalidDpopProof` or `UseDpopNonce`."""
        proof = single_proof(request.proofs)
        await self._verifier.verify(
            proof,
            method=request.method,
            uri=self.uri_of(request.path),
            now=self._clock.now(),
            access_token=access_token,
            jkt=jkt,
        )
