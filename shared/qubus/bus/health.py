"""Health on the bus, following the ``nats.micro`` conventions.

Every service process answers ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS``, each also as
``$SRV.<verb>.<name>`` and ``$SRV.<verb>.<name>.<id>``, with the JSON shapes of
``io.nats.micro.v1.ping_response``, ``info_response`` and ``stats_response``, so ``nats micro
ls``/``info``/``stats`` and ``qubus ps`` read them alike. ``nats.micro.Service`` itself does
not fit: its statistics come only from its own request endpoints, while most of our work is
done by JetStream pull consumers, whose queue lag needs an async ``consumer_info`` call.

A process's *endpoints* are its stages (kind ``consumer``: a durable consumer shared by all
replicas, reported with its queue group set to the consumer's name) and its request subjects
(kind ``request``). Each counts the messages it handled by outcome; ``num_errors`` counts the
unexpected failures (logged with a traceback), not the tasks rightly rejected.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from qubus.bus import logs, metrics
from qubus.bus.connection import Bus
from qubus.version import __version__

PREFIX = "$SRV"
VERBS = ("PING", "INFO", "STATS")
PING_RESPONSE = "io.nats.micro.v1.ping_response"
INFO_RESPONSE = "io.nats.micro.v1.info_response"
STATS_RESPONSE = "io.nats.micro.v1.stats_response"
ERROR = "error"

log = logs.get_logger()

_NOT_A_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


NAME_PREFIX = "qubus-"


def service_name(service: str) -> str:
    """The micro service name of a qubus service (``qubus-parser``)."""
    return f"{NAME_PREFIX}{service}"


def service_id(instance: str) -> str:
    """The micro id of an instance: its name made a single subject token."""
    return _NOT_A_TOKEN.sub("_", instance)


def control_subjects(verb: str, name: str, id_: str) -> list[str]:
    """The three subjects one instance answers ``verb`` on: all, by name, by name and id."""
    return [f"{PREFIX}.{verb}", f"{PREFIX}.{verb}.{name}", f"{PREFIX}.{verb}.{name}.{id_}"]


@dataclass
class Endpoint:
    """One kind of work a process does, with what it counted.

    Attributes:
        name: The stage name, or the request subject's last token.
        subject: The request subject, or the consumer's filter subjects joined by commas.
        queue_group: The service (requests) or the durable consumer (stages).
        kind: ``consumer`` or ``request``.
        outcomes: Messages handled, by outcome (``ok``, ``rejected``, ``error``, ...).
        processing_ns: Time spent handling them.
        redelivered: Of those, the messages delivered before (a consumer's: the earlier
            delivery was nak'ed, or its ack wait ran out, or its process died).
        last_error: The last unexpected error, as ``Type: message``.
        lag: For a consumer, a coroutine returning its queue figures.
    """

    name: str
    subject: str
    queue_group: str
    kind: str
    outcomes: Counter[str] = field(default_factory=Counter)
    processing_ns: int = 0
    redelivered: int = 0
    last_error: str = ""
    lag: Callable[[], Awaitable[dict[str, int]]] | None = None

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())

    @property
    def errored(self) -> int:
        return self.outcomes[ERROR]

    def record(self, outcome: str, elapsed_ns: int, error: BaseException | None = None) -> None:
        """Count one handled message; ``error`` is the exception of an ``error`` outcome."""
        self.outcomes[outcome] += 1
        self.processing_ns += elapsed_ns
        metrics.observe_handled(self.name, outcome, elapsed_ns / 1e9)
        if error is not None:
            self.last_error = f"{type(error).__name__}: {error}"[:512]

    def info(self) -> dict[str, Any]:
        """This endpoint in an ``info_response``."""
        return {
            "name": self.name,
            "subject": self.subject,
            "queue_group": self.queue_group,
            "metadata": {"kind": self.kind},
        }

    async def stats(self) -> dict[str, Any]:
        """This endpoint in a ``stats_response``; ``data`` holds outcomes and queue lag."""
        data: dict[str, Any] = {"kind": self.kind, "outcomes": dict(self.outcomes)}
        if self.kind == "consumer":
            data["redelivered"] = self.redelivered
        if self.lag is not None:
            try:
                data.update(await self.lag())
            except (nats.errors.Error, TimeoutError) as exc:
                data["lag_error"] = repr(exc)
        handled = self.handled
        return {
            "name": self.name,
            "subject": self.subject,
            "queue_group": self.queue_group,
            "num_requests": handled,
            "num_errors": self.errored,
            "last_error": self.last_error,
            "processing_time": self.processing_ns,
            "average_processing_time": self.processing_ns // handled if handled else 0,
            "data": data,
        }


class HealthResponder:
    """Answers the ``$SRV`` verbs for one service process.

    Args:
        bus: The process's bus (connected before ``start``).
        service: The qubus service (``parser``); the micro name is ``qubus-<service>``.
        instance: The process's instance name; its micro id is ``service_id(instance)``.
        node: The QPU node a ``qpu`` process emulates, reported in ``metadata.node``.
        description: One line on what the service does.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        service: str,
        instance: str,
        node: str | None = None,
        description: str = "",
    ) -> None:
        self.bus = bus
        self.name = service_name(service)
        self.id = service_id(instance)
        self.description = description
        self.metadata = {"service": service, "instance": instance, "pid": str(os.getpid())}
        if node is not None:
            self.metadata["node"] = node
        self.endpoints: list[Endpoint] = []
        self.started = time.time()
        self._subscriptions: list[Subscription] = []

    def add(self, endpoint: Endpoint) -> None:
        """Report ``endpoint`` in INFO and STATS."""
        self.endpoints.append(endpoint)

    async def start(self) -> None:
        """Subscribe to the nine control subjects (no queue group: every instance answers)."""
        answers = {"PING": self.ping, "INFO": self.info, "STATS": self.stats}
        for verb in VERBS:
            for subject in control_subjects(verb, self.name, self.id):
                self._subscriptions.append(
                    await self.bus.nc.subscribe(subject, cb=self._answer(answers[verb]))
                )

    def _answer(
        self, build: Callable[[], Awaitable[dict[str, Any]]]
    ) -> Callable[[Msg], Awaitable[None]]:
        """A subscription callback replying with ``build()`` as JSON."""

        async def respond(msg: Msg) -> None:
            if not msg.reply:
                return
            try:
                await msg.respond(json.dumps(await build()).encode())
            except nats.errors.Error:
                log.warning("health.reply_failed", subject=msg.subject, exc_info=True)

        return respond

    async def stop(self) -> None:
        """Stop answering (first thing on shutdown: a stopping instance is no longer listed)."""
        for sub in self._subscriptions:
            await sub.unsubscribe()
        self._subscriptions.clear()

    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": kind,
            "name": self.name,
            "id": self.id,
            "version": __version__,
            "metadata": self.metadata,
        }

    async def ping(self) -> dict[str, Any]:
        """The ``ping_response``."""
        return self._identity(PING_RESPONSE)

    async def info(self) -> dict[str, Any]:
        """The ``info_response``: identity, description and endpoints."""
        return {
            **self._identity(INFO_RESPONSE),
            "description": self.description,
            "endpoints": [endpoint.info() for endpoint in self.endpoints],
        }

    async def stats(self) -> dict[str, Any]:
        """The ``stats_response``, plus ``uptime_s``, the bus copy of the log (``logs``) and the
        process's Prometheus series in text format (``metrics``, ``qubus.bus.metrics``)."""
        started = datetime.fromtimestamp(self.started, UTC)
        return {
            **self._identity(STATS_RESPONSE),
            "started": started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "uptime_s": round(time.time() - self.started, 3),
            "endpoints": [await endpoint.stats() for endpoint in self.endpoints],
            "logs": {"published": logs.BUS_COPY.published, "dropped": logs.BUS_COPY.dropped},
            "metrics": metrics.exposition(),
        }
