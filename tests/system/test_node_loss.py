"""A QPU node that stops reporting (its process SIGSTOPped) has its queued and running tasks
placed on another node, which completes them; the stopped node, resumed, adds no result."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest

from qubus.bus.connection import STREAM
from qubus.bus.ids import split_task_subject
from qubus.bus.messages import SubmitRequest
from qubus.client.aio import task_record

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

# The node counts as gone 4 s after its last status; the allocator looks every 1.3 s.
STACK_SETTINGS = {"QUBUS_NODE_TIMEOUT_S": "4"}
TASKS = 4
BELL = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'
BELL += "measure q -> c;\n"


async def first_running(client, task_ids: list[str], timeout: float = 60.0) -> tuple[str, str]:
    """The first task seen running, and its node."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id in task_ids:
            for stored in await client.events(task_id):
                if stored.event.EVENT == "running":
                    return task_id, stored.event.node
        await asyncio.sleep(0.05)
    pytest.fail("no task started running")


async def test_a_stopped_nodes_tasks_finish_elsewhere_once(client, stack):
    requests = [SubmitRequest(circuit=BELL, shots=20000) for _ in range(TASKS)]
    task_ids = [(await client.submit(request)).task_id for request in requests]
    running, node = await first_running(client, task_ids)
    process = stack.children[f"qpu:{node}"].process
    os.kill(process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        records = [
            task_record(task_id, await client.wait(task_id, timeout=120)) for task_id in task_ids
        ]
        waited = time.monotonic() - stopped
    finally:
        os.kill(process.pid, signal.SIGCONT)
    print(f"{node} stopped with {running} running: all {TASKS} tasks ended {waited:.1f} s later")
    assert all(r["status"] == "done" for r in records), [r["error"] for r in records]
    by_task = {r["task_id"]: r for r in records}
    assert by_task[running]["nodes"] != [node]  # the running one was placed elsewhere
    await asyncio.sleep(3)  # the resumed node finishes what it was running: no second result
    info = await client.bus.js.stream_info(STREAM, subjects_filter="qubus.task.*.*.completed.*")
    completed: Counter[str] = Counter()
    for subject, n in (info.state.subjects or {}).items():
        task_id, _ = split_task_subject(subject)
        completed[task_id] += n
    assert {task_id: completed[task_id] for task_id in task_ids} == dict.fromkeys(task_ids, 1)
    assert process.is_alive() and stack.children[f"qpu:{node}"].restarts == 0
