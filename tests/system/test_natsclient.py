"""``NatsClient`` and ``Pull``: requests answered and pulled messages handed over where they are
read, with nats-py's results and errors."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo

from qubus.bus.connection import BUCKET_FEATURES, Bus, KVFollower
from qubus.bus.durable import CONSUMER_GONE
from qubus.bus.natsclient import NatsClient, Pull, header_block, header_lines
from qubus.bus.natsserver import NatsServer

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def client(nats_url: str) -> AsyncIterator[NatsClient]:
    client = NatsClient()
    await client.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="module")
async def echo(nats_url: str) -> AsyncIterator[Client]:
    """A plain nats-py client answering ``echo.<n>`` with ``<n>:`` and the payload, ``slow``
    the same after the payload's seconds, and ``headers`` with the request's headers."""
    responder = await nats.connect(nats_url)

    async def answer(msg: Msg) -> None:
        kind, _, value = msg.subject.partition(".")
        if kind == "slow":
            await asyncio.sleep(float(msg.data))
        await msg.respond(value.encode() + b":" + msg.data)

    async def answer_with_headers(msg: Msg) -> None:
        await responder.publish(msg.reply, msg.data, headers=msg.headers)

    await responder.subscribe("echo.*", cb=answer)
    await responder.subscribe("slow", cb=answer)
    await responder.subscribe("headers", cb=answer_with_headers)
    # nats-py's flush() writes its PING ahead of the SUBs still pending, so its PONG does not
    # show the server has them (1 run in ~40 of this module met no responders); the
    # responder's own requests go out after them and come back through them.
    for subject, payload in (("echo.0", b""), ("slow", b"0"), ("headers", b"")):
        await responder.request(subject, payload, timeout=5)
    try:
        yield responder
    finally:
        await responder.close()


async def test_concurrent_requests_each_get_their_own_answer(client, echo) -> None:
    answers = await asyncio.gather(
        *(client.request(f"echo.{n}", f"payload {n}".encode(), timeout=5) for n in range(200))
    )
    assert [a.data for a in answers] == [f"{n}:payload {n}".encode() for n in range(200)]
    assert not client._waiting  # nothing left behind


async def test_an_answers_headers_and_subject_are_nats_pys(client, echo) -> None:
    answer = await client.request("headers", b"x", headers={"Qubus-Test": "yes"}, timeout=5)
    assert answer.headers == {"Qubus-Test": "yes"}
    assert answer.data == b"x"
    assert answer.subject.startswith(client._inbox_prefix.decode() + ".")


async def test_a_header_block_arrives_as_the_headers_it_was_made_of(client, echo) -> None:
    headers = {"Qubus-Test": "yes", "Nats-Msg-Id": "m-1"}
    block = header_block(header_lines(headers))
    answer = await client.request("headers", b"x", headers=block, timeout=5)
    assert answer.headers == headers
    assert answer.data == b"x"
    with pytest.raises(ValueError, match="line break"):
        header_lines({"Qubus-Test": "yes\r\nPUB forged 1"})


async def test_no_answer_in_time_is_nats_pys_timeout_and_a_late_answer_is_dropped(
    client, echo
) -> None:
    with pytest.raises(nats.errors.TimeoutError):
        await client.request("slow", b"0.3", timeout=0.05)
    assert not client._waiting
    received = client.stats["in_msgs"]
    await asyncio.sleep(0.5)  # the late answer arrives, is counted and dropped
    assert client.stats["in_msgs"] == received + 1
    answer = await client.request("echo.1", b"next", timeout=5)
    assert answer.data == b"1:next"


async def test_nobody_to_answer_is_no_responders(client) -> None:
    with pytest.raises(nats.errors.NoRespondersError):
        await client.request("nobody.listens", b"", timeout=5)
    assert not client._waiting


async def test_a_cancelled_request_leaves_nothing_waiting(client, echo) -> None:
    request = asyncio.ensure_future(client.request("slow", b"0.2", timeout=5))
    await asyncio.sleep(0.05)
    assert len(client._waiting) == 1
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert not client._waiting


async def test_jetstream_publishes_and_direct_gets_go_through_it(client) -> None:
    js = client.jetstream()
    await js.add_stream(name="NATSCLIENT", subjects=["nc.>"], allow_direct=True)
    first = await js.publish("nc.a", b"one", headers={"Nats-Msg-Id": "a"})
    again = await js.publish("nc.a", b"one", headers={"Nats-Msg-Id": "a"})
    assert (first.seq, bool(first.duplicate), again.seq, again.duplicate) == (1, False, 1, True)
    found = await client.request("$JS.API.DIRECT.GET.NATSCLIENT", b'{"last_by_subj": "nc.a"}')
    assert found.data == b"one"
    assert found.headers is not None and found.headers["Nats-Sequence"] == "1"
    missing = await client.request("$JS.API.DIRECT.GET.NATSCLIENT", b'{"last_by_subj": "nc.b"}')
    assert missing.headers is not None and missing.headers["Status"] == "404"
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg("NATSCLIENT", "nc.b")


async def test_a_bus_connects_with_it(nats_url: str) -> None:
    bus = Bus(nats_url, service="test", instance="natsclient")
    await bus.connect()
    try:
        assert isinstance(bus.nc, NatsClient)
    finally:
        await bus.close()


@pytest_asyncio.fixture(loop_scope="module")
async def pulled(client: NatsClient) -> AsyncIterator[tuple[JetStreamContext, Pull]]:
    """A stream ``PULLED`` (``pulled.>``) with durable consumer ``worker``, and a ``Pull`` of it."""
    js = client.jetstream()
    await js.add_stream(name="PULLED", subjects=["pulled.>"])
    await js.add_consumer("PULLED", ConsumerConfig(durable_name="worker", ack_wait=30))
    pull = Pull(client, "PULLED", "worker")
    await pull.start()
    try:
        yield js, pull
    finally:
        await pull.stop()
        await js.delete_stream("PULLED")


async def test_a_pull_takes_the_consumers_messages_in_order(client, pulled) -> None:
    js, pull = pulled
    for n in range(3):
        await js.publish(f"pulled.{n}", str(n).encode())
    got = []
    for _ in range(3):
        msg = await pull.next(5)
        got.append((msg.subject, msg.data, msg.metadata.num_delivered))
        await msg.ack_sync()  # a request: the server has counted it when it answers
    assert got == [(f"pulled.{n}", str(n).encode(), 1) for n in range(3)]
    info = await js.consumer_info("PULLED", "worker")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_pull_waits_for_a_message_published_later(client, pulled) -> None:
    js, pull = pulled
    waiting = asyncio.ensure_future(pull.next(5))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await js.publish("pulled.late", b"late")
    msg = await waiting
    assert msg.data == b"late"
    await msg.ack()


async def test_a_pull_with_nothing_to_take_times_out_as_nats_pys_fetch(client, pulled) -> None:
    _, pull = pulled
    started = asyncio.get_running_loop().time()
    with pytest.raises(nats.errors.TimeoutError):
        await pull.next(0.3)
    assert asyncio.get_running_loop().time() - started >= 0.29


async def test_a_message_that_came_with_nobody_waiting_is_the_next(client, pulled) -> None:
    _, pull = pulled
    await client.publish(pull._inbox, b"", headers={"Status": "408"})  # a stale status: dropped
    await client.publish(pull._inbox, b"stray")
    await client.flush()
    await asyncio.sleep(0.1)
    assert (await pull.next(0.3)).data == b"stray"
    with pytest.raises(nats.errors.TimeoutError):  # and nothing else was waiting
        await pull.next(0.3)


async def settled(js: JetStreamContext) -> ConsumerInfo:
    """Consumer ``worker``'s info once it holds no message unacknowledged (the server counts an
    acknowledgement a moment after it reads it), or after 2 s."""
    for _ in range(100):
        info = await js.consumer_info("PULLED", "worker")
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.02)
    return info


async def test_an_ack_that_asks_for_the_next_brings_it_without_a_request_of_its_own(
    client, pulled
) -> None:
    js, pull = pulled
    for n in range(3):
        await js.publish(f"pulled.next.{n}", str(n).encode())
    msg = await pull.next(5)
    got = [msg.data]
    for _ in range(2):
        await pull.ack_next(msg, 5)
        with pytest.raises(nats.errors.MsgAlreadyAckdError):
            await msg.ack()
        msg = await pull.next(5)
        got.append(msg.data)
    await pull.ack_next(msg, 5)
    info = await settled(js)
    assert got == [b"0", b"1", b"2"]
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert info.num_waiting == 1  # the last ack's request, and none besides
    await js.publish("pulled.next.3", b"3")
    msg = await pull.next(0.3)  # the answer to that request
    assert msg.data == b"3"
    await msg.ack_sync()


async def test_an_answer_taken_before_next_is_not_waited_for_again(client, pulled) -> None:
    js, pull = pulled
    for n in range(2):
        await js.publish(f"pulled.early.{n}", str(n).encode())
    first = await pull.next(5)
    await pull.ack_next(first, 5)
    await asyncio.sleep(0.2)  # the second comes while nobody waits
    second = await pull.next(5)
    await second.ack_sync()
    started = asyncio.get_running_loop().time()
    with pytest.raises(nats.errors.TimeoutError):  # a request of its own, not the answered one
        await pull.next(0.3)
    assert (first.data, second.data) == (b"0", b"1")
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_an_ack_with_an_answer_already_kept_asks_for_nothing_more(client, pulled) -> None:
    js, pull = pulled
    await js.publish("pulled.held", b"held")
    msg = await pull.next(5)
    await client.publish(pull._inbox, b"late")  # as an earlier request's late answer
    await client.flush()
    await asyncio.sleep(0.1)
    await pull.ack_next(msg, 5)
    info = await settled(js)
    assert (info.num_ack_pending, info.num_waiting) == (0, 0)  # acknowledged, nothing asked
    assert (await pull.next(0.3)).data == b"late"


async def test_each_pull_holds_one_request_however_late_the_server_ends_them(client) -> None:
    """The server ends a request a little after the client's clock says it should (it reads
    it later than it was sent). Pulls that gave up at their own deadline and asked again came
    to hold two requests each (a stage's idle workers, expiring together), and the second took
    a message while the first's was in hand."""
    js = client.jetstream()
    await js.add_stream(name="IDLE", subjects=["idle.>"])
    await js.add_consumer("IDLE", ConsumerConfig(durable_name="workers", ack_wait=30))
    pulls = [Pull(client, "IDLE", "workers") for _ in range(8)]

    async def idle(pull: Pull) -> None:
        await pull.start()
        while True:
            with contextlib.suppress(nats.errors.TimeoutError):
                await pull.next(0.2)

    workers = [asyncio.create_task(idle(pull)) for pull in pulls]
    try:
        waiting = []
        for _ in range(6):  # three expiries of every request
            await asyncio.sleep(0.1)
            waiting.append((await js.consumer_info("IDLE", "workers")).num_waiting)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for pull in pulls:
            await pull.stop()
        await js.delete_stream("IDLE")
    assert max(waiting) == 8, waiting


async def test_a_request_whose_connection_is_lost_ends_at_once_as_a_timeout(tmp_path) -> None:
    """Its answer would have come on the lost connection: a request waiting for one (here,
    to a subscriber that never answers) ends as a timeout when the connection is lost, not
    at its own timeout; one made afterwards is answered on the new connection."""
    server = NatsServer(store_dir=str(tmp_path))
    server.start()
    client = NatsClient()
    await client.connect(server.url, reconnect_time_wait=0.1)
    try:

        async def ignore(msg: Msg) -> None:
            pass

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await client.subscribe("silent", cb=ignore)
        await client.subscribe("echo", cb=echo)
        waiting = asyncio.ensure_future(client.request("silent", b"", timeout=30))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        server.process.kill()
        server.process.wait()
        with pytest.raises(nats.errors.TimeoutError):
            await waiting
        assert asyncio.get_running_loop().time() - started < 5
        server.start(port=server.port)
        answer = await client.request("echo", b"again", timeout=20)
        assert answer.data == b"again"
    finally:
        await client.close()
        server.stop()


async def test_a_pull_asks_again_once_its_connection_is_made_again(tmp_path) -> None:
    """A server killed and started again knows nothing of the requests out before, and did
    not end them (one that stops in good order does): a pull waiting for one's answer stops
    waiting once the connection is made again, not when the request would have ended, and its
    next request takes what was published since."""
    server = NatsServer(store_dir=str(tmp_path))
    server.start()
    client = NatsClient()
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    await client.connect(server.url, reconnect_time_wait=0.1, reconnected_cb=on_reconnect)
    try:
        js = client.jetstream()
        await js.add_stream(name="AGAIN", subjects=["again.>"])
        await js.add_consumer("AGAIN", ConsumerConfig(durable_name="worker", ack_wait=30))
        pull = Pull(client, "AGAIN", "worker")
        await pull.start()
        waiting = asyncio.ensure_future(pull.next(60))
        await asyncio.sleep(0.2)
        server.process.kill()
        server.process.wait()
        server.start(port=server.port)
        await asyncio.wait_for(reconnected.wait(), 20)
        with pytest.raises(nats.errors.TimeoutError):
            await asyncio.wait_for(waiting, 1)  # ended by the reconnection, not in 60 s
        await js.publish("again.1", b"1")
        msg = await pull.next(5)
        assert msg.data == b"1"
        await msg.ack_sync()
        await pull.stop()
    finally:
        await client.close()
        server.stop()


async def test_a_kv_watcher_is_replaced_once_its_connection_is_made_again(tmp_path) -> None:
    """A server killed and started again has lost a KV watcher's consumer: a ``KVFollower``
    (here with no idle limit) replaces its watcher once the connection is made again, and
    gets at once what is written since."""
    server = NatsServer(store_dir=str(tmp_path))
    server.start()
    bus = Bus(server.url, service="test", instance="watcher")
    await bus.connect()
    arrived: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
    follower = KVFollower(bus, BUCKET_FEATURES, lambda entry: arrived[entry.key].set())
    try:
        await bus.ensure_topology()
        kv = await bus.kv(BUCKET_FEATURES)
        await follower.start()
        await kv.put("before", b"1")
        await asyncio.wait_for(arrived["before"].wait(), 5)
        server.process.kill()
        server.process.wait()
        server.start(port=server.port)
        async with asyncio.timeout(20):
            while True:  # the bucket answers once the server has read its store again
                with contextlib.suppress(nats.errors.Error):
                    await kv.put("after", b"2")
                    break
                await asyncio.sleep(0.1)
        # nats-py's watcher, left alone, took 9.9 s to find its consumer gone
        await asyncio.wait_for(arrived["after"].wait(), 3)
    finally:
        await follower.stop()
        await bus.close()
        server.stop()


async def test_a_pull_from_a_consumer_that_is_gone_raises_what_consumers_recover_from(
    client,
) -> None:
    js = client.jetstream()
    await js.add_stream(name="GONE", subjects=["gone.>"])
    pull = Pull(client, "GONE", "nobody")
    await pull.start()
    try:
        with pytest.raises(CONSUMER_GONE):
            await pull.next(2)
    finally:
        await pull.stop()
        await js.delete_stream("GONE")


async def test_a_request_without_a_timeout_waits_for_its_answer(client, echo) -> None:
    answer = await client._request_new_style("slow", b"0.2", timeout=None)
    assert answer.data == b":0.2"
    assert not client._waiting
