"""Structured log lines: one JSON object per line (or plain text for a terminal).

Only CLIs call `configure_logging`; library code just uses `logging.getLogger(__name__)`.
A line about one event carries its ids as keys, not inside the message, so a log platform
filters by them: `logger.info("triggered a run", extra=keys(event_id=..., run_id=..., entry_id=...))`
gives `{"msg": "triggered a run", "event_id": ..., "run_id": ..., "entry_id": ...}` (in text
format: `triggered a run event_id=... run_id=... entry_id=...`). User ids only where
docs/security.md's data-minimisation control (C8) allows: the listener's accept line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# What LOG_FORMAT may say: one JSON object per line, or plain text.
LOG_FORMATS = ("json", "text")

# The keys a line about one event may carry (and nothing else from `extra`).
CONTEXT_KEYS = ("event_id", "run_id", "entry_id", "user_id", "outcome", "reason", "decision")


def keys(**values: object) -> dict[str, object]:
    """`extra` for a log call: the given context keys that have a value."""
    unknown = set(values) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"not a log context key: {sorted(unknown)}")
    return {key: value for key, value in values.items() if value is not None}


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {key: getattr(record, key) for key in CONTEXT_KEYS if getattr(record, key, None) is not None}


def log_event(logger: logging.Logger, level: int, msg: str, *args: object, **context: object) -> None:
    """A line about one event from code that also runs inside Airflow (the DAG's tasks and
    callbacks): Airflow's task logging is structlog, which drops stdlib `extra`, so there the
    context goes to structlog as keys; elsewhere to `logger` as `extra`."""
    values = keys(**context)
    import structlog

    if structlog.is_configured():  # an Airflow task, dag-processor or scheduler process
        structlog.get_logger(logger.name).log(level, msg % args if args else msg, **values)
    else:
        logger.log(level, msg, *args, extra=values)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        return f"{line} " + " ".join(f"{k}={v}" for k, v in context.items()) if context else line


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(component: str, fmt: str = "json", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; the listener logs the outcome itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
