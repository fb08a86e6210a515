"""The services against a secured 3-node nats-server JetStream cluster on loopback, one
server killed.

Three nats-server processes (free ports found by binding to port 0, private store directories,
routes between all three, the same ``authorization`` block of nkey users as ``qubus up``
writes) form a JetStream cluster; every service runs against server 1 as `qubus up` runs
them, each as its own identity, with ``QUBUS_STREAM_REPLICAS=3``, and a client user too (the
operator inspects the cluster). A dev circuit
completes. Every stream (the task and log streams and the KV buckets) and durable consumer must
then have three replicas, created so by the services. The task stream's leadership is moved off
server 1 if it is there, its leader is killed, and once every stream and consumer has a new
leader a second circuit completes, with no service process restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
import yaml

from qubus.bus import auth
from qubus.bus.connection import STREAM
from qubus.bus.messages import SubmitRequest
from qubus.bus.natsserver import NatsCluster, stream_led_elsewhere
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client
from qubus_services import SERVICES

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

FLEET = ("ibm_nairobi", "ibm_manila")
STACK_ENV = {
    "QUBUS_ACK_WAIT_S": "3",
    "QUBUS_TIME_SCALE": "0.05",
    "QUBUS_NODE_TIMEOUT_S": "10",
    "QUBUS_STREAM_REPLICAS": "3",
}
CIRCUIT = "qasmbench__bell_n4.qasm"
USER = "alice"
PROBE_MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "parser.yaml"


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    return tmp_path / "creds"


@pytest.fixture
def cluster(tmp_path: Path, creds: Path) -> Iterator[NatsCluster]:
    """Three routed nats-servers with JetStream and the stack's users, each with its own
    store and log."""
    services = [s for s in SERVICES if s != "qpu"]
    authorization = auth.write_credentials(creds, auth.identities(services, FLEET, [USER]))
    servers = NatsCluster(tmp_path, authorization=authorization)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


async def _replicated(js: nats.js.JetStreamContext, timeout: float = 30.0) -> dict[str, list[str]]:
    """Every stream and durable consumer, once the two other replicas of each are current
    (durable consumers inherit their stream's three); fails if a stream has fewer."""
    assets = await _assets(js)
    for stream in assets:
        assert (await js.stream_info(stream)).config.num_replicas == 3, stream
    await _wait_current(
        js, [(s, c) for s, consumers in assets.items() for c in (None, *consumers)], timeout
    )
    return assets


async def _wait_current(
    js: nats.js.JetStreamContext, assets: list[tuple[str, str | None]], timeout: float
) -> None:
    """Until each (stream, consumer or None for the stream itself) has two current replicas."""
    deadline = time.monotonic() + timeout
    for stream, consumer in assets:
        while True:
            if consumer is None:
                info = await js.stream_info(stream)
            else:
                info = await js.consumer_info(stream, consumer)
            replicas = (info.cluster.replicas or []) if info.cluster else []
            if len(replicas) == 2 and all(r.current for r in replicas):
                break
            assert time.monotonic() < deadline, f"{stream} {consumer or ''}: not 3 current"
            await asyncio.sleep(0.2)


async def _assets(js: nats.js.JetStreamContext) -> dict[str, list[str]]:
    """Every stream, with its durable consumers (ephemeral ones, such as KV watchers and
    ordered consumers, stay single-replica: their clients recreate them elsewhere)."""
    return {
        info.config.name: [
            c.name for c in await js.consumers_info(info.config.name) if c.config.durable_name
        ]
        for info in await js.streams_info()
    }


async def _wait_for_new_leaders(
    js: nats.js.JetStreamContext, assets: dict[str, list[str]], gone: str, timeout: float = 30.0
) -> float:
    """Until every stream and consumer answers from a leader other than ``gone``; returns the
    seconds that took. Each is asked by name: a stream without a leader answers nothing."""
    started = time.monotonic()
    for stream, consumers in assets.items():
        for consumer in [None, *consumers]:
            while True:
                try:
                    if consumer is None:
                        info = await js.stream_info(stream)
                    else:
                        info = await js.consumer_info(stream, consumer)
                    if info.cluster and info.cluster.leader not in (None, gone):
                        break
                except (nats.errors.Error, nats.js.errors.Error):
                    pass  # no leader yet
                waited = time.monotonic() - started
                assert waited < timeout, f"{stream} {consumer or ''}: no leader after {waited:g} s"
                await asyncio.sleep(0.2)
    return time.monotonic() - started


def _probe(url: str) -> int:
    """The Kubernetes readiness probe of deploy/k8s (exec `python -c`) against ``url``."""
    manifest = yaml.safe_load(PROBE_MANIFEST.read_text())
    command = manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]
    argv = [sys.executable, *command["command"][1:]]
    env = {**os.environ, "QUBUS_NATS_URL": url}
    return subprocess.run(argv, env=env, capture_output=True, timeout=15).returncode


async def _run_one(client: Client, circuit: str, key: str) -> dict:
    request = SubmitRequest(circuit=circuit, shots=500, source=CIRCUIT, idempotency_key=key)
    [record] = await client.run([request], timeout=40)
    return record


async def test_secured_stack_on_a_three_node_cluster_survives_losing_a_server(
    cluster: NatsCluster, creds: Path, dev_qasm: Path, tmp_path: Path
) -> None:
    operator_seed = auth.seed_path(creds, auth.OPERATOR)
    await cluster.wait_for_jetstream(seed=operator_seed)
    entry = cluster.members[0]
    circuit = (dev_qasm / CIRCUIT).read_text()
    supervisor = Supervisor(
        entry.url, stack_specs(FLEET), log_dir=tmp_path / "logs", env=STACK_ENV, creds_dir=creds
    )
    client = operator = None
    try:
        await supervisor.start(timeout=60)
        client = await Client.connect(entry.url, nkey=str(auth.seed_path(creds, USER)))
        operator = await Client.connect(entry.url, nkey=str(operator_seed))
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(entry.url, allow_reconnect=False, connect_timeout=5)
        first = await _run_one(client, circuit, "cluster-1")
        assert first["status"] == "done", first["error"]
        assert first["nodes"][0] in FLEET and first["task_id"].startswith(f"{USER}.")

        assets = await _replicated(operator.bus.js)
        leader = await stream_led_elsewhere(operator.bus.nc, STREAM, entry.name)
        (victim,) = [m for m in cluster.members if m.name == leader]
        assert await asyncio.to_thread(_probe, victim.url) == 0
        os.killpg(victim.process.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.process.wait)
        assert await asyncio.to_thread(_probe, victim.url) != 0
        # Submit at once: during the elections (4 to 8 s here) ingestion answers
        # bus.unavailable and the client retries with the same idempotency key.
        second, failover_s = await asyncio.gather(
            _run_one(client, circuit, "cluster-2"),
            _wait_for_new_leaders(operator.bus.nc.jetstream(timeout=1), assets, victim.name),
        )
        print(f"killed {victim.name}, {STREAM}'s leader; all led again after {failover_s:.1f} s")
        assert second["status"] == "done", second["error"]
        assert second["task_id"] != first["task_id"]
        restarted = [label for label, c in supervisor.children.items() if c.restarts]
        assert restarted == []
    finally:
        for connected in (client, operator):
            if connected is not None:
                await connected.close()
        await supervisor.stop()
        if os.environ.get("QUBUS_SHOW_LOGS"):
            for path in sorted((tmp_path / "logs").glob("*.log")):  # noqa: ASYNC240
                print(f"==== {path.name}\n{path.read_text()[-3000:]}")  # noqa: ASYNC240
