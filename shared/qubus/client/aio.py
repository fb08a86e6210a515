"""The client SDK: submit circuits, wait for their tasks, read their records and traces, and
look at the services (``$SRV`` health replies) and their log lines.

Any NATS client can do the same with the documented subjects; this is the Python one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgpack
import nats.aio.client
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from qubus.bus.auth import DASHBOARD, DEFAULT_USER, OPERATOR, user_of_seed
from qubus.bus.connection import (
    LOG_STREAM,
    STREAM,
    SUBMIT_SUBJECT,
    TASK_SUBJECTS,
    Bus,
    StoredEvent,
    believed_events,
    bus_unavailable,
    codec,
    stored_event,
)
from qubus.bus.health import NAME_PREFIX, PREFIX
from qubus.bus.ids import (
    check_task_id,
    owner_of,
    split_task_subject,
    submitted_at,
    sweep_of,
    task_subject,
)
from qubus.bus.logs import get_logger, log_subject, split_lines
from qubus.bus.messages import (
    Model,
    SandboxEvaluation,
    SubmitReply,
    SubmitRequest,
    SweepProgress,
    TaskAllocated,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskIngested,
    TaskProgress,
    TaskRejected,
    TaskScored,
    believed,
    event_of,
)
from qubus.bus.progress import Progress
from qubus.bus.tracing import TraceContext
from qubus.errors import BUS_UNAVAILABLE, QubusError
from qubus.scheduling.sweepchunks import sweep_progress

log = get_logger()
T = TypeVar("T")
M = TypeVar("M", bound=Model)

CLOCK_SLACK_S = 5.0
"""How much earlier than its id says a sweep's events are looked for (the id's time is the
ingestion's clock; the stream's is the server's)."""
READER_IDLE_S = 5.0
"""An ephemeral reader's consumer is removed by the server after this long without a fetch."""
BUS_RETRY_S = 30.0
"""How long a submission refused with ``bus.unavailable`` is retried (JetStream elects a new
leader within 4 to 8 s on loopback, ``tests/system/test_cluster.py``)."""


INGESTION_UNAVAILABLE = "ingestion.unavailable"
"""No ingestion process answers ``qubus.submit`` while other services of the stack answer
``$SRV.PING``: ingestion is being restarted (its supervisor restarts it within seconds), so a
submission is retried; given up after ``BUS_RETRY_S`` (then it crash-loops: see its log)."""
STACK_PROBE_S = 0.5
"""How long a submission nobody answered waits for ``$SRV.PING`` answers from the stack."""
RETRIED = frozenset({BUS_UNAVAILABLE, INGESTION_UNAVAILABLE})
"""The refusals ``_retrying`` tries again: the bus or the ingress away for a moment."""


