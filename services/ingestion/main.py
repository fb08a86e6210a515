"""ingestion: the public door. Request/reply on ``qubus.submit``; publishes ``ingested``.

It checks the envelope (size, shape, format), that the circuit does not expand beyond
``qubus.circuits.bounds.MAX_OPERATIONS`` (counted without expanding it) and that the user
stays within its quotas of tasks and shots in flight (``qubus.bus.quota``; its ``quota`` stage
gives a task's place back at the task's terminal event), and answers at once with the task id
or a structured error; whether the circuit itself is valid is the parser's job, reported as
the task's ``rejected`` event with line and column.
"""

from __future__ import annotations

import asyncio
import time

import nats.js.errors

from qubus.bus.auth import ANONYMOUS
from qubus.bus.connection import BUCKET_IDEMPOTENCY, BUCKET_QUOTA, H_SUBJECT, SUBMIT_SUBJECT
from qubus.bus.consumer import Context, Stage
from qubus.bus.ids import idempotency_kv_key, is_sweep_point, new_task_id, owner_of
from qubus.bus.logs import get_logger
from qubus.bus.messages import (
    SubmitReply,
    SubmitRequest,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskIngested,
    TaskRejected,
)
from qubus.bus.quota import QuotaLedger, QuotaLimits
from qubus.bus.service import Runtime
from qubus.bus.tracing import TraceContext
from qubus.bus.workers import INLINE_MAX_BYTES, off_loop
from qubus.circuits.ingest import check_circuit, detect_format, task_options

log = get_logger()


async def setup(rt: Runtime) -> None:
    idempotency = await rt.bus.kv(BUCKET_IDEMPOTENCY)
    settings = rt.settings

    async def stored(task_id: str) -> bool:
        return await rt.bus.last_event(task_id, TaskIngested) is not None

    limits = QuotaLimits(
        tasks=settings.quota_tasks,
        shots=settings.quota_shots,
        exempt=frozenset(filter(None, settings.quota_exempt.replace(" ", "").split(","))),
    )
    quota = QuotaLedger(await rt.bus.kv(BUCKET_QUOTA), limits, stored)

    async def claim(request: SubmitRequest, owner: str, task_id: str) -> tuple[str, bool]:
        """The request's task id (``task_id``, or the one an earlier request with its
        idempotency key claimed) and whether an earlier request claimed it."""
        if request.idempotency_key is None:
            return task_id, False
        key = idempotency_kv_key(owner, request.idempotency_key)
        try:
            await idempotency.create(key, task_id.encode())
            return task_id, False
        except nats.js.errors.KeyWrongLastSequenceError:
            return (await idempotency.get(key)).value.decode(), True

    async def admit(request: SubmitRequest, owner: str, shots: int) -> tuple[str, bool]:
        """``claim`` a new task id and hold its place in ``owner``'s quota, at once (one round
        trip of the bus, not two). For a request that repeats an earlier one, the place is
        given back (or its refusal ignored): the earlier task's own place is the caller's to
        check.

        Raises:
            QubusError: ``quota.tasks`` or ``quota.shots``, for a request that is new.
        """
        task_id = new_task_id(owner)
        claimed, placed = await asyncio.gather(
            claim(request, owner, task_id),
            quota.claim(owner, task_id, shots),
            return_exceptions=True,
        )
        unneeded = isinstance(claimed, BaseException) or claimed[1]
        if unneeded and placed is None:  # the task id will not be used
            await quota.release(owner, task_id)
        if isinstance(claimed, BaseException):
            raise claimed
        if isinstance(placed, BaseException) and not claimed[1]:
            raise placed
        return claimed

    async def submit(request: SubmitRequest, headers: dict[str, str]) -> SubmitReply:
        fmt = detect_format(request)
        # Counting is linear in the text (nothing is expanded): a short one is checked inline.
        short = len(request.circuit) <= INLINE_MAX_BYTES
        await off_loop(check_circuit, request.circuit, fmt, inline=short)
        user = submitter(headers[H_SUBJECT])
        options = task_options(request)
        task_id, duplicate = await admit(request, user, options.total_shots)
        if duplicate:
            # A repeated key re-publishes only if the first attempt never got its event stored.
            if await stored(task_id):
                return SubmitReply(task_id=task_id, duplicate=True)
            await quota.claim(user, task_id, options.total_shots)
        event = TaskIngested(
            task_id=task_id,
            format=fmt,
            text=request.circuit,
            options=options,
            submitted_at=time.time(),
        )
        trace = TraceContext.extract(headers)
        try:
            await rt.bus.publish_event(event, trace=trace, started=event.submitted_at)
        except Exception:  # not stored (or not known to be): no terminal event will follow
            await quota.release(user, task_id)
            raise
        log.info("task.ingested", task_id=task_id, format=fmt, trace_id=trace.trace_id)
        return SubmitReply(task_id=task_id, duplicate=duplicate)

    async def release(event: TaskEvent, ctx: Context) -> None:
        """A task ended: give its place in its owner's quota back, with the others that end
        within ``RELEASE_LINGER_S``."""
        await quota.release(owner_of(event.task_id), event.task_id, linger_s=RELEASE_LINGER_S)

    # Following the ends before the first claim: every task claimed has its end delivered.
    ends = [TaskCompleted, TaskRejected, TaskFailed, TaskCancelled]
    # A sweep's points hold no place: their sweep does.
    quota_stage = Stage(
        "quota", ends, release, concurrency=RELEASES, from_now=True, skip=is_sweep_point
    )
    await rt.consume(quota_stage)
    limit = rt.settings.max_submit_bytes
    for subject, name in [(SUBMIT_SUBJECT, None), (f"{SUBMIT_SUBJECT}.*", "submit_as")]:
        await rt.serve(
            subject, SubmitRequest, submit, max_bytes=limit, name=name, concurrency=SUBMITS
        )


SUBMITS = 64
"""Submissions ingestion handles at once on each subject. One after another, each waited for
its quota update and its ``ingested`` publish in turn, so no two claims ever shared a quota
update (``QuotaLedger``), and each rewrote the user's whole entry."""


RELEASE_LINGER_S = 0.05
"""How long a release waits for others of the same user to share its quota update. Each update
rewrites the user's whole entry, some 40 bytes a task in flight: with every task released in
an update of its own, 3,000 tasks in flight cost the bus some 17 KB a task
(``benchmarks/fastpath.py --tasks 3000``). A place comes back that much later."""

RELEASES = 64
"""Ended tasks the ``quota`` stage holds at once: enough for those of ``RELEASE_LINGER_S`` at
1,000 tasks a second."""


def submitter(subject: str) -> str:
    """Who submitted on ``subject``: ``<user>`` of ``qubus.submit.<user>``, which on a secured
    bus only that user may publish to (``qubus.bus.auth``), else ``anon``."""
    return subject.removeprefix(f"{SUBMIT_SUBJECT}.") if subject != SUBMIT_SUBJECT else ANONYMOUS
