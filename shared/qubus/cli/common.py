"""What several ``qubus`` command groups share: usage errors and the argument types that raise
them, the default fleet, a client of the running stack, and reading the stored task events.

This module imports nothing heavy at the top: every command's parser is built from it, and
``qubus --help`` should answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from qubus.errors import QubusError

if TYPE_CHECKING:
    from qubus.bus.connection import StoredEvent
    from qubus.client.aio import Client

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNFINISHED = 3
EXIT_INTERRUPTED = 130
"""``qubus`` exit statuses besides 0 (``qubus.cli.main.EXIT_STATUS`` says what each means)."""

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(QubusError):
    """The command line asks for something impossible: ``qubus`` exits with status 2."""

    code = "usage"


def task_id(text: str) -> str:
    """An argparse type: a task id, refused before anything is asked of the stack (``*`` and
    ``>`` would be subject wildcards)."""
    from qubus.bus.ids import check_task_id

    try:
        return check_task_id(text)
    except QubusError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def number_in(
    kind: Callable[[str], float], low: float | None, high: float | None, *, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` (int or float) within ``[low, high]`` (``low``
    excluded when ``low_open``); either bound may be None."""
    above = "greater than" if low_open else "at least"
    if low is not None and high is not None and not low_open:
        wanted = f"from {low:g} to {high:g}"
    elif low is not None:
        wanted = f"{above} {low:g}" + (f" and at most {high:g}" if high is not None else "")
    else:
        wanted = f"at most {high:g}"
    name = "a whole number" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high) or value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def parse_since(text: str, *, now: float) -> float:
    """The Unix time ``--since`` names: a duration before ``now`` or an ISO 8601 time.

    Args:
        text: ``90s``, ``15m``, ``2h``, ``1.5d``, or an ISO time such as
            ``2025-06-01T12:00`` (UTC unless it carries an offset).
        now: The current Unix time.

    Raises:
        UsageError: ``report.since`` if ``text`` is neither.
    """
    match = DURATION.match(text)
    if match:
        return now - float(match[1]) * SECONDS_PER_UNIT[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration (90s, 15m, 2h, 1d) nor an ISO 8601 time",
            code="report.since",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def default_fleet() -> tuple[str, ...]:
    """The QPU node ids of the default fleet (``qubus.devices.profiles.DEFAULT_FLEET``)."""
    from qubus.devices.profiles import DEFAULT_FLEET as fleet

    return tuple(fleet)


@contextlib.asynccontextmanager
async def connected(identity: str = "") -> AsyncIterator[Client]:
    """A client of the running stack: the server in QUBUS_NATS_URL, else the one ``qubus up``
    recorded; as the user of QUBUS_NATS_NKEY, else as ``identity`` (default ``local``) of a
    secured ``qubus up`` (``Client.connect_configured``).

    Raises:
        QubusError: ``nats.unconfigured`` if there is no server; ``nats.unreachable`` if no
            server answers there; ``auth.denied`` if a request went unanswered because the
            server refused it to this user; ``stack.unavailable`` if the server has none of
            the stack's streams (no qubus stack has run there).
    """
    import nats.errors
    import nats.js.errors

    from qubus.client.aio import Client

    client = await Client.connect_configured(identity)
    try:
        yield client
    except nats.errors.TimeoutError:
        if client.bus.denied is None:
            raise
        raise QubusError(
            f"user {client.user or 'anonymous'} is not allowed this ({client.bus.denied}); "
            "weights, feedback and pilots need the operator's seed (QUBUS_NATS_NKEY)",
            code="auth.denied",
        ) from None
    except nats.js.errors.NotFoundError as exc:
        if exc.err_code != STREAM_NOT_FOUND:
            raise
        raise QubusError(
            f"no qubus stack on {client.bus.url}: its server has none of the stack's streams; "
            "start one with `qubus up` or set QUBUS_NATS_URL to a stack's server",
            code="stack.unavailable",
        ) from None
    finally:
        await client.close()


STREAM_NOT_FOUND = 10059
"""JetStream's error code for a stream (or KV bucket) that does not exist."""


async def read_task_events(client: Client, *, since: float | None) -> list[StoredEvent]:
    """Every task event the client may read (``Client.task_subjects``) in stream
    ``QUBUS_TASKS`` stored at or after Unix time ``since``
    (all if None), in stream order, with a progress bar on a terminal. Events stored after
    the reading starts are not read."""
    from qubus.bus.connection import STREAM, stored_event
    from qubus.bus.progress import Progress

    with Progress(0, "reading task events") as progress:
        msgs = client.read_stream(STREAM, client.task_subjects, since=since, progress=progress)
        return [event async for msg in msgs if (event := stored_event(msg)) is not None]
