"""structlog JSON logging: one line per event with service, instance, task_id and trace_id.

``task_id`` and ``trace_id`` are bound per message through structlog's context variables, so
every line a handler logs carries them without passing a logger around.

Every line goes to stderr and, once a service has started ``BUS_COPY``, also to the bus: the
last processor hands the rendered line to a bounded queue, and a task publishes what is queued
with core NATS publishes on ``qubus.log.<service>.<owner>``: ``<owner>`` is the user who owns
the line's task (its ``task_id``'s first token), ``~`` for a line about no task, so that a user
may read the lines about its own tasks only (``qubus.bus.auth``). Each publish carries every
line of one owner queued within ``LOG_LINGER_S`` of the first, newline-separated
(``split_lines`` takes a message apart), to about ``LOG_BATCH_BYTES`` in all: a busy service so
sends one message per owner every ``LOG_LINGER_S`` instead of one per line, which the server
stores as one. Logging never waits
for the bus: when the queue is full (the server is slow or away), the line is dropped from the
bus copy, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client

from qubus.bus.ids import TASK_ID

LOG_SUBJECT_PREFIX = "qubus.log"
LOG_QUEUE_LINES = 1024
LOG_BATCH_BYTES = 64 * 1024
"""Lines are taken from the queue for one round of publishes while they hold fewer bytes than
this."""
LOG_LINGER_S = 0.1
"""How long the publisher waits after a line for more to send with it (a stage logs about ten
lines per task: sent one message each, they were a tenth of the bus's messages under load)."""
NO_OWNER = "~"
"""The owner token of a log line about no task (no user name can be it)."""


def log_subject(service: str, owner: str = "*") -> str:
    """The subject of ``service``'s log lines about ``owner``'s tasks (``*``: anyone's)."""
    return f"{LOG_SUBJECT_PREFIX}.{service}.{owner}"


def owner_of(task_id: object) -> str:
    """The owner token of a log line bound to ``task_id`` (``NO_OWNER`` for none)."""
    if isinstance(task_id, str) and TASK_ID.match(task_id):
        return task_id.partition(".")[0]
    return NO_OWNER


class BusCopy:
    """Copies rendered log lines to a NATS subject without ever blocking the caller.

    Args:
        maxsize: Lines held while the publisher catches up; more are dropped.

    Attributes:
        published: Lines handed to the connection.
        dropped: Lines lost to a full queue or a failed publish.
    """

    def __init__(self, maxsize: int = LOG_QUEUE_LINES) -> None:
        self.maxsize = maxsize
        self.published = 0
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None

    def offer(self, line: str, owner: str = NO_OWNER) -> None:
        """Queue ``line`` (about a task of ``owner``'s) for publication if a publisher runs;
        safe from any thread."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._put(line, owner)
            return
        try:
            self._loop.call_soon_threadsafe(self._put, line, owner)
        except RuntimeError:  # the loop has closed
            self.dropped += 1

    def _put(self, line: str, owner: str) -> None:
        if self._queue is None:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait((line, owner))
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self, nc: Client, prefix: str) -> None:
        """Publish queued lines on ``<prefix>.<owner>`` until ``stop()``."""
        self._queue = asyncio.Queue(self.maxsize)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._drain(nc, prefix, self._queue))

    async def _drain(self, nc: Client, prefix: str, queue: asyncio.Queue[tuple[str, str]]) -> None:
        while True:
            batch = [await queue.get()]
            size = len(batch[0][0])
            await asyncio.sleep(LOG_LINGER_S)
            while not queue.empty() and size < LOG_BATCH_BYTES:
                batch.append(queue.get_nowait())
                size += len(batch[-1][0]) + 1
            by_owner: dict[str, list[str]] = {}
            for line, owner in batch:
                by_owner.setdefault(owner, []).append(line)
            try:
                for owner, lines in by_owner.items():
                    try:
                        await nc.publish(f"{prefix}.{owner}", "\n".join(lines).encode())
                        self.published += len(lines)
                    except nats.errors.Error:  # closed, or the reconnect buffer is full
                        self.dropped += len(lines)
            finally:
                for _ in batch:
                    queue.task_done()

    async def stop(self, *, timeout: float = 2.0) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), then stop copying."""
        queue, task = self._queue, self._task
        self._loop = self._queue = self._task = None
        if queue is None or task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.dropped += queue.qsize()


#: The process's one bus copy of its log (a process logs through one structlog setup).
BUS_COPY = BusCopy()


def split_lines(data: bytes) -> list[str]:
    """The log lines of one message published by ``BusCopy`` (one or more, newline-separated;
    a rendered line holds no raw newline, JSON escapes it)."""
    return [line for line in data.decode(errors="replace").split("\n") if line]


_RENDER = structlog.processors.JSONRenderer()


def _render_and_copy(logger: Any, method: str, event: dict[str, Any]) -> str:
    """The last processor: render the line as JSON, offer it to ``BUS_COPY`` under its
    task's owner, pass it on to stderr."""
    line = _RENDER(logger, method, event)
    BUS_COPY.offer(line, owner_of(event.get("task_id")))
    return line


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written, not as it was when logging was
    configured: a program (or a test runner) that swaps it and closes the old one leaves no
    logger writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(service: str, instance: str, level: str = "info") -> None:
    """Send JSON lines to stderr (and to ``BUS_COPY``), each carrying ``service`` and
    ``instance``."""
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
            _render_and_copy,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, instance=instance)


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger()
