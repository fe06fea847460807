"""Counting what the rules decided, by watching what the store commits.

A `StoreObserver` (see `keyturn.service.observed_store`): the observed store calls it
after each operation has committed, so the counters agree with the database and the
rules know nothing of metrics. It counts a rotation for each successful
compare-and-swap, each security event by type (a reuse detection, a login succeeded or
failed), each session ended by its client and reason, and, told by the refresh grant,
each presentation of a refresh token by its client and outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.ids import ClientId, SessionId
from keyturn.core.models import EndedSession, RevocationReason
from keyturn.core.rotation import RefreshOutcome
from keyturn.observability.metrics import Metrics

_LOGIN_OUTCOME = {
    EventType.LOGIN_SUCCEEDED: "succeeded",
    EventType.LOGIN_FAILED: "failed",
}


class StoreMetrics:
    """Counts into `metrics`; the arguments it does not need are the protocol's."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def rotated(self, session_id: SessionId) -> None:  # noqa: ARG002
        self._metrics.rotations.inc()

    async def revoked(
        self,
        ended: Sequence[EndedSession],
        reason: RevocationReason,
        at: datetime,  # noqa: ARG002
    ) -> None:
        for session in ended:
            self._metrics.session_ended(session.client_id, reason)

    def refreshed(self, client_id: ClientId, outcome: RefreshOutcome) -> None:
        self._metrics.refresh_outcome(client_id, outcome)

    async def recorded(self, event: SecurityEvent) -> None:
        self._metrics.security_events.labels(type=event.type.value).inc()
        outcome = _LOGIN_OUTCOME.get(event.type)
        if outcome is not None:
            self._metrics.logins.labels(outcome=outcome).inc()
        if event.type is EventType.REUSE_DETECTED:
            self._metrics.reuse_detections.inc()
