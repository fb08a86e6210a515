"""The `qubus` command against a real stack, as its own process: task lists, statuses in words
with their exit statuses, waiting, cancelling, and the errors of a stack that is there but
cannot answer as asked (one line with a code, no traceback)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.js.api import RetentionPolicy

from qubus.bus.auth import ANONYMOUS
from qubus.bus.connection import STREAM
from qubus.bus.ids import new_task_id
from qubus.bus.messages import (
    ErrorInfo,
    TaskAllocated,
    TaskFailed,
    TaskIngested,
    TaskOptions,
    TaskRunning,
)
from qubus.bus.natsserver import NatsServer
from qubus.bus.tracing import TraceContext
from qubus.client.aio import task_record

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

BELL = "qasmbench__bell_n4.qasm"
RETIRED_NODE = "retired_qpu"  # in no fleet: nothing consumes its allocations


def one_error_line(err: str, code: str) -> str:
    """The last stderr line, which must carry ``code``; no traceback anywhere."""
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("qubus") and line.endswith(f"[{code}]"), err
    return line


@pytest_asyncio.fixture(loop_scope="module")
async def running_task(client) -> str:
    """A task the stack holds as running: its allocation to a node outside the fleet (which no
    stage consumes) and that node's ``running`` event."""
    task_id = new_task_id(ANONYMOUS)
    allocated = TaskAllocated(
        task_id=task_id,
        node=RETIRED_NODE,
        policy="hyperscore",
        reason="",
        ranking=[],
        predicted_fidelity=0.9,
        hyperscore=1.0,
        circuit="{}",
        options=TaskOptions(shots=1),
        ideal={},
    )
    running = TaskRunning(task_id=task_id, node=RETIRED_NODE, queue_wait_s=0.0)
    for event in (allocated, running):
        await client.bus.publish_event(event, trace=TraceContext.new())
    return task_id


async def test_a_finished_task_reads_done_and_lists_among_the_tasks(
    qubus_cli, nats_url, client, dev_qasm
):
    code, out, err = await qubus_cli(nats_url, "submit", str(dev_qasm / BELL), "--shots", "100")
    assert code == 0, err
    task_id = out.strip()

    code, out, err = await qubus_cli(nats_url, "result", task_id, "--wait", "--timeout", "120")
    assert code == 0, err
    assert out.startswith(f"{dev_qasm / BELL}: done")
    assert await qubus_cli(nats_url, "status", task_id) == (0, "done\n", "")

    code, out, _ = await qubus_cli(nats_url, "tasks", "--status", "done", "--since", "1h")
    assert code == 0 and task_id in out
    code, out, _ = await qubus_cli(nats_url, "tasks", "--status", "running")
    assert code == 0 and task_id not in out

    code, _, err = await qubus_cli(nats_url, "cancel", task_id)
    assert code == 1 and "has already ended" in one_error_line(err, "task.ended")


async def test_an_unfinished_task_says_so_in_words_and_exits_3(qubus_cli, nats_url, running_task):
    assert await qubus_cli(nats_url, "status", running_task) == (3, "running\n", "")

    code, out, err = await qubus_cli(nats_url, "result", running_task)
    assert code == 3 and f"{running_task}: running" in out
    assert f"`qubus result {running_task} --wait` waits for it" in err

    code, _, err = await qubus_cli(nats_url, "result", running_task, "--wait", "--timeout", "1")
    assert code == 1 and "did not finish within 1 s" in one_error_line(err, "task.timeout")

    cancelled = (0, f"cancelled {running_task}\n", "")
    assert await qubus_cli(nats_url, "cancel", running_task) == cancelled
    assert await qubus_cli(nats_url, "status", running_task) == (1, "cancelled\n", "")


async def test_a_cancelled_task_is_never_run(qubus_cli, nats_url, client, stack, dev_qasm):
    """Cancelled as soon as it is submitted: whether the cancellation or the QPU came first,
    the task ends cancelled, and a node that had not started it skipped it (one that had
    started it stops it: ``test_qpu_runs``)."""
    files = [str(dev_qasm / BELL)] * 4
    code, out, err = await qubus_cli(nats_url, "submit", *files, "--shots", "20000")
    assert code == 0, err
    last = out.split()[-1]
    code, out, err = await qubus_cli(nats_url, "cancel", last)
    if code == 0:
        assert out == f"cancelled {last}\n"
        code, out, _ = await qubus_cli(nats_url, "result", last, "--wait", "--timeout", "120")
        assert code == 1 and ": cancelled" in out and last in out
        events = [stored.event.EVENT for stored in await client.events(last)]
        assert "cancelled" in events
        if "running" not in events:  # skipped, not stopped
            assert "completed" not in events
    else:  # the node was quicker: the task has already ended
        assert "has already ended" in one_error_line(err, "task.ended")


