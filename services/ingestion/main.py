"""ingestion: the public door. Request/reply on ``qubus.submit``; publishes ``ingested``.

It checks the envelope (size, shape, format) and that the circuit does not expand beyond
``qubus.circuits.bounds.MAX_OPERATIONS`` (counted without expanding it), and answers at once
with the task id or a structured error; whether the circuit itself is valid is the parser's
job, reported as the task's ``rejected`` event with line and column.
"""

from __future__ import annotations

import time

import nats.js.errors

from qubus.bus.auth import ANONYMOUS
from qubus.bus.connection import BUCKET_IDEMPOTENCY, H_SUBJECT, SUBMIT_SUBJECT
from qubus.bus.ids import idempotency_kv_key, new_task_id
from qubus.bus.logs import get_logger
from qubus.bus.messages import SubmitReply, SubmitRequest, TaskIngested
from qubus.bus.service import Runtime
from qubus.bus.tracing import TraceContext
from qubus.bus.workers import INLINE_MAX_BYTES, off_loop
from qubus.circuits.ingest import check_circuit, detect_format, task_options

log = get_logger()


async def setup(rt: Runtime) -> None:
    idempotency = await rt.bus.kv(BUCKET_IDEMPOTENCY)

    async def claim(request: SubmitRequest, owner: str) -> tuple[str, bool]:
        """The task id for this request, and whether an earlier request already claimed it."""
        task_id = new_task_id(owner)
        if request.idempotency_key is None:
            return task_id, False
        key = idempotency_kv_key(owner, request.idempotency_key)
        try:
            await idempotency.create(key, task_id.encode())
            return task_id, False
        except nats.js.errors.KeyWrongLastSequenceError:
            return (await idempotency.get(key)).value.decode(), True

    async def submit(request: SubmitRequest, headers: dict[str, str]) -> SubmitReply:
        fmt = detect_format(request)
        # Counting is linear in the text (nothing is expanded): a short one is checked inline.
        short = len(request.circuit) <= INLINE_MAX_BYTES
        await off_loop(check_circuit, request.circuit, fmt, inline=short)
        task_id, duplicate = await claim(request, submitter(headers[H_SUBJECT]))
        # A repeated key re-publishes only if the first attempt never got its event stored.
        if not duplicate or await rt.bus.last_event(task_id, TaskIngested) is None:
            event = TaskIngested(
                task_id=task_id,
                format=fmt,
                text=request.circuit,
                options=task_options(request),
                submitted_at=time.time(),
            )
            trace = TraceContext.extract(headers)
            await rt.bus.publish_event(event, trace=trace, started=event.submitted_at)
            log.info("task.ingested", task_id=task_id, format=fmt, trace_id=trace.trace_id)
        return SubmitReply(task_id=task_id, duplicate=duplicate)

    limit = rt.settings.max_submit_bytes
    await rt.serve(SUBMIT_SUBJECT, SubmitRequest, submit, max_bytes=limit)
    await rt.serve(f"{SUBMIT_SUBJECT}.*", SubmitRequest, submit, max_bytes=limit, name="submit_as")


def submitter(subject: str) -> str:
    """Who submitted on ``subject``: ``<user>`` of ``qubus.submit.<user>``, which on a secured
    bus only that user may publish to (``qubus.bus.auth``), else ``anon``."""
    return subject.removeprefix(f"{SUBMIT_SUBJECT}.") if subject != SUBMIT_SUBJECT else ANONYMOUS
