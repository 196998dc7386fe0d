"""Structured logs: one JSON object per line, each naming the request (and document) it belongs to.

The request id and document id travel in context variables: the API middleware
sets them for each request, and the store copies the caller's context into its
writer thread, so a log line or an audit record written on behalf of a request
carries that request's id without passing it through every call.

What a line may hold is an allowlist: the message, the ids, and a few routing
facts. Subjects, contents, attachment names and keys are never logged, so a
classified document shows up only by id, codes, level and digests.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gateway.operators.readmodel import FeedEvent

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
DOCUMENT: ContextVar[str | None] = ContextVar("document", default=None)

# Extra fields a caller may attach with ``extra={...}``; anything else is dropped.
_ALLOWED_EXTRA = (
    "event",
    "seq",
    "at",
    "network",
    "recipient",
    "agency",
    "status",
    "method",
    "path",
    "ms",
    "detail",
)
# Keys that never leave in a log line, even nested in an event's detail (defence in depth).
_SECRET_KEYS = re.compile(r"subject|content|body|package|attachment|password|secret|private|key$", re.I)
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def clean_request_id(raw: str | None) -> str:
    """A client's X-Request-Id if it is a short plain token, else a fresh one (no log injection)."""
    if raw and _SAFE_ID.fullmatch(raw):
        return raw
    return secrets.token_hex(8)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@contextmanager
def request_context(request_id: str, document: str | None = None) -> Iterator[None]:
    """Run a block (a request, a background job) under a request id and, when known, a document id."""
    tokens = (REQUEST_ID.set(request_id), DOCUMENT.set(document))
    try:
        yield
    finally:
        REQUEST_ID.reset(tokens[0])
        DOCUMENT.reset(tokens[1])


def redact(detail: Mapping[str, Any]) -> dict[str, Any]:
    """An event detail without any key that could hold content or a secret."""
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if _SECRET_KEYS.search(key):
            continue
        out[key] = _redacted(value)
    return out


# Most values are these: tested first, they skip the Mapping check (an ABC's, slower by ten
# times; eleven of them a delivery-log line).
_PLAIN = (str, int, float)


def _redacted(value: Any) -> Any:
    """A value as a log line may show it: a mapping redacted, anything else as it is."""
    return redact(value) if not isinstance(value, _PLAIN) and isinstance(value, Mapping) else value


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", "document", ...}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # Every line names a request: the one it was written for, or "-" for the node's own work.
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get() or "-",
            "document": getattr(record, "document", None) or DOCUMENT.get(),
        }
        for key in _ALLOWED_EXTRA:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = _redacted(value)
        if record.exc_info:
            # The traceback names code, never data: locals are not part of it.
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


def configure(*, json_lines: bool = True, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send the gateway's logs to ``stream`` (stderr), as JSON lines unless ``json_lines`` is False."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line of ours names a source line, thread or process: don't gather them for every record
    # (the logging HOWTO's "Optimization"; a delivery-log line 28 -> 23.5 µs, about 7 a document).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiohttp's own access log would be a second, unstructured line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class EventLines:
    """Writes one JSON log line per delivery-log record, under the request that caused it
    (an ``EventFeed`` observer: only committed records are logged, once each)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("gateway.events")

    def __call__(self, events: list[FeedEvent]) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        for e in events:
            self._log.info(
                "%s",
                e.kind,
                extra={
                    "request_id": e.request_id,
                    "document": e.document,
                    "event": e.kind,
                    "seq": e.seq,
                    "at": e.at.isoformat(),
                    "network": e.network,
                    "recipient": e.recipient,
                    "detail": redact(e.detail),
                },
            )
