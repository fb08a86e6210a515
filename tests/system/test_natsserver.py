"""The embedded nats-server's environment: ``GOMAXPROCS`` at half the CPUs unless set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from qubus.bus.natsserver import NatsServer, server_env

pytestmark = pytest.mark.system


def started_with(monkeypatch: pytest.MonkeyPatch, gomaxprocs: str | None) -> dict[str, str]:
    """The environment a started server runs with, ``GOMAXPROCS`` as given (None: unset)."""
    if gomaxprocs is None:
        monkeypatch.delenv("GOMAXPROCS", raising=False)
    else:
        monkeypatch.setenv("GOMAXPROCS", gomaxprocs)
    server = NatsServer()
    try:
        server.start()
        assert server.process is not None
        raw = Path(f"/proc/{server.process.pid}/environ").read_bytes()
    finally:
        server.stop()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_server_runs_go_code_on_half_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    env = started_with(monkeypatch, None)
    assert env["GOMAXPROCS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert env["PATH"] == os.environ["PATH"]  # the rest is this process's


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_gomaxprocs_of_the_users_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    assert started_with(monkeypatch, "3")["GOMAXPROCS"] == "3"


def test_at_least_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert server_env()["GOMAXPROCS"] == "1"


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
@pytest.mark.parametrize("batch", [True, False])
def test_the_server_runs_under_batch_scheduling_unless_told_not_to(batch: bool) -> None:
    """As the services run (``qubus.bus.schedpolicy``); ``batch=False`` keeps the default."""
    server = NatsServer(batch=batch)
    try:
        server.start()
        assert server.process is not None
        policy = os.sched_getscheduler(server.process.pid)
    finally:
        server.stop()
    assert policy == (os.SCHED_BATCH if batch else os.SCHED_OTHER)
