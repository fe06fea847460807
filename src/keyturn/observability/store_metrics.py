"""Counting what the rules decided, by watching what the store commits.

A `StoreObserver` (see `keyturn.service.observed_store`): the observed store calls it
after each operation has committed, so the counters agree with the database and the
rules know nothing of metrics. It counts a rotation for each successful
compare-and-swap, each security event by type (a reuse detection, a login succeeded or
failed), and each session revoked by its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from keyturn.core.audit import EventType, SecurityEvent
from keyturn.core.ids import SessionId
from keyturn.core.models import RevocationReason
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
        session_ids: Sequence[SessionId],
        reason: RevocationReason,
        at: datetime,  # noqa: ARG002
    ) -> None:
        self._metrics.sessions_revoked.labels(reason=reason.value).inc(len(session_ids))

    async def recorded(self, event: SecurityEvent) -> None:
        self._metrics.security_events.labels(type=event.type.value).inc()
        outcome = _LOGIN_OUTCOME.get(event.type)
        if outcome is not None:
            self._metrics.logins.labels(outcome=outcome).inc()
        if event.type is EventType.REUSE_DETECTED:
            self._metrics.reuse_detections.inc()
