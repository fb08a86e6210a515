"""System-test fixtures: a real nats-server (random port, private store) and real services."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from qubus.client import Client
from qubus.natsserver import NatsServer
from qubus.stack import Supervisor, stack_specs

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
    nats_url: str, log_dir: Path, fleet: Sequence[str], env: Mapping[str, str]
) -> AsyncIterator[Supervisor]:
    """Every service as its own process, as `qubus up` runs them; logs kept for failures
    (``QUBUS_SHOW_LOGS=1`` prints their tails)."""
    supervisor = Supervisor(nats_url, stack_specs(fleet), log_dir=log_dir, env=dict(env))
    try:
        await supervisor.start(timeout=120)
        yield supervisor
    finally:
        await supervisor.stop()
        if os.environ.get("QUBUS_SHOW_LOGS"):
            for path in sorted(log_dir.glob("*.log")):  # noqa: ASYNC240 (test teardown)
                print(f"==== {path.name}\n{path.read_text()[-4000:]}")  # noqa: ASYNC240


@pytest.fixture(scope="session")
def start_stack():
    """``running_stack``, for modules that need a stack of their own fleet or settings."""
    return running_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Supervisor]:
    """The default test stack: FLEET with STACK_ENV."""
    async with running_stack(nats_url, tmp_path_factory.mktemp("logs"), FLEET, STACK_ENV) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def client(nats_url: str, stack: Supervisor) -> AsyncIterator[Client]:
    client = await Client.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()
