"""The life of a service process: configure, connect, serve, stop on a signal, drain.

A service module only declares what it serves::

    async def setup(rt: Runtime) -> None:
        await rt.consume(Stage("parser", [TaskIngested], handle))

    def main() -> None:
        run_service("parser", setup)

Every process also answers the ``$SRV`` health verbs (``qubus.bus.health``) for the stages and
request subjects it registered here, and copies its log lines to ``qubus.log.<service>.<owner>``
(``qubus.bus.logs``).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import structlog
import uvloop
from nats.aio.msg import Msg

from qubus.bus import codec, logs
from qubus.bus.auth import service_user
from qubus.bus.config import Settings
from qubus.bus.connection import (
    H_CONTENT_TYPE,
    H_SUBJECT,
    H_TYPE,
    Bus,
    NodeDirectory,
    bus_unavailable,
)
from qubus.bus.consumer import Stage, StageRunner
from qubus.bus.health import ERROR, Endpoint, HealthResponder
from qubus.bus.messages import Model, ServiceReady
from qubus.bus.sampler import CpuSampler
from qubus.bus.schedpolicy import batch_scheduling
from qubus.bus.stackfile import resolve_nats_url
from qubus.errors import BUS_UNAVAILABLE, InvalidPayload, QubusError

log = logs.get_logger()

M = TypeVar("M", bound=Model)


@dataclass
class Runtime:
    """What ``setup`` gets: settings, the bus, and ways to register work and cleanup.

    Every stage and request subject registered here is counted and reported by ``health``.
    """

    service: str
    settings: Settings
    bus: Bus
    node: str | None
    stack: AsyncExitStack
    health: HealthResponder
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def consume(self, stage: Stage) -> StageRunner:
        """Run ``stage`` until the service stops; in-flight messages finish first."""
        runner = StageRunner(
            self.bus,
            stage,
            ack_wait_s=self.settings.ack_wait_s,
            max_deliver=self.settings.max_deliver,
        )
        await runner.start()
        self.stack.push_async_callback(runner.stop)
        self.health.add(runner.endpoint)
        return runner

    async def node_directory(self) -> NodeDirectory:
        """A ``NodeDirectory`` following the fleet for as long as the service runs."""
        directory = NodeDirectory(self.bus)
        await directory.start()
        self.stack.push_async_callback(directory.stop)
        return directory

    async def serve(
        self,
        subject: str,
        request_cls: type[M],
        handler: Callable[[M, dict[str, str]], Awaitable[Model]],
        *,
        max_bytes: int | None = None,
        name: str | None = None,
        concurrency: int = 1,
    ) -> None:
        """Answer requests on ``subject`` (queue group = service name) with ``handler``, up to
        ``concurrency`` at once (1: one after another, as nats-py calls a subscription's
        callback; more: each in a task of its own, the next request waiting for a free place).

        Requests are msgpack, or JSON when their ``Content-Type`` is ``application/json``;
        the reply uses the request's encoding. An expected error is answered with the
        ``Nats-Service-Error``/``Nats-Service-Error-Code`` headers and the body
        ``{code, message, line, column}``; an unexpected one is logged with its traceback and
        answered as ``internal.error``; JetStream not answering (a lost server, a leader
        election: ``qubus.bus.connection.bus_unavailable``) is answered as ``bus.unavailable``,
        which clients retry. Requests are
        counted by outcome (``ok``, ``refused``, ``error``) on an endpoint named after the
        subject's last token, or ``name``. The handler's headers carry ``Qubus-Subject``, the
        subject the request arrived on (set here, whatever the requester sent: on a secured
        bus the subject, unlike a header, is something the server checked).
        """
        endpoint = Endpoint(name or subject.rsplit(".", 1)[-1], subject, self.service, "request")
        self.health.add(endpoint)

        async def answer(msg: Msg) -> None:
            if not msg.reply:
                return
            clock = time.perf_counter_ns()
            outcome, error = "ok", None
            content_type = (msg.headers or {}).get(H_CONTENT_TYPE)
            json_reply = content_type == codec.JSON
            try:
                if max_bytes is not None and len(msg.data) > max_bytes:
                    raise InvalidPayload(
                        f"request is {len(msg.data)} bytes; the limit is {max_bytes}",
                        code="payload.too_large",
                    )
                request = codec.decode(msg.data, request_cls, content_type=content_type)
                reply = await handler(request, {**(msg.headers or {}), H_SUBJECT: msg.subject})
                body = codec.encode_json(reply) if json_reply else codec.encode(reply)
                headers = {H_TYPE: reply.TYPE, H_CONTENT_TYPE: content_type or codec.MSGPACK}
            except QubusError as exc:
                log.info("request.refused", subject=subject, code=exc.code, error=exc.message)
                body, headers = _error_reply(exc, json_reply)
                outcome = "refused"
            except Exception as exc:
                if bus_unavailable(exc):
                    log.warning("request.bus_unavailable", subject=subject, error=repr(exc))
                    answer = QubusError(
                        "JetStream could not answer for now (a server lost or a leader being "
                        f"elected: {type(exc).__name__}); retry shortly",
                        code=BUS_UNAVAILABLE,
                    )
                else:
                    log.exception("request.failed", subject=subject)
                    answer = QubusError(f"{type(exc).__name__}: {exc}", code="internal.error")
                body, headers = _error_reply(answer, json_reply)
                outcome, error = ERROR, exc
            await self.bus.nc.publish(msg.reply, body, headers=headers)
            endpoint.record(outcome, time.perf_counter_ns() - clock, error)

        respond = answer if concurrency == 1 else _at_most(concurrency, answer, self.stack)
        sub = await self.bus.nc.subscribe(subject, queue=self.service, cb=respond)
        self.stack.push_async_callback(sub.drain)

    def background(self, coro: Awaitable[Any]) -> None:
        """Run a periodic or long-lived task, cancelled when the service stops."""
        task = asyncio.ensure_future(coro)

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.stack.push_async_callback(cancel)

    def every(self, interval_s: float, fn: Callable[[], Awaitable[None]]) -> None:
        """Call ``fn`` every ``interval_s`` until the service stops; failures are logged."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await fn()
                except Exception:
                    log.warning("periodic.failed", task=fn.__name__, exc_info=True)

        self.background(loop())


