"""The one consumer wrapper every pipeline stage runs behind.

A stage is a typed coroutine ``async def handle(event, ctx) -> TaskEvent | None``. This module
does everything else, once: a durable pull consumer shared by all replicas, decoding and
validation, trace context and log binding, ``in_progress`` heartbeats while the handler runs,
publishing the result with ``Nats-Msg-Id`` and ``traceparent``, and the acknowledgement policy:

- result published and acknowledged by JetStream → ack;
- expected error (``QubusError``) → publish ``rejected`` or ``failed`` for the task → ack;
- ``Retry`` → nak with its delay (on the last allowed delivery: ``failed``);
- a result larger than the bus's payload limit → publish ``rejected`` (``payload.too_large``)
  → ack: it would be as large again, so it is never retried;
- undecodable or invalid payload → publish ``rejected`` → term (never redelivered);
- unexpected exception → logged with traceback, nak with exponential backoff; on the last
  allowed delivery the task is published as ``failed`` (``internal.error``) instead.

Each message handled is counted on the runner's ``endpoint`` by outcome (``ok``, ``rejected``,
``failed``, ``retry``, ``invalid``, ``error``) with its handling time, and as ``redelivered``
if it was delivered before; together with the consumer's queue lag (``lag()``) these are what
the service reports on ``$SRV.STATS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from qubus.bus import codec
from qubus.bus.connection import H_TYPE, STREAM, Bus
from qubus.bus.durable import (
    CONSUMER_GONE,
    FLOOR_INTERVAL_S,
    consumer_missing,
    ensure_durable,
    record_floor,
)
from qubus.bus.health import ERROR, Endpoint
from qubus.bus.logs import get_logger
from qubus.bus.messages import ErrorInfo, NodeEvent, TaskEvent, TaskFailed, TaskRejected
from qubus.bus.natsclient import Delivery, Pull, delivery
from qubus.bus.tracing import TraceContext
from qubus.errors import InvalidPayload, QubusError, Retry

log = get_logger()

FETCH_WAIT_S = 5.0
"""How long an idle worker's pull request waits for a message before it is sent again. Each
expiry is a request and a status reply: at 1 s, the stack's ~130 idle workers (the allocator's
32, each QPU node's 16) made some 260 messages a second, about a tenth of the bus's traffic
under load. ``stop`` does not wait for it: it cancels the workers that hold no message."""


@dataclass
class Context:
    """What a handler may use besides its input event."""

    bus: Bus
    trace: TraceContext
    started: float
    _msg: Msg
    _delivery: Delivery

    @property
    def deliveries(self) -> int:
        """Times the input event has been delivered, this one included."""
        return self._delivery.delivered

    @property
    def backlog(self) -> int:
        """Messages of the stage's consumer not yet delivered to any replica when this one was
        (0: none was waiting behind it)."""
        return self._delivery.pending

    @property
    def sequence(self) -> int:
        """The input event's sequence in the task stream."""
        return self._delivery.stream_sequence

    @property
    def queue_wait_s(self) -> float:
        """Seconds between the input event's publication and the start of its handling."""
        return max(0.0, self.started - self._delivery.timestamp_s)

    async def publish(
        self,
        event: TaskEvent,
        *,
        msg_id: str | None = None,
        after: tuple[str, int] | None = None,
    ) -> bool:
        """Publish an intermediate event (e.g. ``running``) before the handler's result
        (``msg_id``: a de-duplication id other than the event's own; ``after``: stored only
        while that subject's last message is at that sequence, ``Bus.publish_event``)."""
        return await self.bus.publish_event(
            event, trace=self.trace, started=self.started, msg_id=msg_id, after=after
        )

    async def in_progress(self) -> None:
        """Tell JetStream the message is still being worked on (resets its ack timer)."""
        await self._msg.in_progress()


