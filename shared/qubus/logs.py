"""structlog JSON logging: one line per event with service, instance, task_id and trace_id.

``task_id`` and ``trace_id`` are bound per message through structlog's context variables, so
every line a handler logs carries them without passing a logger around.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(service: str, instance: str, level: str = "info") -> None:
    """Send JSON lines to stderr, each carrying ``service`` and ``instance``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, instance=instance)


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger()
