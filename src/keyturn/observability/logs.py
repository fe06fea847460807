"""Logging for `keyturn serve`: one JSON object per line on stderr (or plain text),
every record redacted, and the fields of the request being served on each record
logged while serving it."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

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


class KeyturnJsonFormatter(JsonFormatter):
    """`timestamp` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, then
    the record's extra fields."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
        )

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            # One per request: its fields are known, so skip the general machinery
            # (which costs several times the request's own database work).
            fields = vars(record)
            return json.dumps(
                {
                    "timestamp": self.formatTime(record),
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage(),
                    **{name: fields.get(name) for name in _ACCESS_FIELDS},
                }
            )
        return super().format(record)

    # logging's name and signature; the format is fixed, so `datefmt` is not used.
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802, ARG002
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(settings: Settings) -> None:
    """Send every logger's records through one stderr handler that tags, redacts and
    formats them. keyturn's loggers log at `log_level`; others at WARNING or above."""
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
