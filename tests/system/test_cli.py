"""The `qubus` command against a real stack, as its own process: task lists, statuses in words
with their exit statuses, waiting, cancelling, and the errors of a stack that is there but
cannot answer as asked (one line with a code, no traceback)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from qubus.bus.auth import ANONYMOUS
from qubus.bus.ids import new_task_id
from qubus.bus.messages import TaskRunning
from qubus.bus.natsserver import NatsServer
from qubus.bus.tracing import TraceContext

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

BELL = "qasmbench__bell_n4.qasm"


def one_error_line(err: str, code: str) -> str:
    """The last stderr line, which must carry ``code``; no traceback anywhere."""
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("qubus") and line.endswith(f"[{code}]"), err
    return line


@pytest_asyncio.fixture(loop_scope="module")
async def running_task(client) -> str:
    """A task the stack holds as running: its ``running`` event alone (no stage consumes it)."""
    task_id = new_task_id(ANONYMOUS)
    event = TaskRunning(task_id=task_id, node="ibm_nairobi", queue_wait_s=0.0)
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


async def test_unknown_tasks_and_expired_waits_are_one_line_errors(qubus_cli, nats_url, dev_qasm):
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
    server = NatsServer()
    url = server.start()
    try:
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