async def _retrying(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """``attempt()``, tried again while the bus or the ingress cannot answer (no JetStream
    reply, ``qubus.bus.connection.bus_unavailable``, or a refusal of ``RETRIED``: a lost
    server, a leader election, ingestion restarting) for up to ``BUS_RETRY_S``; then the last
    error is raised."""
    deadline = time.monotonic() + BUS_RETRY_S
    delay = 0.25
    while True:
        try:
            return await attempt()
        except (nats.errors.Error, QubusError) as exc:
            retried = exc.code in RETRIED if isinstance(exc, QubusError) else bus_unavailable(exc)
            if not retried or time.monotonic() + delay > deadline:
                raise
            log.warning("bus.retry", what=what, error=repr(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def request_reply(
    nc: nats.aio.client.Client,
    subject: str,
    request: Model,
    reply_cls: type[M],
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> M:
    """One msgpack request to a qubus service (``Runtime.serve``) and its decoded reply.

    Raises:
        QubusError: the service refused the request (its ``code`` and message).
        nats.errors.NoRespondersError: nobody serves ``subject``.
        nats.errors.TimeoutError: no reply within ``timeout`` seconds.
    """
    reply = await nc.request(subject, codec.encode(request), timeout=timeout, headers=headers)
    code = (reply.headers or {}).get("Nats-Service-Error-Code")
    if code is not None:
        raise QubusError(msgpack.unpackb(reply.data).get("message", code), code=code)
    return codec.decode(reply.data, reply_cls)


CONNECT_TIMEOUT_S = 3.0
"""How long ``Client.connect`` tries to reach the server before saying there is none."""

CLIENT_RECONNECTS = 10
"""Attempts, 0.5 s apart, to reach a server that went away before a client's connection
closes (and its waits fail with ``nats.lost``) instead of waiting for ever."""

STATUS_OF_EVENT = {
    "completed": "done",
    "rejected": "rejected",
    "failed": "failed",
    "cancelled": "cancelled",
    "running": "running",
    "progress": "running",
    "points": "running",
    "allocated": "queued",
    "replace": "queued",
}
"""The status a task's event gives it; every other (earlier) event: ``pending``."""

STATUSES = ("pending", "queued", "running", "done", "rejected", "failed", "cancelled")
"""Every task status, in the order a task goes through them: ``pending`` while it is parsed,
checked and scored, ``queued`` once placed on a node, ``running`` on it; then one of the
four ends. ``unknown``: the stack has no event of the task."""

FINAL_STATUSES = STATUSES[3:]


class Client:
    """A connection to a qubus stack.

    Args:
        bus: A connected ``Bus``.
        user: The client user it submits and reads as (``qubus.bus.auth``): tasks are
            submitted on ``qubus.submit.<user>`` and read under ``qubus.task.<user>.>``;
            empty on a server without auth (``qubus.submit``, tasks owned by ``anon``).
    """

    def __init__(self, bus: Bus, *, user: str = "") -> None:
        self.bus = bus
        self.user = user

    @classmethod
    async def connect(
        cls, url: str, *, nkey: str = "", user: str = "", timeout: float = CONNECT_TIMEOUT_S
    ) -> Client:
        """Connect to the stack's NATS server at ``url``.

        A connection lost later is tried again ``CLIENT_RECONNECTS`` times, then closed.

        Args:
            url: The NATS server.
            nkey: The user's nkey seed file, for a server that authenticates (``qubus up``
                writes them to ``<state dir>/creds/``).
            user: The user name; by default the seed file's name without ``.nk``.
            timeout: Seconds to try reaching the server.

        Raises:
            QubusError: ``nats.unreachable``: no server answered within ``timeout`` seconds;
                ``auth.refused``: the server does not accept these credentials (or none).
        """
        user = user or user_of_seed(nkey)
        bus = Bus(url, service="client", instance=f"client-{time.time_ns()}", nkey=nkey, user=user)
        try:
            await asyncio.wait_for(
                bus.connect(timeout=timeout, max_reconnect_attempts=CLIENT_RECONNECTS), timeout
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            if "authorization violation" in str(exc).lower():
                who = f"user {user}'s seed {nkey}" if nkey else "a client without an nkey seed"
                raise QubusError(
                    f"the NATS server at {url} refused {who}: set QUBUS_NATS_NKEY to a seed "
                    "file in the creds/ directory `qubus up` printed",
                    code="auth.refused",
                ) from None
            raise QubusError(
                f"no NATS at {url}: start `qubus up` or set QUBUS_NATS_URL",
                code="nats.unreachable",
            ) from None
        return cls(bus, user=user)

    @classmethod
    async def connect_configured(
        cls,
        identity: str = "",
        *,
        url: str | None = None,
        nkey: str | None = None,
        user: str | None = None,
    ) -> Client:
        """Connect as the settings say: to ``url``, else ``QUBUS_NATS_URL``, else the
        ``qubus up`` running on this machine; with the seed file ``nkey``, else
        ``QUBUS_NATS_NKEY``, else that ``qubus up``'s seed of ``identity`` (by default the
        user ``local``) if it is secured; as ``user``, else ``QUBUS_USER``, else the seed
        file's name.

        Raises:
            QubusError: ``nats.unconfigured`` (no URL anywhere), and as ``connect``.
        """
        from qubus.bus import stackfile
        from qubus.bus.config import Settings

        settings = Settings()
        url = url or stackfile.resolve_nats_url(settings)
        if nkey is None:
            nkey = stackfile.resolve_nkey(settings, url, identity or DEFAULT_USER)
        return await cls.connect(url, nkey=nkey, user=user or settings.user)

    def _check_connected(self) -> None:
        """Raises ``nats.lost`` once the connection has closed after its reconnects."""
        if self.bus.nc.is_closed:
            raise QubusError(
                f"lost the connection to NATS at {self.bus.url}: is the stack still up?",
                code="nats.lost",
            )

    @property
    def task_subjects(self) -> str:
        """The task events this client may read: its own, or every task's for the operator,
        the dashboard and on a server without auth."""
        return TASK_SUBJECTS if self._reads_all else f"qubus.task.{self.user}.>"

    @property
    def _reads_all(self) -> bool:
        """It may read every task: the operator, the dashboard, or any client of a server
        without auth."""
        return self.user in ("", OPERATOR, DASHBOARD)

    def _task_subject(self, task_id: str) -> str:
        """``qubus.task.<task_id>.>`` for a well-formed task id this client may read.

        Raises:
            QubusError: ``task.invalid_id`` (not an ``<owner>.<id>``: ``*`` or ``>`` would
                read other tasks), ``auth.not_owner`` (another user's task; the server
                refuses it too).
        """
        owner = owner_of(check_task_id(task_id))
        if not self._reads_all and owner != self.user:
            raise QubusError(
                f"task {task_id} belongs to {owner}, not to {self.user}", code="auth.not_owner"
            )
        return task_subject(task_id, ">")

    async def close(self) -> None:
        await self.bus.close()

    async def submit(self, request: SubmitRequest, *, timeout: float = 10.0) -> SubmitReply:
        """Submit one circuit; returns its task id.

        A refusal with ``bus.unavailable`` (JetStream electing a leader), no answer within
        ``timeout``, and no ingestion process while the rest of the stack answers (ingestion
        restarting: ``INGESTION_UNAVAILABLE``) are retried for up to ``BUS_RETRY_S``
        (``_retrying``); the request gets an idempotency key first if it has none, so a retry
        never creates a second task.

        Raises:
            QubusError: the submission was refused (its ``code`` and message say why);
                ``stack.unavailable`` at once if no service of a stack answers on this server.
        """
        if request.idempotency_key is None:
            request = request.model_copy(update={"idempotency_key": uuid.uuid4().hex})
        headers = {"traceparent": TraceContext.new().traceparent, "Content-Type": codec.MSGPACK}

        async def attempt() -> SubmitReply:
            try:
                return await request_reply(
                    self.bus.nc,
                    f"{SUBMIT_SUBJECT}.{self.user}" if self.user else SUBMIT_SUBJECT,
                    request,
                    SubmitReply,
                    timeout=timeout,
                    headers=headers,
                )
            except nats.errors.NoRespondersError:
                if await self._stack_answers():
                    raise QubusError(
                        "no ingestion process answers on qubus.submit while the stack's other "
                        "services do: is ingestion crash-looping? (qubus ps, qubus logs)",
                        code=INGESTION_UNAVAILABLE,
                    ) from None
                raise QubusError(
                    "no ingestion service answers on qubus.submit: is the stack up?",
                    code="stack.unavailable",
                ) from None

        try:
            return await _retrying(attempt, "submit")
        except nats.errors.TimeoutError:
            raise QubusError(
                f"qubus.submit did not answer within {timeout:g} s", code=BUS_UNAVAILABLE
            ) from None

    async def _follow(
        self, subject: str, take: Callable[[Msg], bool], *, since: float | None, until: float
    ) -> None:
        """Give every message of the task stream on ``subject`` (stored from ``since``, or all)
        to ``take`` until it returns True, reading on from the last one after a lost server or
        a leader election.

        Raises:
            TimeoutError: ``time.monotonic()`` passed ``until`` first.
            QubusError: ``nats.lost`` if the server went away for good.
        """
        read_to = 0
        while True:
            try:
                reader = self.read_stream(
                    STREAM,
                    subject,
                    follow=True,
                    since=since if not read_to else None,
                    after_seq=read_to,
                    until=until,
                )
                async with contextlib.aclosing(reader):  # its consumer let go before returning
                    async for msg in reader:
                        read_to = msg.metadata.sequence.stream
                        if take(msg):
                            return
            except (TimeoutError, nats.errors.Error) as exc:
                if time.monotonic() >= until:
                    raise TimeoutError(f"reading {subject} did not end in time") from None
                self._check_connected()
                log.warning("bus.retry", what="wait", error=repr(exc))
                await asyncio.sleep(0.5)

    async def wait(self, task_id: str, *, timeout: float = 300.0) -> list[StoredEvent]:
        """Every event of the task, once its terminal event (done/rejected/failed) is stored;
        for a sweep point, its events as ``events`` gives them.

        Raises:
            TimeoutError: the task did not end within ``timeout`` seconds.
            QubusError: ``task.invalid_id``; ``nats.lost`` if the server went away.
        """
        point = sweep_of(check_task_id(task_id))
        if point is not None:
            sweep_id, index = point
            return (await self.wait_sweep(sweep_id, index + 1, timeout=timeout))[index]
        events: list[StoredEvent] = []

        def take(msg: Msg) -> bool:
            stored = stored_event(msg)
            if stored is None:
                return False
            events.append(stored)
            kept = believed_events(events) if stored.event.TERMINAL else []
            return bool(kept) and kept[-1] is stored  # not a node's forgery

        try:
            await self._follow(
                self._task_subject(task_id), take, since=None, until=time.monotonic() + timeout
            )
        except TimeoutError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout:g} s") from None
        return believed_events(events)

    async def wait_sweep(
        self, sweep_id: str, points: int, *, timeout: float = 300.0
    ) -> list[list[StoredEvent]]:
        """The events of the sweep's first ``points`` points (``point_events``), once the sweep
        has ended (its QPU node stores every point's end before the sweep's own): one reader
        over the owner's task events from the sweep's submission on.

        Raises:
            TimeoutError: a point did not end within ``timeout`` seconds.
            QubusError: ``task.invalid_id``, ``auth.not_owner``; ``nats.lost``.
        """
        self._task_subject(sweep_id)  # checks the id and that this client may read it
        owner = owner_of(sweep_id)
        shared: list[StoredEvent] = []
        own: list[list[StoredEvent]] = [[] for _ in range(points)]

        def take(msg: Msg) -> bool:
            task_id, _ = split_task_subject(msg.subject)
            point = sweep_of(task_id)
            if task_id != sweep_id and (point is None or point[0] != sweep_id):
                return False
            stored = stored_event(msg)
            if stored is None:
                return False
            if point is None:
                shared.append(stored)
                return stored.event.TERMINAL
            if point[1] < points:
                own[point[1]].append(stored)
            return False

        since = submitted_at(sweep_id)
        try:
            await self._follow(
                f"qubus.task.{owner}.>",
                take,
                since=None if since is None else since - CLOCK_SLACK_S,
                until=time.monotonic() + timeout,
            )
        except TimeoutError:
            raise TimeoutError(f"sweep {sweep_id} did not finish within {timeout:g} s") from None
        return [point_events(shared, events) for events in own]

    async def events(self, task_id: str) -> list[StoredEvent]:
        """The task's events stored so far (its trace); a sweep point's are its sweep's up to
        the run, then its own (``point_events``).

        Raises:
            QubusError: ``task.invalid_id`` or ``auth.not_owner`` (``_task_subject``).
        """
        point = sweep_of(check_task_id(task_id))
        if point is None:
            return believed_events(await self._stored(task_id))
        shared, own = await asyncio.gather(self.events(point[0]), self._stored(task_id))
        return point_events(shared, own)

    async def _stored(self, task_id: str) -> list[StoredEvent]:
        """The events stored under the task's own subject, believed or not."""
        msgs = self.read_stream(STREAM, self._task_subject(task_id))
        return [stored async for msg in msgs if (stored := stored_event(msg)) is not None]

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: a QPU node skips it, or stops it if it is running. A running sweep
        stops between two batches of points (the points not run end ``cancelled``); a sweep
        point (``<sweep id>-<k>``) is left out when its batch comes, if it has not run yet.

        Returns:
            True if the task is now cancelled (also if it already was); False if it had
            already ended (done, rejected or failed).

        Raises:
            QubusError: ``task.invalid_id``; ``auth.not_owner`` (a user cancels only its own
                tasks: on a secured bus it may publish only its own tasks' ``cancelled``);
                ``task.unknown``.
        """
        check_task_id(task_id)
        events = await self.events(task_id)
        status = status_of(events)
        if status == "unknown":
            raise QubusError(f"no task {task_id}", code="task.unknown")
        if status in FINAL_STATUSES:
            return status == "cancelled"
        trace = TraceContext.new()
        await self.bus.publish_event(
            TaskCancelled(task_id=task_id, reason="cancelled by the user"), trace=trace
        )
        return True

    async def tasks(self) -> list[tuple[str, str]]:
        """Every task the stream holds (``QUBUS_TASK_RETENTION_S`` of them) that this client may
        read (``task_subjects``) with its status, oldest first (the id after the owner sorts by
        submission time).

        The operator, or a client of a server without auth, reads only the stream's subject
        counts, quick however many events there are; a user, who may not ask the stream about
        other users' subjects, reads the headers of its own tasks' events."""
        if self._reads_all:
            info = await self.bus.js.stream_info(STREAM, subjects_filter=TASK_SUBJECTS)
            subjects: Iterable[str] = info.state.subjects or {}
        else:
            msgs = self.read_stream(STREAM, self.task_subjects, headers_only=True)
            subjects = [msg.subject async for msg in msgs]
        seen: dict[str, list[str]] = {}
        for subject in subjects:
            task_id, tail = split_task_subject(subject)
            seen.setdefault(task_id, []).append(tail)
        oldest_first = sorted(seen, key=lambda task_id: task_id.split(".", 1)[1])
        return [(t, status_from_tails(_believable(seen, t))) for t in oldest_first]

    async def failures(self) -> dict[str, TaskRejected | TaskFailed]:
        """Why each task this client may read failed or was rejected: its ``failed`` or
        ``rejected`` event (stage and error), by task id; the dead letters among them have
        the code ``stage.dead_letter``."""
        owner = "*" if self._reads_all else self.user
        ends: dict[str, TaskRejected | TaskFailed] = {}
        for cls in (TaskRejected, TaskFailed):
            async for msg in self.read_stream(STREAM, cls.subjects(f"{owner}.*")):
                stored = stored_event(msg)
                if stored is not None and isinstance(stored.event, cls):
                    ends[stored.event.task_id] = stored.event
        return ends

    async def retry(self, task_id: str) -> SubmitReply:
        """Submit a failed or cancelled task of this client's again, as it was submitted (a
        new task id).

        Raises:
            QubusError: ``auth.not_owner`` for another user's task (the operator's too: the
                task would become the operator's); ``task.unknown`` for a task the stream
                does not hold; ``task.not_retryable`` for a task that is not failed or
                cancelled (a rejected one would be rejected again).
        """
        owner = owner_of(check_task_id(task_id))
        if self.user and owner != self.user:
            raise QubusError(
                f"task {task_id} belongs to {owner}, not to {self.user}: only its owner may "
                "retry it",
                code="auth.not_owner",
            )
        events = await self.events(task_id)
        ingested = next((e.event for e in events if isinstance(e.event, TaskIngested)), None)
        if ingested is None:
            raise QubusError(f"no task {task_id}", code="task.unknown")
        status = status_of(events)
        if status not in ("failed", "cancelled"):
            raise QubusError(
                f"task {task_id} is {status}: only a failed or cancelled task can be retried",
                code="task.not_retryable",
            )
        options = ingested.options
        request = SubmitRequest(
            circuit=ingested.text,
            format=ingested.format,
            shots=options.shots,
            priority=options.priority,
            pilot=options.pilot,
            node=options.node,
            noiseless=options.noiseless,
            source=options.source,
            fidelity_floor=options.fidelity_floor,
            deadline_s=options.deadline_s,
            split=options.split,
            ideal_links=options.ideal_links,
        )
        return await self.submit(request)

    async def _stack_answers(self) -> bool:
        """Whether some qubus service answers ``$SRV.PING`` on this server (the stack is up;
        an absent ingestion is being restarted), as opposed to no stack at all."""
        replies = await self.services("PING", timeout=STACK_PROBE_S)
        return any(str(r.get("name", "")).startswith(NAME_PREFIX) for r in replies)

    async def services(
        self, verb: str = "STATS", *, timeout: float = 0.5, expected: int | None = None
    ) -> list[dict[str, Any]]:
        """Every service instance's answer to ``$SRV.<verb>`` (``PING``, ``INFO``, ``STATS``).

        Args:
            verb: The health verb.
            timeout: Seconds to collect answers for.
            expected: Stop as soon as this many instances have answered.

        Returns:
            The JSON replies, sorted by service name and id.
        """
        inbox = self.bus.nc.new_inbox()
        replies: list[dict[str, Any]] = []
        enough = asyncio.Event()

        async def collect(msg: nats.aio.msg.Msg) -> None:
            try:
                reply = json.loads(msg.data)
            except ValueError:
                return
            if isinstance(reply, dict):
                replies.append(reply)
            if expected is not None and len(replies) >= expected:
                enough.set()

        sub = await self.bus.nc.subscribe(inbox, cb=collect)
        try:
            await self.bus.nc.publish(f"{PREFIX}.{verb}", b"", reply=inbox)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout)
        finally:
            await sub.unsubscribe()
        return sorted(replies, key=lambda r: (r.get("name", ""), r.get("id", "")))

    async def log_lines(
        self,
        *,
        service: str | None = None,
        since: float | None = None,
        follow: bool = False,
        batch: int = 256,
    ) -> AsyncIterator[dict[str, Any]]:
        """Log lines stored in stream ``QUBUS_LOGS`` (one day of them), oldest first.

        Args:
            service: Only this service's lines (subject ``qubus.log.<service>.<owner>``; a
                client user reads only the lines about its own tasks).
            since: Only lines stored at or after this Unix time.
            follow: After the stored lines, keep yielding new ones until cancelled.
            batch: Lines fetched per request.

        Yields:
            Each line's JSON object (lines that are not JSON objects are skipped).
        """
        owner = "*" if self._reads_all else self.user  # a user reads its own tasks' lines
        async for msg in self.read_stream(
            LOG_STREAM, log_subject(service or "*", owner), since=since, follow=follow, batch=batch
        ):
            for text in split_lines(msg.data):
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    yield line

    async def read_stream(
        self,
        stream: str,
        subject: str,
        *,
        since: float | None = None,
        after_seq: int = 0,
        follow: bool = False,
        batch: int = 256,
        progress: Progress | None = None,
        headers_only: bool = False,
        until: float | None = None,
    ) -> AsyncIterator[Msg]:
        """The messages of ``stream`` on ``subject``, oldest first, through one ephemeral
        pull consumer, which the server removes once it has been idle for
        ``READER_IDLE_S`` (a client user may not delete consumers).

        The consumer is named and has this one filter, so its creation's API subject names
        the filter, which a client user's permissions bind to its own tasks.

        Args:
            stream: The stream.
            subject: A subject filter.
            since: Only messages stored at or after this Unix time (all if None).
            after_seq: Only messages after this stream sequence (with ``since`` None).
            follow: After the stored messages, keep yielding new ones until cancelled;
                otherwise stop once the messages pending at the start are read.
            batch: Messages fetched per request.
            progress: Counts the messages read against those pending at the start.
            headers_only: Only the messages' subjects and headers, not their bodies.
            until: Raise ``TimeoutError`` once ``time.monotonic()`` passes this (a deadline
                checked between fetches, not a cancellation, which a fetch may swallow).
        """
        config = ConsumerConfig(
            headers_only=headers_only or None,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL if since is None else DeliverPolicy.BY_START_TIME,
            opt_start_time=None if since is None else datetime.fromtimestamp(since, UTC),
            inactive_threshold=READER_IDLE_S,
        )
        if since is None and after_seq:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = after_seq + 1
        sub = await self.bus.js.pull_subscribe(subject, stream=stream, config=config)
        info = await sub.consumer_info()
        remaining = info.num_pending or 0
        if progress is not None:
            progress.total = remaining
        try:
            while follow or remaining > 0:
                wait_s = 1.0
                if until is not None:
                    wait_s = min(wait_s, until - time.monotonic())
                    if wait_s <= 0:
                        raise TimeoutError(f"reading {subject} did not end in time")
                try:
                    msgs = await sub.fetch(
                        batch if follow else min(batch, remaining), timeout=max(wait_s, 0.01)
                    )
                except TimeoutError:  # nats.errors.TimeoutError, or asyncio's when nothing came
                    if not follow:  # messages may have aged out of the stream meanwhile
                        remaining = (await sub.consumer_info()).num_pending or 0
                        if progress is not None:
                            progress.total = progress.done + remaining
                    continue
                remaining -= len(msgs)
                if progress is not None:
                    progress.advance(len(msgs))
                for msg in msgs:
                    yield msg
        finally:
            await sub.unsubscribe()

    async def run(
        self, requests: list[SubmitRequest], *, timeout: float = 300.0
    ) -> list[dict[str, Any]]:
        """Submit every request, wait for all, and return one record each (in order)."""
        replies = await asyncio.gather(*(self.submit(r) for r in requests))
        traces = await asyncio.gather(
            *(self.wait(reply.task_id, timeout=timeout) for reply in replies)
        )
        return [
            task_record(reply.task_id, events)
            for reply, events in zip(replies, traces, strict=True)
        ]


def point_events(shared: list[StoredEvent], own: list[StoredEvent]) -> list[StoredEvent]:
    """A sweep point's events, as believed (``believed_events``): its sweep's (``shared``)
    without the sweep's own ``completed``, which carries no counts, then the point's own
    (``own``), whose node events its sweep's allocation vouches for. A sweep that ended without
    running ends each of its points the same way; a cancelled sweep ends so each point that
    had not completed (one that had is done: the sweep's ``cancelled`` is left out)."""
    ran = any(isinstance(s.event, TaskCompleted) for s in own)
    left_out = (TaskCompleted, TaskCancelled) if ran else (TaskCompleted,)
    return believed_events([s for s in shared if not isinstance(s.event, left_out)] + own)


def status_of(events: list[StoredEvent]) -> str:
    """The task's status: one of ``STATUSES``, ``unknown`` without events."""
    return status_from_events([stored.event.EVENT for stored in events])


def progress_of(events: list[StoredEvent]) -> dict[str, int] | None:
    """The furthest ``progress`` of a running emulation (``shots_done``, ``shots``), or of a
    running sweep its points ended so far over all its points (``points_done``, ``points``,
    ``qubus.scheduling.sweepchunks.sweep_progress``), or None."""
    reports = [s.event for s in events if isinstance(s.event, SweepProgress)]
    if reports:
        sweep = next(s.event.options.sweep for s in events if isinstance(s.event, TaskAllocated))
        done, points = sweep_progress(reports, len(sweep or ()))
        return {"points_done": done, "points": points}
    done = [s.event for s in events if isinstance(s.event, TaskProgress)]
    if not done:
        return None
    last = max(done, key=lambda e: e.shots_done)
    return {"shots_done": last.shots_done, "shots": last.shots}


def _believable(seen: dict[str, list[str]], task_id: str) -> list[str]:
    """The tails by which to judge a task's events: a sweep point's own, after its sweep's
    allocations (which name the node its ``completed`` must come from)."""
    point = sweep_of(task_id)
    if point is None:
        return seen[task_id]
    shared = seen.get(point[0], [])
    allocations = [tail for tail in shared if event_of(tail)[0] == TaskAllocated.EVENT]
    return [*allocations, *seen[task_id]]


def status_from_tails(tails: Sequence[str]) -> str:
    """The status of a task whose events' subjects end with ``tails`` (after the task id:
    ``allocated.ibm_nairobi``), counting only the events ``believed``."""
    kept = [tail for tail, keep in zip(tails, believed(tails), strict=True) if keep]
    return status_from_events(event_of(tail)[0] for tail in kept)


def status_from_events(names: Iterable[str]) -> str:
    """The status of a task with events ``names`` (``EVENT``, in any order): its final
    event's once it has one (``cancelled`` first: a run that completes after a cancellation
    stays cancelled), else its furthest event's."""
    statuses = {STATUS_OF_EVENT.get(name, "pending") for name in names}
    for final in ("cancelled", "rejected", "failed", "done"):
        if final in statuses:
            return final
    return max(statuses, key=STATUSES.index, default="unknown")


def stage_rows(events: list[StoredEvent]) -> list[dict[str, Any]]:
    """The task's timeline: one row per event with its service, instance, time and duration;
    a sweep chunk's progress (``points``) also with its ``detail``."""
    rows = []
    for stored in events:
        started = stored.started if stored.started is not None else stored.published
        row = {
            "event": stored.event.EVENT,
            "service": stored.service,
            "instance": stored.instance,
            "time": datetime.fromtimestamp(stored.published, UTC).isoformat(),
            "duration_ms": round(max(0.0, stored.published - started) * 1000, 2),
        }
        if isinstance(stored.event, SweepProgress):
            report = stored.event
            row["detail"] = (
                f"chunk {report.chunk + 1}/{report.chunks} on {report.node}: "
                f"{report.done}/{report.points} points ({report.completed} completed)"
            )
        rows.append(row)
    return rows


def allocation_breakdown(events: list[StoredEvent]) -> dict[str, Any] | None:
    """How the task's node was chosen: fusion's per-node scores (``scored``, with each score's
    ``terms``) and the allocator's decision (``allocated``: node, policy, reason, ranking).

    Returns:
        ``{"scores": [...], "decision": {...}}`` (either may be None if that stage has not
        published), or None if neither has.
    """
    scores = decision = None
    for stored in events:
        event = stored.event
        if isinstance(event, TaskScored):
            scores = [score.model_dump() for score in event.scores]
        elif isinstance(event, TaskAllocated):
            decision = {
                "node": event.node,
                "policy": event.policy,
                "reason": event.reason,
                "ranking": [list(pair) for pair in event.ranking],
                "predicted_fidelity": event.predicted_fidelity,
                "hyperscore": event.hyperscore,
                "split": None if event.split is None else event.split.model_dump(),
            }
    if scores is None and decision is None:
        return None
    return {"scores": scores, "decision": decision}


def task_record(task_id: str, events: list[StoredEvent]) -> dict[str, Any]:
    """The user-facing record of a task, the object ``qubus result --json`` prints.

    ``nodes`` are the nodes the task was allocated to, then ran on (several for a split run,
    the lead first); ``ebits`` the EPR pairs its split run consumed (0 on one node).
    """
    record: dict[str, Any] = {
        "task_id": task_id,
        "status": status_of(events),
        "nodes": [],
        "ebits": 0,
        "counts": None,
        "ideal_counts": None,
        "predicted_fidelity": None,
        "measured_fidelity": None,
        "hyperscore": None,
        "error": None,
        "source": None,
        "stages": stage_rows(events),
    }
    for stored in events:
        event = stored.event
        if hasattr(event, "options"):
            record["source"] = event.options.source
        if isinstance(event, SandboxEvaluation):
            record["ideal_counts"] = event.ideal_counts
        elif isinstance(event, TaskAllocated):
            record["nodes"] = event.split.nodes if event.split else [event.node]
            record["predicted_fidelity"] = event.predicted_fidelity
            record["hyperscore"] = event.hyperscore
        elif isinstance(event, TaskCompleted):
            record["counts"] = event.counts
            record["measured_fidelity"] = event.measured_fidelity
            record["nodes"] = event.nodes or [event.node]
            record["ebits"] = event.ebits
            # the prediction for the calibration and noise setting the task really ran with
            record["predicted_fidelity"] = event.predicted_fidelity
        elif isinstance(event, TaskRejected | TaskFailed):
            record["error"] = event.error.model_dump()
    return record