Handler = Callable[[TaskEvent, Context], Awaitable[TaskEvent | None]]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: which events it consumes and the handler that turns them into one.

    Attributes:
        name: The durable consumer's name, shared by every replica of the stage.
        inputs: The event types consumed; they decide the filter subjects.
        handler: The typed coroutine called once per message.
        subjects: Filter subjects overriding those derived from ``inputs``.
        concurrency: Messages this process handles at once.
        max_ack_pending: Messages in flight across all replicas (1 makes a strict FIFO).
        from_now: A consumer created afresh (none before it, no floor recorded) starts with
            the events stored from then on, not the stream's history: for a stage that only
            needs the events of tasks that began after it (ingestion's ``quota``).
        skip: Tasks (by id, read from the subject) whose messages the stage acknowledges
            without decoding or handling them (outcome ``skipped``): a sweep's points at the
            stages that count a task's end, which a sweep counts once.
    """

    name: str
    inputs: Sequence[type[TaskEvent]]
    handler: Handler
    subjects: Sequence[str] = ()
    concurrency: int = 1
    max_ack_pending: int = 256
    from_now: bool = False
    skip: Callable[[str], bool] | None = None

    @property
    def ends_tasks(self) -> bool:
        """Whether a message the stage cannot handle (invalid, or every delivery of which
        died with its process) ends its task: not for a node's events (``NodeEvent``), which
        any node of the fleet may publish for any task (one node's garbage must not end a task
        another runs), and which arrive for tasks already ended (``completed``)."""
        return not any(issubclass(cls, NodeEvent) for cls in self.inputs)

    def filter_subjects(self) -> list[str]:
        return list(self.subjects) or [cls.subjects() for cls in self.inputs]


@dataclass
class StageRunner:
    """Runs one ``Stage`` on a ``Bus`` until ``stop()``, counting what it handles.

    Attributes:
        endpoint: The stage's counts and queue lag, as ``$SRV.STATS`` reports them.
    """

    bus: Bus
    stage: Stage
    ack_wait_s: float
    max_deliver: int
    endpoint: Endpoint = field(init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)
    _config: ConsumerConfig | None = None
    _floor: int = 0  # the consumer's acknowledgement floor, as last recorded
    _recovering: asyncio.Lock = field(default_factory=asyncio.Lock)
    _waiting: set[asyncio.Task] = field(default_factory=set)  # workers waiting in a fetch
    _in_hand: dict[int, tuple[Msg, float]] = field(default_factory=dict)  # id → (msg, last beat)
    _beats: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.endpoint = Endpoint(
            name=self.stage.name,
            subject=",".join(self.stage.filter_subjects()),
            queue_group=self.stage.name,
            kind="consumer",
            lag=self.lag,
        )

    async def lag(self) -> dict[str, int]:
        """The durable consumer's backlog: messages not yet delivered plus those unacknowledged.

        Raises:
            nats.errors.Error: The consumer cannot be read (e.g. the connection is down).
        """
        info = await self.bus.js.consumer_info(STREAM, self.stage.name, timeout=2.0)
        return {
            "num_pending": info.num_pending or 0,
            "num_ack_pending": info.num_ack_pending or 0,
            "lag": (info.num_pending or 0) + (info.num_ack_pending or 0),
        }

    async def start(self) -> None:
        config = ConsumerConfig(
            durable_name=self.stage.name,
            deliver_policy=DeliverPolicy.NEW if self.stage.from_now else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            # Two spare deliveries beyond ours: a process that dies while publishing the
            # ``failed`` event on the last allowed delivery still gets its task failed.
            max_deliver=self.max_deliver + 2,
            max_ack_pending=self.stage.max_ack_pending,
            filter_subjects=self.stage.filter_subjects(),
        )
        self._config = config
        await ensure_durable(self.bus, config)  # a missing one resumes after its recorded floor
        types = {cls.TYPE: cls for cls in self.stage.inputs}
        for _ in range(self.stage.concurrency):
            pull = Pull(self.bus.nc, STREAM, self.stage.name)
            await pull.start()
            self._workers.append(asyncio.create_task(self._work(pull, types)))
        self._workers.append(asyncio.create_task(self._keep_floor()))
        self._beats = asyncio.create_task(self._heartbeats())

    async def stop(self, *, timeout: float = 30.0) -> None:
        """Finish the messages in hand, then stop fetching."""
        self._stopping.set()
        for worker in self._waiting:
            worker.cancel()  # holds no message: its pull request expires on the server
        if self._workers:
            await asyncio.wait(self._workers, timeout=timeout)
        if self._beats is not None:
            self._beats.cancel()

    async def _work(self, pull: Pull, types: dict[str, type[TaskEvent]]) -> None:
        try:
            await self._fetch_loop(pull, types)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await pull.stop()

    async def _fetch_loop(self, pull: Pull, types: dict[str, type[TaskEvent]]) -> None:
        worker = asyncio.current_task()
        while not self._stopping.is_set():
            self._waiting.add(worker)
            try:
                msg = await pull.next(FETCH_WAIT_S)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.DrainTimeoutError):
                return
            except CONSUMER_GONE:
                await self._recover()
                continue
            except Exception:  # a broken connection is retried; the connection manager logs it
                log.exception("consumer.fetch_failed", stage=self.stage.name)
                await asyncio.sleep(1.0)
                continue
            finally:
                self._waiting.discard(worker)
            try:
                await self.process(msg, types, pull)
            except Exception:  # publish or ack failed: unacked, so it is redelivered
                log.exception("consumer.settle_failed", stage=self.stage.name)

    async def _keep_floor(self) -> None:
        """Record the consumer's acknowledgement floor every ``FLOOR_INTERVAL_S``
        (``qubus.bus.durable``)."""
        while not self._stopping.is_set():
            try:
                self._floor = await record_floor(self.bus, self.stage.name, self._floor)
            except CONSUMER_GONE:
                await self._recover()
            except (nats.errors.Error, TimeoutError):  # reconnecting: the next round records it
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLOOR_INTERVAL_S)

    async def _recover(self) -> None:
        """Create the consumer again after its recorded floor if it was deleted (once, whichever
        worker notices first); else wait a moment (the server is not answering)."""
        async with self._recovering:
            try:
                if self._config is not None and await consumer_missing(self.bus, self.stage.name):
                    log.warning("consumer.lost", stage=self.stage.name, floor=self._floor)
                    await ensure_durable(self.bus, self._config, floor=self._floor)
                    return
            except nats.errors.Error:
                log.warning("consumer.recreate_failed", stage=self.stage.name, exc_info=True)
        await asyncio.sleep(1.0)

    async def process(self, msg: Msg, types: dict[str, type[TaskEvent]], pull: Pull) -> None:
        """Handle one message, which ``pull`` got, end to end, following the acknowledgement
        policy."""
        started = time.time()
        clock = time.perf_counter_ns()
        outcome, error = ERROR, None
        headers = msg.headers or {}
        tokens = msg.subject.split(".")
        task_id = ".".join(tokens[2:4]) if len(tokens) >= 5 else "unknown"
        trace = TraceContext.extract(headers)
        delivered = delivery(msg)
        deliveries = delivered.delivered
        if deliveries > 1:
            self.endpoint.redelivered += 1
        structlog.contextvars.bind_contextvars(task_id=task_id, trace_id=trace.trace_id)
        try:
            if self.stage.skip is not None and self.stage.skip(task_id):
                await self._ack(msg, pull)
                outcome = "skipped"
                return
            try:
                cls = types.get(headers.get(H_TYPE, ""))
                if cls is None:
                    raise InvalidPayload(
                        f"stage {self.stage.name} does not take {headers.get(H_TYPE)!r}",
                        code="payload.unexpected_type",
                    )
                event = codec.decode(msg.data, cls)
            except InvalidPayload as exc:
                log.warning("message.invalid", error=exc.message, subject=msg.subject)
                await self._end(TaskRejected, task_id, exc, trace, started)
                await msg.term()
                outcome = "invalid"
                return
            if not event.stored_on(msg.subject):  # e.g. a node speaking for another node
                log.warning("message.misattributed", subject=msg.subject, own=event.subject())
                await msg.term()  # not the task's fault: nothing is published for it
                outcome = "invalid"
                return
            if deliveries > self.max_deliver:
                # A dead letter: each delivery so far ended without a verdict (the process
                # died handling it: a crash, an out-of-memory kill) or its verdict was lost.
                log.error("stage.dead_letter", deliveries=deliveries)
                dead = QubusError(
                    f"stage {self.stage.name} gave up on the task after {deliveries - 1} "
                    "deliveries: each ended without an answer (its process died handling it)",
                    code="stage.dead_letter",
                )
                await self._end(TaskFailed, event.task_id, dead, trace, started)
                await msg.term()
                outcome = TaskFailed.EVENT
                return
            ctx = Context(self.bus, trace, started, msg, delivered)
            outcome, error = await self._handle(event, ctx, msg, pull)
        except Exception as exc:  # publishing or acknowledging failed; counted, then raised
            error = exc
            raise
        finally:
            self.endpoint.record(outcome, time.perf_counter_ns() - clock, error)
            structlog.contextvars.unbind_contextvars("task_id", "trace_id")

    async def _ack(self, msg: Msg, pull: Pull) -> None:
        """Acknowledge ``msg`` and, unless stopping, ask ``pull`` for the worker's next message
        with the same message (``Pull.ack_next``: one message fewer to the server a hop)."""
        if self._stopping.is_set():
            await msg.ack()
        else:
            await pull.ack_next(msg, FETCH_WAIT_S)

    async def _handle(
        self, event: TaskEvent, ctx: Context, msg: Msg, pull: Pull
    ) -> tuple[str, Exception | None]:
        """Run the handler and settle the message; returns the outcome and any unexpected
        error."""
        self._in_hand[id(msg)] = (msg, time.monotonic())
        try:
            result = await self.stage.handler(event, ctx)
            if result is not None:
                await ctx.publish(result)
            await self._ack(msg, pull)
            # Debug: the task's trace has each stage's event, instance and time already.
            log.debug(
                "stage.done",
                output=result.EVENT if result else None,
                ms=round((time.time() - ctx.started) * 1000, 1),
                deliveries=ctx.deliveries,
            )
            return "ok", None
        except Retry as exc:
            if ctx.deliveries < self.max_deliver:
                log.info("stage.retry", reason=exc.message, delay_s=exc.delay_s)
                await msg.nak(delay=exc.delay_s)
                return "retry", None
            log.warning("stage.retries_exhausted", reason=exc.message)
            await self._end(TaskFailed, event.task_id, exc, ctx.trace, ctx.started)
            await self._ack(msg, pull)
            return TaskFailed.EVENT, None
        except QubusError as exc:
            log.info("stage.ended_task", outcome=exc.outcome, code=exc.code, error=exc.message)
            end = TaskFailed if exc.outcome == "failed" else TaskRejected
            await self._end(end, event.task_id, exc, ctx.trace, ctx.started)
            await self._ack(msg, pull)
            return end.EVENT, None
        except nats.errors.MaxPayloadError:  # as big the next time: never retried
            too_big = InvalidPayload(
                f"stage {self.stage.name}'s result is larger than the bus's payload limit",
                code="payload.too_large",
            )
            log.warning("stage.result_too_large")
            await self._end(TaskRejected, event.task_id, too_big, ctx.trace, ctx.started)
            await self._ack(msg, pull)
            return TaskRejected.EVENT, None
        except Exception as exc:
            if ctx.deliveries >= self.max_deliver:
                log.exception("stage.gave_up", deliveries=ctx.deliveries)
                error = QubusError(f"{type(exc).__name__}: {exc}", code="internal.error")
                await self._end(TaskFailed, event.task_id, error, ctx.trace, ctx.started)
                await self._ack(msg, pull)
            else:
                delay = min(2.0 ** (ctx.deliveries - 1), 30.0)
                log.exception("stage.error", deliveries=ctx.deliveries, retry_in_s=delay)
                await msg.nak(delay=delay)
            return ERROR, exc
        finally:
            del self._in_hand[id(msg)]

    async def _heartbeats(self) -> None:
        """Tell JetStream every message handled for ``ack_wait_s / 3`` since its last beat is
        still being worked on (one loop for all, not a task per message: creating and
        cancelling one cost a good part of a short handler's time) until ``stop`` has let the
        messages in hand finish."""
        period = self.ack_wait_s / 3
        while True:
            await asyncio.sleep(period / 4)
            now = time.monotonic()
            for key, (msg, beat) in list(self._in_hand.items()):
                if now - beat < period or key not in self._in_hand:
                    continue
                self._in_hand[key] = (msg, now)
                try:
                    await msg.in_progress()
                except nats.errors.Error:  # reconnecting: the next beat, or a redelivery, follows
                    log.warning("consumer.heartbeat_failed", stage=self.stage.name)

    async def _end(
        self,
        cls: type[TaskRejected] | type[TaskFailed],
        task_id: str,
        error: QubusError,
        trace: TraceContext,
        started: float,
    ) -> None:
        """Publish the task's terminal ``rejected``/``failed`` event for ``error``; only logged
        by a stage that does not end tasks (``Stage.ends_tasks``: it reads events of tasks that
        may have ended already, e.g. ``completed``)."""
        if not self.stage.ends_tasks:
            log.warning("stage.not_ending_task", code=error.code, error=error.message)
            return
        info = ErrorInfo.model_validate(error.to_dict())
        failures = [ErrorInfo.model_validate(f) for f in getattr(error, "failures", [])]
        if cls is TaskRejected:
            event: TaskEvent = TaskRejected(
                task_id=task_id, stage=self.stage.name, error=info, failures=failures
            )
        else:
            event = TaskFailed(task_id=task_id, stage=self.stage.name, error=info)
        await self.bus.publish_event(event, trace=trace, started=started)
