"""objfs.logs — how the node logs: one line per event, text or JSON, with the request id.

`setup_logging` is called once by the CLI. Text lines are
`LEVEL logger: message [request_id]`; JSON lines are one object each with
`time`, `level`, `logger`, `message` and, when the event happened inside an S3
request, `request_id` (the `x-amz-request-id` the client got), so a client's
failure can be found in the journal. An event is one line whatever it holds
(journald and most collectors make each line an entry): in text, newlines in
a message or its traceback are written as the two characters `\n` (read it
back with `sed 's/\\n/\n/g'`); in JSON the traceback is the `traceback` field.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

# Set by the S3 face for the task that serves a request; every task it starts
# inherits it (trio copies the context).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)  # the traceback, if any, after a newline
        rid = getattr(record, "request_id", "")
        if rid:
            message = record.getMessage()
            head = f"{record.levelname} {record.name}: {message}"
            line = f"{head} [{rid}]{line[len(head) :]}"
        return line.replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            event["request_id"] = rid
        if record.exc_info:
            event["traceback"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def setup_logging(level: str = "info", log_format: str = "text") -> None:
    """Send every logger's events to stderr, one line (one JSON object) each."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
