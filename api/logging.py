"""Structured logging: one JSON object per line, carrying the request id of the request being served.

Log records never carry tokens, secrets or private keys: messages are short event names with fields, and a
redaction pass replaces anything that looks like a bearer token, JWT or PEM block before it is written.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_REDACTIONS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # JWS compact
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
)
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


def redact(text: str) -> str:
    for pattern in _REDACTIONS:
        text = pattern.sub("[redacted]", text)
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line: ts, level, logger, event, request_id and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        rid = request_id_var.get()
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through the JSON formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    quiet_validation_libraries()
    # uvicorn's own access log repeats ours without the request id
    logging.getLogger("uvicorn.access").disabled = True


VALIDATION_LIBRARY_LOGGERS = ("pyhanko.sign.validation", "pyhanko_certvalidator", "pyhanko.sign.diff_analysis")


def quiet_validation_libraries() -> None:
    """pyHanko logs every signature it cannot validate (an untrusted root, a revoked signer) as a WARNING with a
    traceback: for a validation service those are verdicts, reported in the validation report, not faults of the
    process; only their ERRORs (a processing error inside pyHanko) reach the log."""
    for name in VALIDATION_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
