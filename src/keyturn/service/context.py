"""Facts about the request that reach the use cases (never a token, never a secret)."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyturn.core.models import Device


@dataclass(frozen=True, slots=True)
class RequestContext:
    device: Device = field(default_factory=Device)


NO_CONTEXT = RequestContext()
