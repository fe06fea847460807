"""GET /metrics on a real server: the domain counters after a login, rotations and a
reuse, request counters by route template, the bearer token, and totals that add up
every worker's requests under `--workers 2`."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from keyturn.core.models import ClientType, Delivery, GrantType
from keyturn.core.policy import RotationSettings
from keyturn.settings import Settings
from keyturn.storage import upgrade
from keyturn.wiring import open_engine
from support.databases import create_pg_schema, drop_pg_schema
from support.engine import PASSWORD
from support.server import running_server

SECRET = "metrics-master-secret-bmIEyV0ldQheJXAcIWnwufR4Fl1c-Sts"
METRICS_TOKEN = "metrics-scrape-token-0123456789"
SCOPE = frozenset({"read"})

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Metered:
    base: str

    def scrape(self) -> Samples:
        return scrape(self.base, {"Authorization": f"Bearer {METRICS_TOKEN}"})

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", json=body, timeout=30)


def scrape(base: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(f"{base}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` that has `labels` (and any others)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def _seed(settings: Settings) -> None:
    engine = await open_engine(settings)
    try:
        await engine.admin.add_user("alice", PASSWORD)
        await engine.admin.add_client(
            "native",
            ClientType.PUBLIC,
            grant_types={GrantType.PASSWORD, GrantType.REFRESH_TOKEN},
            scope=SCOPE,
            delivery=Delivery.BODY,
            # Its own window over the server's 0: a replay to count beside the reuse.
            rotation=RotationSettings(retry_window=10),
        )
    finally:
        await engine.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def metered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Metered]:
    """A server with no default retry window, a client with one of 10 s, a metrics token."""
    env = {
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_GRACE_SECONDS": "0",
        "KEYTURN_METRICS_TOKEN": METRICS_TOKEN,
    }
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('metrics') / 'keyturn.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
        schema = create_pg_schema(url)
        env["KEYTURN_DB_SCHEMA"] = schema
    env["KEYTURN_DATABASE_URL"] = url
    asyncio.run(_seed(Settings(database_url=url, secret_key=SECRET, db_schema=schema)))
    with running_server(env) as base:
        yield Metered(base)
    if schema:
        drop_pg_schema(url, schema)


def login(server: Metered, password: str = PASSWORD) -> httpx.Response:
    body = {"username": "alice", "password": password, "client_id": "native"}
    return server.post("/auth/login", body)


def refresh(server: Metered, token: str) -> httpx.Response:
    return server.post("/auth/refresh", {"client_id": "native", "refresh_token": token})


def test_rotations_reuse_and_the_revoked_session_are_counted(metered: Metered) -> None:
    before = metered.scrape()
    first = login(metered)
    assert first.status_code == 200, first.text
    rt0 = token = first.json()["refresh_token"]
    for _ in range(3):
        rotated = refresh(metered, token)
        assert rotated.status_code == 200, rotated.text
        token = rotated.json()["refresh_token"]
    assert refresh(metered, token).status_code == 200  # the live one: rotated once more
    assert refresh(metered, token).status_code == 200  # now the parent, at once: a replay
    assert refresh(metered, rt0).status_code == 400  # generation 0 after 4: reuse
    assert refresh(metered, "kt_rt_garbage").status_code == 400
    after = metered.scrape()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("keyturn_refresh_rotations_total") == 4
    assert grew("keyturn_refresh_reuse_detections_total") == 1
    native = {"client_id": "native"}
    assert grew("keyturn_refresh_outcomes_total", **native, outcome="rotated") == 4
    assert grew("keyturn_refresh_outcomes_total", **native, outcome="replayed_concurrent") == 1
    assert grew("keyturn_refresh_outcomes_total", **native, outcome="reuse_outside_window") == 1
    assert grew("keyturn_refresh_outcomes_total", **native, outcome="invalid_token") == 1
    assert grew("keyturn_sessions_ended_total", **native, reason="reuse_outside_window") == 1
    assert grew("keyturn_security_events_total", type="refresh_replayed") == 1
    assert grew("keyturn_logins_total", outcome="succeeded") == 1
    assert grew("keyturn_security_events_total", type="reuse_detected") == 1
    assert grew("keyturn_security_events_total", type="login_succeeded") == 1
    refreshes = {"route": "/auth/refresh", "method": "POST"}
    assert grew("keyturn_http_requests_total", **refreshes, status="200") == 5
    assert grew("keyturn_http_requests_total", **refreshes, status="400") == 2
    assert grew("keyturn_http_requests_total", route="/auth/login", method="POST", status="200")
    assert grew("keyturn_http_request_duration_seconds_count", **refreshes) == 7


def test_a_failed_login_is_counted(metered: Metered) -> None:
    before = metered.scrape()
    assert login(metered, password="not the password").status_code == 401
    after = metered.scrape()
    failed = {"outcome": "failed"}
    assert (
        value(after, "keyturn_logins_total", **failed)
        - value(before, "keyturn_logins_total", **failed)
        == 1
    )


def test_requests_are_labelled_by_route_template_never_by_path(metered: Metered) -> None:
    sid = str(uuid.uuid4())
    missing = f"/no-such-page-{uuid.uuid4().hex}"
    assert httpx.delete(f"{metered.base}/auth/sessions/{sid}").status_code == 401
    assert httpx.get(f"{metered.base}{missing}?refresh_token=x").status_code == 404
    assert httpx.request("PROPFIND", f"{metered.base}/healthz").status_code == 405
    response = httpx.get(
        f"{metered.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    samples = parse(response.text)
    sessions = {"route": "/auth/sessions/{sid}", "method": "DELETE", "status": "401"}
    assert value(samples, "keyturn_http_requests_total", **sessions) >= 1
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(samples, "keyturn_http_requests_total", **unmatched) >= 1
    webdav = {"route": "/healthz", "method": "other", "status": "405"}
    assert value(samples, "keyturn_http_requests_total", **webdav) >= 1
    assert sid not in response.text
    assert missing not in response.text


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"],
)
def test_metrics_refuses_a_scrape_without_its_bearer_token(
    metered: Metered, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{metered.base}/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert response.json()["error"] == "invalid_token"
    assert "keyturn_" not in response.text


def _served(base: str, rounds: int) -> int:
    """`rounds` batches of 40 requests to /readyz, 8 connections at a time (each request
    on a connection of its own, so either worker may accept it). Returns how many."""

    def one(_: int) -> int:
        return httpx.get(f"{base}/readyz", timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(40 * rounds)))
    assert codes == [200] * len(codes)
    return len(codes)


def _per_worker(folder: Path, scratch: Path) -> list[float]:
    """/readyz requests counted by each worker, from its own files alone."""
    pids = {path.stem.rsplit("_", 1)[1] for path in folder.glob("*.db")}
    counts = []
    for pid in pids:
        own = scratch / pid
        own.mkdir(exist_ok=True)
        for path in folder.glob(f"*_{pid}.db"):
            shutil.copy(path, own / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(own))
        counts.append(
            total(
                parse(generate_latest(registry).decode()),
                "keyturn_http_requests_total",
                route="/readyz",
            )
        )
    return counts


def test_with_two_workers_every_scrape_adds_up_both_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keyturn.db'}"
    folder = tmp_path / "metrics"
    folder.mkdir()
    stale = folder / "counter_1.db"
    stale.write_bytes(b"a previous run's counts")
    env = {
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_DATABASE_URL": url,
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "KEYTURN_METRICS_PUBLIC": "true",
    }
    with running_server(env, workers=2) as base:
        assert not stale.exists()
        served = _served(base, 1)
        # Connections go to whichever worker accepts first: go on until both have served.
        while len([n for n in _per_worker(folder, tmp_path) if n > 0]) < 2 and served < 2000:
            served += _served(base, 1)
        counts = _per_worker(folder, tmp_path)
        assert len([n for n in counts if n > 0]) == 2
        assert sum(counts) == served
        for _ in range(10):  # public (KEYTURN_METRICS_PUBLIC), from either worker
            assert total(scrape(base), "keyturn_http_requests_total", route="/readyz") == served


def test_with_two_workers_and_no_metrics_directory_serve_makes_one(tmp_path: Path) -> None:
    env = {
        "KEYTURN_SECRET_KEY": SECRET,
        "KEYTURN_DATABASE_URL": f"sqlite:///{tmp_path / 'keyturn.db'}",
        "KEYTURN_METRICS_PUBLIC": "true",
    }
    with running_server(env, workers=2) as base:
        served = _served(base, 1)
        for _ in range(10):
            samples = scrape(base)
            assert total(samples, "keyturn_http_requests_total", route="/readyz") == served
            assert (
                total(samples, "keyturn_http_request_duration_seconds_count", route="/readyz")
                == served
            )
