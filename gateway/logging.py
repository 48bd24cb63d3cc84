"""Structured logging: structlog configured once per process (API, worker, or both).

Every line is one JSON object (or a readable console line when ``log_json`` is off) carrying
the context bound with :func:`structlog.contextvars.bind_contextvars` (``correlation_id``,
``document_id``, ``connector``...). Never bind or log names, INS or birth dates: log
identifiers (submission id, person_ref is a local reference) and outcomes only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from gateway.settings import Settings

__all__ = ["configure_logging", "get_logger", "silence_server_access_log"]


class _StderrLogger:
    """Writes each rendered line to the *current* ``sys.stderr`` (test runners swap it)."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _StderrHandler(logging.Handler):
    """Writes formatted records to the *current* ``sys.stderr`` at each emit."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library's logging to stderr, JSON or console."""
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
    # Standard-library loggers (uvicorn, sqlalchemy, alembic) go through the same renderer.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_dui_gateway", False):
            root.removeHandler(old)
    handler._dui_gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    silence_server_access_log()


def silence_server_access_log() -> None:
    """Turn uvicorn's access log off, whoever starts the server: its line quotes the raw path and
    query string (``?patient=<INS>``). The gateway logs its own access line, with the route template."""
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True


def get_logger(name: str) -> Any:
    """A structlog logger (lazy: it follows :func:`configure_logging`); the name is bound as ``logger_name``."""
    return structlog.get_logger(logger_name=name)
