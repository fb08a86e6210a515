"""The embedded nats-server does not outlive the process that started it."""

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
from qubus.natsserver import NatsServer
server = NatsServer()
server.start()
print(server.process.pid, flush=True)
time.sleep(120)
"""


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl death signal: Linux")
def test_a_killed_owner_takes_its_server_with_it() -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(owner.stdout.readline())
        assert running(server_pid)
        os.kill(owner.pid, signal.SIGKILL)  # no cleanup code runs
        owner.wait()
        deadline = time.monotonic() + 10
        while running(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(server_pid)
    finally:
        owner.kill()
        owner.wait()
