"""The OpenAPI description against the server it describes: it lists exactly the
application's routes, Swagger UI serves it from keyturn itself, and schemathesis sends
more than a thousand generated requests (valid and invalid) to a started server on each
store: no answer may be a 5xx, and every answer must match the description (status,
content type, headers, body schema).

The long run (docs/security.md) is the same test with more examples per operation:

    KEYTURN_FUZZ_EXAMPLES=640 KEYTURN_FUZZ_REPORT=fuzz.json \
        .venv/bin/python -m pytest -n 0 -s tests/e2e/test_openapi.py -k generated

`KEYTURN_FUZZ_REPORT` names a JSON file where each store's figures (requests sent,
answers by status, seconds) are merged. The requests steered by known credentials
(test_openapi_known_values.py) take `KEYTURN_FUZZ_KNOWN_EXAMPLES` and report to the same
file, under `known_values`.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from conftest import Server, start_server
from keyturn.settings import Settings
from keyturn.web.app import create_app
from keyturn.web.openapi import document

# Half positive, half negative. The CI run's default sends a little over a thousand
# requests per store; KEYTURN_FUZZ_EXAMPLES raises it for the long run.
EXAMPLES_PER_OPERATION = int(os.environ.get("KEYTURN_FUZZ_EXAMPLES", "160"))
# Operations without parameters are exhausted after a few examples, so the count grows
# by about 1000 per 160 examples per operation, not by 21 operations' worth.
MINIMUM_REQUESTS = 1000 * EXAMPLES_PER_OPERATION // 160
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    unlimited = {
        "KEYTURN_TOKEN_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_PUBLIC_CLIENT_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_CLIENT_AUTH_FAILURES_PER_MINUTE": "100000000",
        "KEYTURN_REVOCATION_FEED_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_LOGIN_REQUESTS_PER_MINUTE": "100000000",
        "KEYTURN_LOGIN_FAILURES_PER_ACCOUNT": "100000000",
    }
    yield from start_server(request, tmp_path_factory, unlimited)


def test_the_description_lists_exactly_the_applications_routes() -> None:
    secret = "openapi-master-secret-QNnuEBg7-y5CrKP3Z1hamZKz7rKfBadd"
    app = create_app(Settings(database_url="memory:", secret_key=secret))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route) and not route.path.startswith("/docs/assets/")
        for method in (route.methods or set()) - {"HEAD"}
    }
    paths = document("https://issuer.test")["paths"]
    described = {
        (path, method)
        for path, operations in paths.items()
        for method in operations
        if method != "parameters"
    }
    assert described == served


def test_openapi_json_and_swagger_ui_are_served_by_keyturn(server: Server) -> None:
    spec = httpx.get(f"{server.base}/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["servers"] == [{"url": server.base}]
    page = httpx.get(f"{server.base}/docs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-eval" not in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "init.js"):
        answer = httpx.get(f"{server.base}/docs/assets/{asset}")
        assert answer.status_code == 200, asset
        assert len(answer.content) > 100
    assert httpx.get(f"{server.base}/docs/assets/../settings.py").status_code == 404


def _credentials(server: Server) -> dict[str, str]:
    """Authorization headers that let generated requests reach past authentication."""
    basic = base64.b64encode(f"conf:{server.secrets['conf']}".encode()).decode()
    rs = base64.b64encode(f"rs:{server.secrets['rs']}".encode()).decode()
    return {"conf": f"Basic {basic}", "rs": f"Basic {rs}"}


def test_generated_requests_get_no_5xx_and_answers_match_the_description(
    server: Server,
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    credentials = _credentials(server)
    sent: Counter[int] = Counter()
    session = requests.Session()
    started = time.monotonic()

    def headers_for(path: str) -> dict[str, Any]:
        if path == "/auth/revocations":
            return {"Authorization": credentials["rs"]}
        if path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
            return {"Authorization": credentials["conf"]}
        if path.startswith("/auth/") and path not in (
            "/auth/login",
            "/auth/refresh",
            "/auth/logout",
        ):
            return {"Authorization": f"Bearer {server.tokens()[1]}"}
        return {}

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/docs":
            continue  # the page is checked above; its body is not worth generating for
        fixed = headers_for(operation.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, headers=fixed or None)

            @settings(
                max_examples=EXAMPLES_PER_OPERATION // 2,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def call(case: schemathesis.Case) -> None:
                response = case.call_and_validate(session=session, checks=CHECKS, timeout=30)
                sent[response.status_code] += 1

            try:
                call()
            except Unsatisfiable:
                # Nothing to make invalid (an operation without parameters or body).
                if mode is not GenerationMode.NEGATIVE:
                    raise
    requests_sent = sum(sent.values())
    seconds = round(time.monotonic() - started, 1)
    print(
        f"schemathesis sent {requests_sent} requests in {seconds} s: {dict(sorted(sent.items()))}"
    )
    _report(server, requests_sent, sent, seconds)
    assert requests_sent >= MINIMUM_REQUESTS


def _report(
    server: Server,
    requests_sent: int,
    statuses: Counter[int],
    seconds: float,
    *,
    section: str = "stores",
    examples: int = EXAMPLES_PER_OPERATION,
) -> None:
    """Merge this store's figures into `section` of the file KEYTURN_FUZZ_REPORT names,
    if any. Only a run in which every answer passed every check gets here."""
    target = os.environ.get("KEYTURN_FUZZ_REPORT")
    if not target:
        return
    path = Path(target)
    report = json.loads(path.read_text()) if path.exists() else {}
    store = "postgres" if server.settings.database_url.startswith("postgresql") else "sqlite"
    report.setdefault(section, {})[store] = {
        "examples_per_operation": examples,
        "requests": requests_sent,
        "by_status": {str(code): n for code, n in sorted(statuses.items())},
        "status_5xx": sum(n for code, n in statuses.items() if code >= 500),
        "schema_mismatches": 0,
        "seconds": seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def test_the_api_reference_is_generated_from_the_description() -> None:
    from pathlib import Path

    from keyturn.web.openapi import reference_markdown

    written = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert written == reference_markdown(), "regenerate docs/api.md (see its first lines)"