async def test_failed_tasks_list_their_cause_and_retry_submits_them_again(
    qubus_cli, nats_url, client, stack, dev_qasm
):
    """A dead letter (the event the consumer wrapper publishes when every delivery of a task
    killed its stage's process) is listed with its cause, and ``retry`` runs the task again;
    a task that is not failed is not retried."""
    task_id = new_task_id(ANONYMOUS)
    circuit = (dev_qasm / BELL).read_text()
    dead = ErrorInfo(code="stage.dead_letter", message="stage noise gave up on the task")
    for event in (
        TaskIngested(
            task_id=task_id,
            format="qasm2",
            text=circuit,
            options=TaskOptions(shots=100, source="bell.qasm"),
            submitted_at=0.0,
        ),
        TaskFailed(task_id=task_id, stage="noise", error=dead),
    ):
        await client.bus.publish_event(event, trace=TraceContext.new())

    code, out, _ = await qubus_cli(nats_url, "tasks", "--status", "failed")
    [line] = [line for line in out.splitlines() if line.startswith(task_id)]
    assert code == 0 and line.endswith("noise: stage noise gave up on the task [stage.dead_letter]")
    code, out, _ = await qubus_cli(nats_url, "tasks", "--status", "failed", "--json")
    [row] = [json.loads(line) for line in out.splitlines() if task_id in line]
    assert row["error"] == {"stage": "noise", **dead.model_dump()}

    code, out, err = await qubus_cli(nats_url, "retry", task_id)
    assert code == 0, err
    again = out.strip()
    assert again != task_id and again.startswith(f"{ANONYMOUS}.")
    [record] = [task_record(again, await client.wait(again, timeout=120))]
    assert record["status"] == "done" and record["source"] == "bell.qasm"
    assert sum(record["counts"].values()) == 100

    code, _, err = await qubus_cli(nats_url, "retry", again)
    assert code == 1 and "only a failed or cancelled" in one_error_line(err, "task.not_retryable")
    code, _, err = await qubus_cli(nats_url, "retry", "anon.nosuchtask")
    assert code == 1 and "no task anon.nosuchtask" in one_error_line(err, "task.unknown")


async def test_unknown_tasks_and_expired_waits_are_one_line_errors(
    qubus_cli, nats_url, stack, dev_qasm
):
    code, _, err = await qubus_cli(nats_url, "status", "anon.nosuchtask")
    assert code == 1 and "no task anon.nosuchtask" in one_error_line(err, "task.unknown")

    code, out, err = await qubus_cli(
        nats_url, "submit", str(dev_qasm / BELL), "--wait", "--timeout", "0.001"
    )
    assert code == 1 and out == ""
    assert err.startswith(f"submitted {dev_qasm / BELL} as ")  # the id comes first
    assert "--wait` waits again" in one_error_line(err, "task.timeout")


async def test_sigterm_interrupts_a_wait_and_the_ids_are_already_printed(
    nats_url, stack, running_task
):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qubus.cli.main",
        "result",
        running_task,
        "--wait",
        env={**os.environ, "QUBUS_NATS_URL": nats_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(3)  # connected and waiting (if not, SIGTERM must still end it)
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130
    assert err.decode().strip() == "qubus: interrupted"


async def test_a_server_without_a_stack_is_one_line_and_qubus_debug_adds_the_traceback(
    qubus_cli, tmp_path: Path
):
    """A NATS server on which no qubus stack has run (no streams): every reading command says
    so, with the URL, instead of JetStream's "stream not found"."""
    server = NatsServer()
    url = server.start()
    try:
        for args in (("status", "anon.t1"), ("tasks",), ("result", "anon.t1"), ("nodes",)):
            code, out, err = await qubus_cli(url, *args)
            line = one_error_line(err, "stack.unavailable")
            assert code == 1 and out == "" and line.startswith(f"qubus: no qubus stack on {url}")
        # A work queue of the stack's stream name: the server refuses to let a client read
        # it without acknowledging, an error no command expects.
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(
            name=STREAM, subjects=["qubus.task.>"], retention=RetentionPolicy.WORK_QUEUE
        )
        await nc.close()
        code, _, err = await qubus_cli(url, "status", "anon.abc")
        assert code == 1 and "NATS:" in one_error_line(err, "nats.error")
        os.environ["QUBUS_DEBUG"] = "1"
        try:
            code, _, err = await qubus_cli(url, "status", "anon.abc")
        finally:
            del os.environ["QUBUS_DEBUG"]
        assert code == 1 and "Traceback" in err
    finally:
        server.stop()


async def test_a_second_up_on_the_same_state_dir_is_refused(qubus_cli, nats_url, tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text(f'{{"url": "{nats_url}", "pid": {os.getpid()}}}')
    os.environ["QUBUS_STATE_DIR"] = str(state)
    try:
        code, _, err = await qubus_cli("", "up", "--fleet", "ibm_nairobi")
    finally:
        del os.environ["QUBUS_STATE_DIR"]
    assert code == 1
    assert f"a stack is already running at {nats_url}" in one_error_line(err, "stack.running")


async def test_run_leaves_no_log_folder_behind(dev_qasm, tmp_path: Path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "QUBUS_TIME_SCALE": "0.05"}
    env.pop("QUBUS_NATS_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qubus.cli.main",
        "run",
        str(dev_qasm / BELL),
        "--shots",
        "100",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode == 0, err.decode()
    assert ": done" in out.decode()
    assert list(tmp_path.glob("qubus-logs-*")) == []  # noqa: ASYNC240 (after the run)
