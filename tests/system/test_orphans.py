"""Nothing outlives a qubus process killed outright: its nats-server and its services stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

OWNER = """
import time
from qubus.bus.natsserver import NatsServer
server = NatsServer()
server.start()
print("PIDS", server.process.pid, flush=True)
time.sleep(120)
"""


STACK = """
import asyncio, tempfile, time
from multiprocessing import forkserver
from pathlib import Path
from qubus.bus.natsserver import NatsServer
from qubus.cli.stack import Supervisor, stack_specs

def descendants(pid):
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] + [d for c in children for d in descendants(int(c))]

async def main():
    server = NatsServer()
    url = server.start()
    supervisor = Supervisor(url, stack_specs(["quantinuum_h1_1"]), log_dir=Path(tempfile.mkdtemp()))
    await supervisor.start(timeout=120)
    services = [c.process.pid for c in supervisor.children.values()]
    workers = [d for pid in services for d in descendants(pid)]  # sandbox's and qpu's pools
    assert len(workers) >= 2, workers
    pids = [server.process.pid, forkserver._forkserver._forkserver_pid, *services, *workers]
    print("PIDS", *pids, flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""

BUSY_WORKER = """
import asyncio
import time
from qubus.bus.workers import WorkerPool

async def main():
    pool = WorkerPool(memory_mb=512, stage="sandbox", job="simulation")
    pool.start()
    job = asyncio.ensure_future(pool.run(time.sleep, 120, timeout_s=300))
    await asyncio.sleep(1)
    print("PIDS", pool.worker_pid, flush=True)
    await job

asyncio.run(main())
"""


def gone_after_kill(script: str, timeout_s: float) -> list[int]:
    """Run ``script``, which prints ``PIDS`` and the pids it started on one line, SIGKILL it,
    and return the pids still running ``timeout_s`` later."""
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = next(line for line in owner.stdout if line.startswith("PIDS "))
        pids = [int(pid) for pid in line.split()[1:]]
        assert pids and all(running(pid) for pid in pids)
        os.kill(owner.pid, signal.SIGKILL)  # no cleanup code runs
        owner.wait()
        deadline = time.monotonic() + timeout_s
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [pid for pid in pids if running(pid)]
    finally:
        owner.kill()
        owner.wait()


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl death signal: Linux")
def test_a_killed_owner_takes_its_server_with_it() -> None:
    assert gone_after_kill(OWNER, timeout_s=10) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_services_of_a_killed_supervisor_stop() -> None:
    """The services, their worker pools and the fork server they came from all stop."""
    # Each child polls its supervisor every second, then drains (up to the 15 s a stop takes).
    assert gone_after_kill(STACK, timeout_s=30) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl death signal: Linux")
def test_a_worker_busy_with_a_long_job_dies_with_its_service() -> None:
    assert gone_after_kill(BUSY_WORKER, timeout_s=10) == []
