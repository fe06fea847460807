"""Logging for `keyturn serve`: one JSON object per line on stderr (or plain text),
every record redacted, and the fields of the request being served on each record
logged while serving it."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from keyturn.observability.redaction import ACCESS_LOGGER, Redaction
from keyturn.settings import LogFormat, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass(frozen=True, slots=True)
class RequestFields:
    """What every record logged while serving a request carries: never a path with
    its values, never a query string."""

    request_id: str
    method: str
    route: str


_request: contextvars.ContextVar[RequestFields | None] = contextvars.ContextVar(
    "keyturn_request", default=None
)


def bind_request(fields: RequestFields) -> contextvars.Token[RequestFields | None]:
    """Tag the records of the current request; `unbind_request` with the result."""
    return _request.set(fields)


def unbind_request(token: contextvars.Token[RequestFields | None]) -> None:
    _request.reset(token)


class RequestTagging(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = _request.get()
        if fields is not None:
            for name in ("request_id", "method", "route"):
                if not hasattr(record, name):
                    setattr(record, name, getattr(fields, name))
        return True


_ACCESS_FIELDS = ("status", "duration_ms", "client_ip", "request_id", "method", "route")
ACCESS_MESSAGE = "%s %s %d %.1fms"
"""An access record's message: method, route template, status, milliseconds."""


def _access_object(timestamp: str, message: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The JSON object the formatter makes of an access record (`AccessLog.json_line`
    writes the same line without a record)."""
    return {
        "timestamp": timestamp,
        "level": "INFO",
        "logger": ACCESS_LOGGER,
        "message": message,
        **{name: fields.get(name) for name in _ACCESS_FIELDS},
    }


class KeyturnJsonFormatter(JsonFormatter):
    """`timestamp` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, then
    the record's extra fields."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
        )

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER and record.levelno == logging.INFO:
            # One per request: its fields are known, so skip the general machinery.
            fields = vars(record)
            return json.dumps(_access_object(self.formatTime(record), record.getMessage(), fields))
        return super().format(record)

    # logging's name and signature; the format is fixed, so `datefmt` is not used.
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802, ARG002
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Direct:
    """The handler `configure_logging` installed for JSON lines, and its stream."""

    def __init__(self, handler: logging.StreamHandler[Any]) -> None:
        self.handler = handler
        self.filters = list(handler.filters)
        self.second = -1
        self.second_text = ""

    def intact(self, access: logging.Logger) -> bool:
        """Nothing but this handler would see an access record: no handler or filter
        added to the access logger or the root, none removed, levels letting INFO by."""
        handler = self.handler
        if access.filters:
            return False
        logger: logging.Logger | None = access
        while logger is not None and logger is not logging.root:
            if logger.handlers or not logger.propagate:
                return False
            logger = logger.parent
        return (
            logging.root.handlers == [handler]
            and not logging.root.filters
            and handler.filters == self.filters
            and handler.level <= logging.INFO
            and type(handler.formatter) is KeyturnJsonFormatter
        )

    def timestamp(self) -> str:
        """Now as the formatter writes it: ISO 8601, UTC, milliseconds, truncated."""
        second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        if second != self.second:
            self.second = second
            self.second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self.second_text}.{nanoseconds // 1_000_000:03d}Z"


_direct: _Direct | None = None


class AccessLog:
    """Writes the `keyturn.access` record of each request.

    When `configure_logging` set up JSON lines and nothing changed the handlers since,
    the line the formatter would make is written straight to the handler's stream,
    without a `LogRecord`, the filters (which let access records pass as they are) and
    the handler chain: that machinery cost about 50 µs of a rotation's CPU in the served
    application (`docs/decisions.md`). Otherwise (text lines, a handler added by an
    embedding application or by pytest's log capture) it goes through `logging`."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._encoded: dict[tuple[str, str, int], tuple[str, str]] = {}

    def _fragments(self, method: str, route: str, status: int) -> tuple[str, str]:
        """The JSON of what repeats from one request of a route to the next: the level,
        logger and start of the message; the method and route. Methods, templates and
        statuses are closed sets, so this stays small."""
        key = (method, route, status)
        found = self._encoded.get(key)
        if found is None:
            message_start = json.dumps(f"{method} {route} {status} ")[:-1]  # open quote
            found = self._encoded[key] = (
                f'"level":"INFO","logger":"{ACCESS_LOGGER}","message":{message_start}',
                f'"method":{json.dumps(method)},"route":{json.dumps(route)}',
            )
        return found

    def json_line(
        self,
        timestamp: str,
        fields: RequestFields,
        status: int,
        seconds: float,
        client_ip: str | None,
    ) -> str:
        """The line `KeyturnJsonFormatter` makes of this request's access record."""
        head, tail = self._fragments(fields.method, fields.route, status)
        milliseconds = seconds * 1000
        return (
            f'{{"timestamp":{json.dumps(timestamp)},{head}{milliseconds:.1f}ms",'
            f'"status":{status},"duration_ms":{round(milliseconds, 1)!r},'
            f'"client_ip":{json.dumps(client_ip)},'
            f'"request_id":{json.dumps(fields.request_id)},{tail}}}'
        )

    def write(
        self, fields: RequestFields, status: int, seconds: float, client_ip: str | None
    ) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        direct = _direct
        if direct is not None and direct.intact(logger):
            line = self.json_line(direct.timestamp(), fields, status, seconds, client_ip)
            handler = direct.handler
            handler.acquire()
            try:
                handler.stream.write(line + handler.terminator)
                handler.flush()
            finally:
                handler.release()
            return
        milliseconds = seconds * 1000
        logger.info(
            ACCESS_MESSAGE,
            fields.method,
            fields.route,
            status,
            milliseconds,
            extra={
                "status": status,
                "duration_ms": round(milliseconds, 1),
                "client_ip": client_ip,
            },
        )


def configure_logging(settings: Settings) -> None:
    """Send every logger's records through one stderr handler that tags, redacts and
    formats them. keyturn's loggers log at `log_level`; others at WARNING or above."""
    global _direct  # noqa: PLW0603 - the one handler this process's configuration made
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(KeyturnJsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestTagging())
    handler.addFilter(Redaction())
    level = logging.getLevelName(settings.log_level.value)
    logging.basicConfig(handlers=[handler], level=max(level, logging.WARNING), force=True)
    logging.getLogger("keyturn").setLevel(level)
    logging.captureWarnings(True)  # warnings are records too, not bare stderr lines
    _direct = _Direct(handler) if settings.log_format is LogFormat.JSON else None
