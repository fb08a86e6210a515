"""System-test fixtures: a real nats-server (random port, private store) and real services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Supervisor]:
    """Every service as its own process, as `qubus up` runs them; logs kept for failures."""
    log_dir: Path = tmp_path_factory.mktemp("logs")
    supervisor = Supervisor(nats_url, stack_specs(FLEET), log_dir=log_dir, env=STACK_ENV)
    try:
        await supervisor.start(timeout=120)
        yield supervisor
    finally:
        await supervisor.stop()
        if os.environ.get("QUBUS_SHOW_LOGS"):
            for path in sorted(log_dir.glob("*.log")):  # noqa: ASYNC240 (test teardown)
                print(f"==== {path.name}\n{path.read_text()[-4000:]}")  # noqa: ASYNC240


@pytest_asyncio.fixture(loop_scope="module")
async def client(nats_url: str, stack: Supervisor) -> AsyncIterator[Client]:
    client = await Client.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()