def _at_most(
    limit: int, handle: Callable[[Msg], Awaitable[None]], stack: AsyncExitStack
) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback that runs ``handle`` for each message in a task of its own, at
    most ``limit`` at once: it returns once the message's task has started (waiting for a free
    place first), so the subscription reads on. The tasks still running when the service
    stops are awaited after the subscription has drained (``stack``)."""
    places = asyncio.Semaphore(limit)
    running: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        running.discard(task)
        places.release()

    async def finish() -> None:
        await asyncio.gather(*running, return_exceptions=True)

    async def respond(msg: Msg) -> None:
        await places.acquire()
        task = asyncio.create_task(handle(msg))
        running.add(task)
        task.add_done_callback(done)

    stack.push_async_callback(finish)  # unwound after the drain pushed later
    return respond


def _error_reply(error: QubusError, json_reply: bool) -> tuple[bytes, dict[str, str]]:
    info = error.to_dict()
    body = json.dumps(info).encode() if json_reply else msgpack.packb(info)
    headers = {
        "Nats-Service-Error": error.message[:512],
        "Nats-Service-Error-Code": error.code,
        H_CONTENT_TYPE: codec.JSON if json_reply else codec.MSGPACK,
    }
    return body, headers


Setup = Callable[[Runtime], Awaitable[None]]

GC_THRESHOLDS = (20_000, 20, 20)
"""The cyclic collector's thresholds in a service and its workers (Python's are 700, 10, 10).
A stage allocates thousands of short-lived objects a task (events, cirq operations, numpy
arrays), nearly all freed by reference counting: at Python's thresholds the collector ran
1,178 times and took 1.2 s of the 17.7 s of CPU of ``benchmarks/stagework.py --tasks 200
--rounds 2``, at these 34 times and 0.3 s, the stages' own work 3 % less a task."""


def run_service(service: str, setup: Setup, *, node: str | None = None) -> None:
    """Run a service process until SIGTERM or SIGINT, then drain and exit."""
    settings = Settings()
    instance = settings.instance or f"{socket.gethostname()}-{os.getpid()}"
    logs.configure(service, instance, settings.log_level)
    gc.set_threshold(*GC_THRESHOLDS)  # before any worker is forked: they inherit it
    if settings.sched_batch:
        batch_scheduling()  # its workers inherit it too
    sampler = None
    if settings.profile_dir:
        label = service if node is None else f"{service}-{node}"
        sampler = CpuSampler(Path(settings.profile_dir) / f"{label}-{os.getpid()}.txt")
        sampler.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(service, setup, settings, instance, node))
    finally:
        if sampler is not None:
            sampler.stop()


async def _serve(
    service: str, setup: Setup, settings: Settings, instance: str, node: str | None
) -> None:
    url = resolve_nats_url(settings)
    nkey = settings.nats_nkey
    # its identity is its service's (or node's), whatever its seed file is called
    user = service_user(service, node) if nkey else ""
    bus = Bus(url, service=service, instance=instance, nkey=nkey, user=user)
    if node is not None:
        structlog.contextvars.bind_contextvars(node=node)
    description = (inspect.getdoc(inspect.getmodule(setup)) or "").split("\n", 1)[0]
    health = HealthResponder(
        bus, service=service, instance=instance, node=node, description=description
    )
    async with AsyncExitStack() as stack:
        rt = Runtime(service, settings, bus, node, stack, health)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rt.stop.set)
        await bus.connect()
        stack.push_async_callback(bus.close)  # runs last: after every consumer has stopped
        await logs.BUS_COPY.start(bus.nc, f"{logs.LOG_SUBJECT_PREFIX}.{service}")
        stack.push_async_callback(logs.BUS_COPY.stop)
        await bus.ensure_topology(  # with credentials: create, never change (the operator's)
            duplicate_window_s=settings.duplicate_window_s,
            retention_s=settings.task_retention_s,
            replicas=settings.stream_replicas,
            update=not nkey,
            trace_ttl_s=settings.trace_ttl_s,
        )
        await setup(rt)
        # What import and set-up made lives as long as the process: kept out of the cyclic
        # collector's sight, a full collection takes microseconds instead of some 100 ms
        # (cirq's modules alone are ~230,000 tracked objects), a pause every stage would
        # otherwise add to some tasks' latency.
        gc.freeze()
        await health.start()
        stack.push_async_callback(health.stop)
        await bus.announce_ready(
            ServiceReady(service=service, instance=instance, pid=os.getpid(), node=node)
        )
        log.info("service.ready", url=url, node=node)
        await rt.stop.wait()
        log.info("service.stopping")
    log.info("service.stopped")
