"""keyturn's Prometheus metrics, one set per process.

With several worker processes (`keyturn serve --workers N`) each worker writes its
values to files in `PROMETHEUS_MULTIPROC_DIR` and a scrape, answered by any worker,
adds up every worker's files (prometheus-client's multiprocess mode). The variable
must be set before `prometheus_client` is imported, which `keyturn serve` does for the
workers it starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from keyturn.core.audit import EventType
from keyturn.core.models import RevocationReason
from keyturn.core.rotation import RefreshOutcome

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
"""The `method` label of any other method: a client must not be able to add series."""

UNMATCHED_ROUTE = "unmatched"
"""The `route` label of a path no route matches: raw paths would add a series each."""

LOGIN_OUTCOMES = ("succeeded", "failed")


class Metrics:
    """The metric objects. In one process they live in a registry of their own (so
    tests may build several apps); in multiprocess mode they are in no registry and
    `render` reads every worker's files from `multiprocess_dir`."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self._registry: CollectorRegistry | None = None
        if multiprocess_dir is None:
            self._registry = CollectorRegistry()
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self._registry.register(collector)
        registry = self._registry

        self.http_requests = Counter(
            "keyturn_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "keyturn_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            registry=registry,
        )
        self.rotations = Counter(
            "keyturn_refresh_rotations",
            "Refresh-token rotations committed (a successful compare-and-swap).",
            registry=registry,
        )
        self.reuse_detections = Counter(
            "keyturn_refresh_reuse_detections",
            "Refresh tokens presented again after their grace window (reuse).",
            registry=registry,
        )
        self.sessions_ended = Counter(
            "keyturn_sessions_ended",
            "Sessions ended, by client and reason (a closed set: RevocationReason).",
            ["client_id", "reason"],
            registry=registry,
        )
        self.refresh_outcomes = Counter(
            "keyturn_refresh_outcomes",
            "Presentations of refresh tokens, by client and outcome (a closed set: "
            "rotated, replayed_*, reuse_*, refusals).",
            ["client_id", "outcome"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], Any] = {}
        """The series of `sessions_ended` and `refresh_outcomes`, by (metric, client, value)."""
        self.logins = Counter(
            "keyturn_logins",
            "Password logins, by outcome (succeeded, failed).",
            ["outcome"],
            registry=registry,
        )
        self.security_events = Counter(
            "keyturn_security_events",
            "Security events committed to the audit trail, by type.",
            ["type"],
            registry=registry,
        )
        # Every known label value from the start, so a rate over a counter that has
        # not moved yet is 0 rather than absent.
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome=outcome)
        for kind in EventType:
            self.security_events.labels(type=kind.value)

    def session_ended(self, client_id: str, reason: RevocationReason) -> None:
        self._child(self.sessions_ended, client_id, reason=reason.value).inc()

    def refresh_outcome(self, client_id: str, outcome: RefreshOutcome) -> None:
        self._child(self.refresh_outcomes, client_id, outcome=outcome.value).inc()

    def _child(self, counter: Counter, client_id: str, **label: str) -> Any:
        """The series of `client_id` and the one other `label`, looked up once
        (`labels()` costs more than the increment). Client ids are those of registered
        clients, reasons and outcomes closed sets, so this stays as small as the client
        table."""
        ((name, value),) = label.items()
        key = (name, client_id, value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(client_id=client_id, **label)
        return child

    @classmethod
    def for_this_process(cls) -> Metrics:
        """Multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` is set, else in memory."""
        folder = os.environ.get(MULTIPROC_ENV)
        return cls(Path(folder) if folder else None)

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of every metric."""
        if self._registry is not None:
            return generate_latest(self._registry)
        # A registry per scrape, as prometheus-client's multiprocess mode requires.
        registry = CollectorRegistry()
        # prometheus-client leaves this constructor untyped.
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else OTHER_METHOD


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """For `keyturn serve`, before its workers start: empty the directory named by
    `PROMETHEUS_MULTIPROC_DIR` of a previous run's files, or, with several workers and
    no such directory, create a temporary one and set it in the environment the
    workers inherit. Returns the directory to remove at exit (the temporary one)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        # Files of a previous run would be added to this run's totals.
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
        return None
    if workers == 1:
        return None
    created = Path(tempfile.mkdtemp(prefix="keyturn-metrics-"))
    os.environ[MULTIPROC_ENV] = str(created)
    return created


def remove_multiprocess_dir(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
