"""System-test fixtures: a real nats-server (random port, private store) and real services."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from qubus.bus.natsserver import NatsServer
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client

pytestmark = pytest.mark.system

FLEET = ("ibm_nairobi", "quantinuum_h2_2")
STACK_ENV = {
    "QUBUS_ACK_WAIT_S": "3",
    "QUBUS_TIME_SCALE": "0.05",
    "QUBUS_LOG_LEVEL": "info",
    "QUBUS_NODE_TIMEOUT_S": "10",
}


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    server = NatsServer()
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running_stack(
    nats_url: str,
    log_dir: Path,
    fleet: Sequence[str],
    env: Mapping[str, str],
    creds_dir: Path | None = None,
) -> AsyncIterator[Supervisor]:
    """Every service as its own process, as `qubus up` runs them (as their own NATS users
    with ``creds_dir``); logs kept for failures (``QUBUS_SHOW_LOGS=1`` prints their tails)."""
    specs = stack_specs(fleet)
    supervisor = Supervisor(nats_url, specs, log_dir=log_dir, env=dict(env), creds_dir=creds_dir)
    try:
        await supervisor.start(timeout=120)
        yield supervisor
    finally:
        await supervisor.stop()
        if os.environ.get("QUBUS_SHOW_LOGS"):
            for path in sorted(log_dir.glob("*.log")):  # noqa: ASYNC240 (test teardown)
                print(f"==== {path.name}\n{path.read_text()[-4000:]}")  # noqa: ASYNC240


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Supervisor]:
    """The test module's stack: ``STACK_FLEET`` (default ``FLEET``) with ``STACK_ENV`` and the
    module's ``STACK_SETTINGS`` over it."""
    fleet = getattr(request.module, "STACK_FLEET", FLEET)
    env = {**STACK_ENV, **getattr(request.module, "STACK_SETTINGS", {})}
    async with running_stack(nats_url, tmp_path_factory.mktemp("logs"), fleet, env) as s:
        yield s


@pytest.fixture(scope="session")
def qubus_cli():
    """Runs ``qubus ARGS`` as its own process against a stack: ``await qubus_cli(url, *args)``
    gives ``(returncode, stdout, stderr)``."""

    async def run(
        nats_url: str, *args: str, timeout: float = 120.0, env: Mapping[str, str] | None = None
    ) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qubus.cli.main",
            *args,
            env={**os.environ, "QUBUS_NATS_URL": nats_url, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run


@pytest_asyncio.fixture(loop_scope="module")
async def client(nats_url: str, stack: Supervisor) -> AsyncIterator[Client]:
    client = await Client.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()
