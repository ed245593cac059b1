"""Structured logs: one JSON object per line (machines) or ``key=value`` text (humans).

Configured by the app's lifespan and by ``catsdogs serve`` (for uvicorn's own loggers), never at import.
The request id of the current request is attached to every record logged while it is handled.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_HANDLER_NAME = "catsdogs-serve"
# Not extra fields: the LogRecord's own attributes, and uvicorn's ANSI-coloured copy of the message.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
    rid = request_id_var.get()
    if rid and "request_id" not in fields:
        fields["request_id"] = rid
    return fields


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "message": ..., <extra fields>}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # several workers write to the same stream
        }
        out.update(_extra_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


# C0 and C1 control characters (newline, carriage return, ESC of ANSI sequences, ...) and the Unicode
# line separators: a request path may carry any of them (%0a, %1b), and one must not forge a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``): one line, no ANSI."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """``2025-01-01 12:00:00 INFO catsdogs.access: request method=POST route=/predict status=200 ...``

    One record is one line: control characters in the message and the fields are escaped. A traceback
    follows on lines indented by two spaces, so that no line of it can pass for a record of its own.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        fields = _extra_fields(record)
        if fields:
            line += " " + " ".join(f"{escape_control(str(k))}={escape_control(str(v))}" for k, v in fields.items())
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "".join("\n  " + escape_control(t) for t in trace.splitlines())
        return line


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str = "json", level: str = "INFO") -> None:
    """Install (or replace) the service's handler on the root logger; idempotent."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Our middleware writes the access log (with request id, route and prediction): uvicorn's is redundant.
    logging.getLogger("uvicorn.access").disabled = True


def uvicorn_log_config(log_format: str = "json", level: str = "INFO") -> dict[str, Any]:
    """dictConfig for uvicorn's loggers (applied in every worker process), in the same format as ours."""
    factory = "catsdogs.serve.logging.JsonFormatter" if log_format == "json" else "catsdogs.serve.logging.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": factory}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
