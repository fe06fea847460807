"""The access record of a request: written straight to keyturn's JSON handler when
nothing else would see it, through `logging` otherwise, and the same line either way."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyturn.observability import logs
from keyturn.observability.logs import AccessLog, RequestFields, configure_logging
from keyturn.settings import Settings

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FIELDS = RequestFields(request_id="0123456789abcdef", method="POST", route="/oauth/token")
LOG_SECRET = "log-master-secret-tH6RR2Ylgz-pDK5F0FJ1Kjlx9cCxs8x6"


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """keyturn's JSON logging configured onto a captured stderr; pytest's own log
    capture handlers set aside for the test, and everything restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("keyturn").level)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    configure_logging(Settings(secret_key=LOG_SECRET, log_level="INFO"))
    try:
        yield captured
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("keyturn").setLevel(saved[2])
        logging.captureWarnings(False)
        logs._direct = None


def alone() -> None:
    """Only keyturn's handler at the root: pytest adds its capture handler for the
    test's body, after the fixture configured logging."""
    assert logs._direct is not None
    logging.getLogger().handlers[:] = [logs._direct.handler]


def lines(captured: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.getvalue().splitlines()]


def through_logging() -> None:
    """Make the next records go through `logging`: one more handler at the root."""
    logging.getLogger().addHandler(logging.NullHandler())


def without_timestamp(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "timestamp"}


def test_the_direct_line_is_the_formatter_line(stderr: io.StringIO) -> None:
    alone()
    access = AccessLog()
    access.write(FIELDS, 200, 0.001234, "127.0.0.1")
    through_logging()
    bound = logs.bind_request(FIELDS)
    try:
        access.write(FIELDS, 200, 0.001234, "127.0.0.1")
    finally:
        logs.unbind_request(bound)
    direct, logged = lines(stderr)
    assert list(direct) == list(logged), "same fields, same order"
    assert without_timestamp(direct) == without_timestamp(logged)
    assert direct == {
        "timestamp": direct["timestamp"],
        "level": "INFO",
        "logger": "keyturn.access",
        "message": "POST /oauth/token 200 1.2ms",
        "status": 200,
        "duration_ms": 1.2,
        "client_ip": "127.0.0.1",
        "request_id": "0123456789abcdef",
        "method": "POST",
        "route": "/oauth/token",
    }
    assert TIMESTAMP.match(direct["timestamp"])
    assert TIMESTAMP.match(logged["timestamp"])


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "OTHER"]),
    route=st.text(max_size=40),
    status=st.integers(100, 599),
    seconds=st.floats(0, 1e6, allow_nan=False),
    client_ip=st.none() | st.text(max_size=60),
    request_id=st.text(max_size=20),
)
def test_any_request_gives_one_json_line_equal_to_the_formatters(
    method: str, route: str, status: int, seconds: float, client_ip: str | None, request_id: str
) -> None:
    """Routes are templates and ids are hex in practice; quotes, backslashes, control
    characters and lone surrogates must still come out as valid JSON, and identical."""
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logs.KeyturnJsonFormatter())
    fields = RequestFields(request_id=request_id, method=method, route=route)
    access = AccessLog()
    record = logging.LogRecord(
        "keyturn.access",
        logging.INFO,
        "",
        0,
        logs.ACCESS_MESSAGE,
        (method, route, status, seconds * 1000),
        None,
    )
    for name, value in {
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "client_ip": client_ip,
        "request_id": request_id,
        "method": method,
        "route": route,
    }.items():
        setattr(record, name, value)
    handler.emit(record)
    logged = json.loads(captured.getvalue())
    written = json.loads(access.json_line("T", fields, status, seconds, client_ip))
    assert without_timestamp(written) == without_timestamp(logged)
    assert list(written) == list(logged)


def test_a_handler_added_anywhere_on_the_way_takes_the_records(stderr: io.StringIO) -> None:
    """An embedding application's handler (or pytest's capture) sees every record."""
    alone()
    access = AccessLog()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    for name in ("keyturn.access", "keyturn", ""):
        keep = Keep()
        logging.getLogger(name).addHandler(keep)
        try:
            access.write(FIELDS, 204, 0.002, None)
        finally:
            logging.getLogger(name).removeHandler(keep)
        assert len(seen) == 1, name
        assert seen.pop().getMessage() == "POST /oauth/token 204 2.0ms"
    assert len(lines(stderr)) == 3, "keyturn's handler wrote each one too"


def test_levels_and_propagation_are_honoured(stderr: io.StringIO) -> None:
    alone()
    access = AccessLog()
    logger = logging.getLogger("keyturn.access")
    logger.setLevel(logging.WARNING)
    try:
        access.write(FIELDS, 200, 0.001, None)
    finally:
        logger.setLevel(logging.NOTSET)
    logger.propagate = False
    try:
        access.write(FIELDS, 200, 0.001, None)
    finally:
        logger.propagate = True
    assert lines(stderr) == []
    access.write(FIELDS, 200, 0.001, None)
    assert len(lines(stderr)) == 1


def test_the_text_format_goes_through_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    configure_logging(Settings(secret_key=LOG_SECRET, log_level="INFO", log_format="text"))
    try:
        assert logs._direct is None
        AccessLog().write(FIELDS, 200, 0.001, "10.0.0.1")
    finally:
        root.handlers[:] = saved
        logging.captureWarnings(False)
    assert " INFO keyturn.access POST /oauth/token 200 1.0ms" in captured.getvalue()
