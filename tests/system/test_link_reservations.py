"""The link service as its own process on a real nats-server: EPR reservations are idempotent,
kept in KV ``qubus_links`` across a restart, perfect on ideal links, and counted in the links'
statuses in KV ``qubus_nodes``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from qubus.bus import codec
from qubus.bus.connection import BUCKET_NODES, READY_SUBJECT, RESERVE_SUBJECT, link_key
from qubus.bus.messages import EprReservation, EprReserve, LinkStatus, ServiceReady
from qubus.network.links import LinkPlan, expected_pair, load_topology

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

TOPOLOGY = Path(__file__).parents[2] / "deploy" / "topologies" / "star_mixed.json"
HUB = "quantinuum_h1_1"


class LinkService:
    """``qubus service link`` as a child process, started and killed at will."""

    def __init__(self, nats_url: str, log_path: Path) -> None:
        self.nats_url = nats_url
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, nc: NATS) -> None:
        """Start the process and wait for its readiness announcement."""
        ready: asyncio.Queue[ServiceReady] = asyncio.Queue()

        async def on_ready(msg: nats.aio.msg.Msg) -> None:
            await ready.put(codec.decode(msg.data, ServiceReady))

        sub = await nc.subscribe(READY_SUBJECT, cb=on_ready)
        env = {**os.environ, "QUBUS_NATS_URL": self.nats_url, "QUBUS_TOPOLOGY": str(TOPOLOGY)}
        with self.log_path.open("ab") as log:  # noqa: ASYNC230 (the child writes to it)
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "qubus.cli.main", "service", "link", env=env, stderr=log
            )
        try:
            while True:
                announced = await asyncio.wait_for(ready.get(), 60)
                if announced.service == "link" and announced.pid == self.process.pid:
                    return
        finally:
            await sub.unsubscribe()

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), 30)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    connection = await nats.connect(nats_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def link_service(
    nats_url: str, nc: NATS, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LinkService]:
    service = LinkService(nats_url, tmp_path_factory.mktemp("link") / "link.log")
    await service.start(nc)
    try:
        yield service
    finally:
        await service.stop()
        if os.environ.get("QUBUS_SHOW_LOGS"):
            print(service.log_path.read_text()[-4000:])  # noqa: ASYNC240 (test teardown)


async def reserve(nc: NATS, **fields: object) -> EprReservation:
    reply = await nc.request(RESERVE_SUBJECT, codec.encode(EprReserve(**fields)), timeout=30)
    assert not reply.headers or "Nats-Service-Error" not in reply.headers, reply.headers
    return codec.decode(reply.data, EprReservation)


async def link_status(nc: NATS, a: str, b: str) -> LinkStatus:
    kv = await nc.jetstream().key_value(BUCKET_NODES)
    return codec.decode((await kv.get(link_key(*sorted((a, b))))).value, LinkStatus)


async def test_the_same_task_and_nodes_get_the_same_pairs(nc, link_service):
    first = await reserve(nc, task_id="u.same-1", a="ibm_nairobi", b="ibm_manila", count=40)
    again = await reserve(nc, task_id="u.same-1", a="ibm_nairobi", b="ibm_manila", count=40)
    other = await reserve(nc, task_id="u.same-2", a="ibm_nairobi", b="ibm_manila", count=40)
    assert again == first
    assert first.path == ["ibm_nairobi", HUB, "ibm_manila"]
    assert len(first.fidelities) == 40 and all(0.25 < f < 1 for f in first.fidelities)
    assert first.latency_s > 0 and first.attempts >= 80
    assert first.purified > 0  # both hops are below their floor: purified
    assert other.fidelities != first.fidelities


async def test_the_node_order_only_orients_the_reply(nc, link_service):
    forward = await reserve(nc, task_id="u.order-1", a="ionq_aria", b="ibm_nairobi", count=5)
    backward = await reserve(nc, task_id="u.order-1", a="ibm_nairobi", b="ionq_aria", count=5)
    assert (forward.a, forward.b) == ("ionq_aria", "ibm_nairobi")
    assert (backward.a, backward.b) == ("ibm_nairobi", "ionq_aria")
    assert backward.path == forward.path[::-1] == ["ibm_nairobi", HUB, "ionq_aria"]
    assert backward.fidelities == forward.fidelities
    assert backward.latency_s == forward.latency_s


async def test_reserved_pairs_match_the_expected_pair(nc, link_service):
    made = await reserve(nc, task_id="u.mean-1", a=HUB, b="ibm_nairobi", count=2_000)
    fidelity, latency_s = expected_pair(load_topology(TOPOLOGY), HUB, "ibm_nairobi")
    mean = sum(made.fidelities) / len(made.fidelities)
    assert mean == pytest.approx(fidelity, abs=0.005)
    assert made.latency_s / 2_000 == pytest.approx(latency_s, rel=0.1)


async def test_ideal_links_give_perfect_pairs_in_modelled_time(nc, link_service):
    made = await reserve(
        nc, task_id="u.ideal-1", a="ibm_nairobi", b="ibm_manila", count=20, ideal=True
    )
    assert made.fidelities == [1.0] * 20
    assert made.latency_s > 0 and made.purified == 0


async def test_reservation_survives_a_killed_link_service(nc, link_service):
    made = await reserve(nc, task_id="u.crash-1", a="ibm_manila", b=HUB, count=25, hold_s=0.01)
    before = await link_status(nc, "ibm_manila", HUB)
    await link_service.kill()
    await link_service.start(nc)
    assert await reserve(nc, task_id="u.crash-1", a="ibm_manila", b=HUB, count=25) == made
    after = await link_status(nc, "ibm_manila", HUB)
    assert after.reservations == before.reservations  # replayed, not made again
    assert after.pairs_reserved == before.pairs_reserved


async def test_link_status_counts_reservations_and_purification(nc, link_service):
    before = await link_status(nc, HUB, "ibm_manila")
    made = await reserve(nc, task_id="u.count-1", a=HUB, b="ibm_manila", count=30)
    status = await link_status(nc, HUB, "ibm_manila")
    spec = load_topology(TOPOLOGY).link(HUB, "ibm_manila")
    assert status.reservations == before.reservations + 1
    assert status.pairs_reserved == before.pairs_reserved + 30
    assert status.pairs_purified == before.pairs_purified + made.purified > before.pairs_purified
    assert status.purify_below == spec.purify_below
    assert status.purify_rounds == LinkPlan.of(spec).rounds > 0
    assert status.expected_fidelity == pytest.approx(LinkPlan.of(spec).fidelity)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"task_id": "u.bad-1", "a": "ibm_nairobi", "b": "nowhere", "count": 1}, "link.no_path"),
        ({"task_id": "u.bad-2", "a": "ibm_nairobi", "b": "ibm_manila", "count": 0}, None),
    ],
)
async def test_bad_reservations_are_structured_errors(nc, link_service, fields, code):
    body = codec.encode_json(EprReserve.model_construct(**fields))
    reply = await nc.request(
        RESERVE_SUBJECT, body, headers={"Content-Type": codec.JSON}, timeout=10
    )
    assert reply.headers is not None and "Nats-Service-Error" in reply.headers
    if code is not None:
        assert reply.headers["Nats-Service-Error-Code"] == code
