"""What several ``qubus`` command groups share: the default fleet, a client of the running
stack, and reading the stored task events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats.errors

from qubus.bus import stackfile
from qubus.bus.auth import DEFAULT_USER
from qubus.bus.config import Settings
from qubus.bus.connection import STREAM, StoredEvent, stored_event
from qubus.bus.progress import Progress
from qubus.client.aio import Client
from qubus.errors import QubusError


def default_fleet() -> tuple[str, ...]:
    """The QPU node ids of the default fleet (``qubus.devices.profiles.DEFAULT_FLEET``)."""
    from qubus.devices.profiles import DEFAULT_FLEET as fleet

    return tuple(fleet)


@contextlib.asynccontextmanager
async def connected(identity: str = DEFAULT_USER) -> AsyncIterator[Client]:
    """A client of the running stack: the server in QUBUS_NATS_URL, else the one ``qubus up``
    recorded; as the user of QUBUS_NATS_NKEY, else as ``identity`` of a secured ``qubus up``.

    Raises:
        QubusError: ``nats.unconfigured`` if there is no server; ``auth.denied`` if a request
            went unanswered because the server refused it to this user.
    """
    settings = Settings()
    url = stackfile.resolve_nats_url(settings)
    nkey = stackfile.resolve_nkey(settings, url, identity)
    client = await Client.connect(url, nkey=nkey, user=settings.user)
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
    finally:
        await client.close()


async def read_task_events(client: Client, *, since: float | None) -> list[StoredEvent]:
    """Every task event the client may read (``Client.task_subjects``) in stream
    ``QUBUS_TASKS`` stored at or after Unix time ``since``
    (all if None), in stream order, with a progress bar on a terminal. Events stored after
    the reading starts are not read."""
    with Progress(0, "reading task events") as progress:
        msgs = client.read_stream(STREAM, client.task_subjects, since=since, progress=progress)
        return [event async for msg in msgs if (event := stored_event(msg)) is not None]
