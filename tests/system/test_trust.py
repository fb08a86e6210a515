"""A secured stack (``qubus.bus.auth``): every forgery a client, a stranger or one service
could try is refused by the server, and nothing changes; users work with their own tasks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import nkeys
import pytest
import pytest_asyncio
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from benchmarks.sweep import grid, qaoa_circuit
from qubus.bus import auth, codec
from qubus.bus.connection import BUCKET_NODES, BUCKET_WEIGHTS, H_TYPE, STREAM, inbox_prefix
from qubus.bus.ids import sweep_point_id
from qubus.bus.messages import (
    SubmitRequest,
    TaskCancelled,
    TaskCompleted,
    TaskReplace,
    TaskRunning,
)
from qubus.bus.natsserver import NatsServer
from qubus.circuits import circuit_to_json
from qubus.cli.stack import Supervisor
from qubus.client.aio import Client, status_of, task_record
from qubus.dashboard.server import Dashboard
from qubus.errors import QubusError
from qubus_services import SERVICES

from .conftest import FLEET, STACK_ENV, running_stack

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

BELL = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'
BELL += "measure q -> c;\n"
NODE, OTHER_NODE = FLEET
REFUSAL_WAIT_S = 3.0


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state") / "creds"


@pytest.fixture(scope="module")
def secured_url(creds: Path) -> Iterator[str]:
    services = [s for s in SERVICES if s != "qpu"]
    block = auth.write_credentials(
        creds, auth.identities(services, FLEET, ["alice", "bob", "carol"])
    )
    server = NatsServer(authorization=block)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured_stack(
    secured_url: str, creds: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Supervisor]:
    log_dir = tmp_path_factory.mktemp("logs")
    async with running_stack(secured_url, log_dir, FLEET, STACK_ENV, creds_dir=creds) as s:
        yield s


def seed(creds: Path, name: str) -> str:
    return str(auth.seed_path(creds, name))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(secured_url: str, creds: Path, secured_stack) -> AsyncIterator[Client]:
    client = await Client.connect(secured_url, nkey=seed(creds, auth.OPERATOR))
    yield client
    await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bobs_task(secured_url: str, creds: Path, secured_stack) -> dict:
    """A task of bob's, finished: the target of alice's forgeries."""
    bob = await Client.connect(secured_url, nkey=seed(creds, "bob"))
    try:
        [record] = await bob.run([SubmitRequest(circuit=BELL, shots=500)], timeout=120)
    finally:
        await bob.close()
    assert record["status"] == "done", record["error"]
    return record


class Attacker:
    """A plain nats-py connection (no qubus code) that records the server's refusals."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: nats.aio.client.Client | None = None

    async def connect(self, url: str, seed_file: str, user: str) -> Attacker:
        async def error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await nats.connect(
            url, nkeys_seed=seed_file, inbox_prefix=inbox_prefix(user), error_cb=error
        )
        return self

    @property
    def js(self):
        assert self.nc is not None
        return self.nc.jetstream(timeout=1.0)

    async def refused(self, attempt, subject: str) -> None:
        """``attempt()`` fails or is ignored, and the server reports a permissions violation
        on ``subject``."""
        subject = subject.lower()
        before = len(self.errors)
        try:
            await attempt()
            assert self.nc is not None
            await self.nc.flush()
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            pass
        for _ in range(int(REFUSAL_WAIT_S / 0.05)):
            if any("permissions violation" in e and subject in e for e in self.errors[before:]):
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"no permissions violation for {subject}: {self.errors[before:]}")


@pytest_asyncio.fixture(loop_scope="module")
async def alice(secured_url: str, creds: Path, secured_stack) -> AsyncIterator[Attacker]:
    attacker = await Attacker().connect(secured_url, seed(creds, "alice"), "alice")
    yield attacker
    await attacker.nc.close()


async def stored_subjects(operator: Client, pattern: str) -> dict[str, int]:
    info = await operator.bus.js.stream_info(STREAM, subjects_filter=pattern)
    return dict(info.state.subjects or {})


async def test_no_credentials_and_unknown_keys_cannot_connect(secured_url: str):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(secured_url, allow_reconnect=False, connect_timeout=5)
    stranger = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            secured_url, nkeys_seed_str=stranger, allow_reconnect=False, connect_timeout=5
        )


async def test_a_user_runs_and_reads_its_own_tasks(secured_url, creds, secured_stack):
    alice = await Client.connect(secured_url, nkey=seed(creds, "alice"))
    try:
        [record] = await alice.run([SubmitRequest(circuit=BELL, shots=300)], timeout=120)
        assert record["status"] == "done", record["error"]
        assert record["task_id"].startswith("alice.")
        events = await alice.events(record["task_id"])
        assert events[-1].event.EVENT == "completed"
    finally:
        await alice.close()


async def test_a_user_runs_a_sweep(secured_url, creds, secured_stack):
    """A sweep's node reads the sweep's events on a consumer of its own (its grant allows it).
    Carol's, so that alice's task count stays that of her ``ingested`` events."""
    carol = await Client.connect(secured_url, nkey=seed(creds, "carol"))
    try:
        request = SubmitRequest(circuit=circuit_to_json(qaoa_circuit()), shots=100, sweep=grid(3))
        [record] = await carol.run([request], timeout=120)
        assert record["status"] == "done", record["error"]
        for k in range(3):
            events = await carol.events(sweep_point_id(record["task_id"], k))
            assert events[-1].event.EVENT == "completed"
    finally:
        await carol.close()


async def test_another_user_cannot_read_a_task(alice: Attacker, secured_url, creds, bobs_task):
    client = await Client.connect(secured_url, nkey=seed(creds, "alice"))
    try:
        with pytest.raises(QubusError) as refused:
            await client.events(bobs_task["task_id"])
        assert refused.value.code == "auth.not_owner"
        for wildcard in ("*", ">", "bob.*", "*.*"):
            with pytest.raises(QubusError) as refused:
                await client.events(wildcard)
            assert refused.value.code in ("task.invalid_id", "auth.not_owner")
    finally:
        await client.close()
    # without the SDK's checks: the server refuses the consumers that would read them
    for subject in (f"qubus.task.{bobs_task['task_id']}.>", "qubus.task.>", "qubus.task.*.>"):
        await alice.refused(
            lambda s=subject: alice.js.pull_subscribe(s, stream=STREAM),
            f"$js.api.consumer.create.{STREAM}",
        )


def forged_result(task_id: str, node: str) -> TaskCompleted:
    return TaskCompleted(
        task_id=task_id,
        node=node,
        counts={"01": 500},
        shots=500,
        seed=1,
        predicted_fidelity=1.0,
        measured_fidelity=1.0,
        emulated_s=0.0,
        calibration_revision="forged",
    )


async def test_a_forged_completed_event_is_refused(alice, operator, bobs_task):
    task_id = bobs_task["task_id"]
    forged = forged_result(task_id, bobs_task["nodes"][0])
    await alice.refused(
        lambda: alice.js.publish(forged.subject(), codec.encode(forged)), forged.subject()
    )
    await alice.refused(
        lambda: alice.nc.publish(forged.subject(), codec.encode(forged)), forged.subject()
    )
    assert (await stored_subjects(operator, forged.subject())) == {forged.subject(): 1}
    events = await operator.events(task_id)
    [completed] = [e for e in events if e.event.EVENT == "completed"]
    assert completed.event.counts == bobs_task["counts"] and completed.service == "qpu"


def typed(event) -> dict[str, str]:
    return {H_TYPE: event.TYPE}


async def test_a_node_cannot_report_for_another_node(operator, secured_url, creds, secured_stack):
    """A fleet node's identity forging results and status for a task another node runs: under
    the other node's name the server refuses it; under its own name, published before the
    real result, it is stored apart and not believed (the task's result is the real node's)."""
    bob = await Client.connect(secured_url, nkey=seed(creds, "bob"))
    forger = await Attacker().connect(
        secured_url, seed(creds, f"qpu-{OTHER_NODE}"), f"qpu-{OTHER_NODE}"
    )
    try:
        reply = await bob.submit(SubmitRequest(circuit=BELL, shots=500, node=NODE))
        task_id = reply.task_id
        in_its_name = forged_result(task_id, NODE)
        await forger.refused(
            lambda: forger.js.publish(in_its_name.subject(), codec.encode(in_its_name)),
            in_its_name.subject(),
        )
        running = TaskRunning(task_id=task_id, node=NODE, queue_wait_s=0.0)
        await forger.refused(
            lambda: forger.js.publish(running.subject(), codec.encode(running)), running.subject()
        )
        own_subject = forged_result(task_id, OTHER_NODE).subject()
        # its own name with the other node in the payload, its own name throughout, garbage
        for event in (in_its_name, forged_result(task_id, OTHER_NODE)):
            await forger.js.publish(own_subject, codec.encode(event), headers=typed(event))
        await forger.js.publish(own_subject, b"\x80")
        replace = TaskReplace(task_id=task_id, node=OTHER_NODE, attempt=0, reason="forged")
        await forger.js.publish(replace.subject(), codec.encode(replace), headers=typed(replace))
        await forger.js.publish(replace.subject(), b"\x80")
        events = await bob.wait(task_id, timeout=120)
        for _ in range(100):  # the allocator has taken the forged replace
            info = await operator.bus.js.consumer_info(STREAM, "allocator-replace")
            if not info.num_pending and not info.num_ack_pending:
                break
            await asyncio.sleep(0.1)
    finally:
        await forger.nc.close()
        await bob.close()
    record = task_record(task_id, events)
    assert record["status"] == "done" and record["nodes"] == [NODE], record
    assert sum(record["counts"].values()) == 500 and record["counts"] != {"01": 500}
    assert not any(
        stored.event.node == OTHER_NODE
        for stored in events
        if stored.event.EVENT in {"running", "completed"}
    )
    stored = await stored_subjects(operator, f"qubus.task.{task_id}.>")
    assert stored[own_subject] == 3  # stored under the forger's name, never believed
    assert [s for s in stored if ".allocated." in s] == [f"qubus.task.{task_id}.allocated.{NODE}"]
    assert dict(await operator.tasks())[task_id] == "done", stored


async def test_only_its_owner_retries_a_task(secured_url, creds, bobs_task):
    """Alice may not retry bob's task; bob may not retry it either, since it is done."""
    for user, code in (("alice", "auth.not_owner"), ("bob", "task.not_retryable")):
        client = await Client.connect(secured_url, nkey=seed(creds, user))
        try:
            with pytest.raises(QubusError) as refused:
                await client.retry(bobs_task["task_id"])
        finally:
            await client.close()
        assert refused.value.code == code, user


async def test_a_user_cancels_its_own_tasks_only(alice, operator, secured_url, creds, bobs_task):
    client = await Client.connect(secured_url, nkey=seed(creds, "alice"))
    try:
        reply = await client.submit(SubmitRequest(circuit=BELL, shots=100))
        assert await client.cancel(reply.task_id)  # at once: not running yet
        events = await client.wait(reply.task_id, timeout=120)
        assert status_of(events) == "cancelled" and events[-1].service == "client"
        with pytest.raises(QubusError) as refused:
            await client.cancel(bobs_task["task_id"])
        assert refused.value.code == "auth.not_owner"
    finally:
        await client.close()
    # without the SDK's check: the server refuses alice's cancellation of bob's task
    forged = TaskCancelled(task_id=bobs_task["task_id"], reason="forged")
    await alice.refused(
        lambda: alice.js.publish(forged.subject(), codec.encode(forged)), forged.subject()
    )
    assert await stored_subjects(operator, forged.subject()) == {}


async def test_a_forged_allocation_of_an_unsubmitted_task_is_refused(alice, operator):
    subject = f"qubus.task.alice.0000forged.allocated.{NODE}"
    await alice.refused(lambda: alice.js.publish(subject, b"\x80"), subject)
    await alice.refused(lambda: alice.nc.publish(subject, b"\x80"), subject)
    assert await stored_subjects(operator, "qubus.task.alice.0000forged.>") == {}


async def test_weights_cannot_be_rewritten(alice, operator):
    weights = await operator.bus.kv(BUCKET_WEIGHTS)
    before = await weights.get("current")
    subject = f"$KV.{BUCKET_WEIGHTS}.current"
    await alice.refused(lambda: alice.js.publish(subject, b"{}"), subject)
    await alice.refused(
        lambda: alice.js.key_value(BUCKET_WEIGHTS), f"$JS.API.STREAM.INFO.KV_{BUCKET_WEIGHTS}"
    )
    # a push consumer on alice's own tasks delivering into the bucket: created, never stored
    await alice.js._jsm.add_consumer(
        STREAM,
        ConsumerConfig(
            name="into_weights",
            filter_subject="qubus.task.alice.>",
            deliver_subject=subject,
            ack_policy=AckPolicy.NONE,
        ),
    )
    await asyncio.sleep(1.0)
    after = await weights.get("current")
    assert (after.revision, after.value) == (before.revision, before.value)


async def test_nodes_cannot_be_registered_or_impersonated(
    alice, operator, secured_url, creds, secured_stack
):
    fake = f"$KV.{BUCKET_NODES}.node.evil_qpu"
    await alice.refused(lambda: alice.js.publish(fake, b"\x80"), fake)
    # a node of the fleet may write its own status only
    node = await Attacker().connect(secured_url, seed(creds, f"qpu-{NODE}"), f"qpu-{NODE}")
    try:
        for subject in (fake, f"$KV.{BUCKET_NODES}.node.{OTHER_NODE}"):
            await node.refused(lambda s=subject: node.js.publish(s, b"\x80"), subject)
    finally:
        await node.nc.close()
    statuses = await operator.bus.node_statuses()
    assert sorted(statuses) == sorted(FLEET)


async def test_streams_and_stage_consumers_cannot_be_created_deleted_or_read(alice, operator):
    api = "$JS.API"
    await alice.refused(
        lambda: alice.js.add_stream(StreamConfig(name="EVIL", subjects=["evil.>"])),
        f"{api}.STREAM.CREATE.EVIL",
    )
    await alice.refused(lambda: alice.js.delete_stream(STREAM), f"{api}.STREAM.DELETE.{STREAM}")
    await alice.refused(
        lambda: alice.js.delete_consumer(STREAM, "parser"), f"{api}.CONSUMER.DELETE.{STREAM}.parser"
    )
    await alice.refused(
        lambda: alice.js.consumer_info(STREAM, "parser"),
        f"{api}.CONSUMER.INFO.{STREAM}.parser",
    )
    sub = await alice.nc.subscribe(f"{inbox_prefix('alice')}.steal")
    await alice.refused(
        lambda: alice.nc.publish(
            f"{api}.CONSUMER.MSG.NEXT.{STREAM}.parser",
            json.dumps({"batch": 1}).encode(),
            reply=f"{inbox_prefix('alice')}.steal",
        ),
        f"{api}.CONSUMER.MSG.NEXT.{STREAM}.parser",
    )
    await sub.unsubscribe()
    names = [s.config.name for s in await operator.bus.js.streams_info()]
    assert "EVIL" not in names and STREAM in names
    assert (await operator.bus.js.consumer_info(STREAM, "parser")).name == "parser"


async def test_a_user_reads_only_the_log_lines_about_its_own_tasks(alice):
    for subject in ("qubus.log.>", "qubus.log.*.bob", "qubus.log.parser.~"):
        api = f"$JS.API.CONSUMER.CREATE.QUBUS_LOGS.peek.{subject}"
        await alice.refused(
            lambda s=subject: alice.js.add_consumer(
                "QUBUS_LOGS", ConsumerConfig(name="peek", filter_subject=s)
            ),
            api,
        )


async def test_a_user_cannot_submit_as_another_or_read_other_inboxes(alice):
    await alice.refused(
        lambda: alice.nc.request("qubus.submit.bob", b"{}", timeout=1), "qubus.submit.bob"
    )
    await alice.refused(lambda: alice.nc.request("qubus.submit", b"{}", timeout=1), "qubus.submit")
    await alice.refused(lambda: alice.nc.subscribe("_INBOX_bob.>"), "_INBOX_bob.>")
    await alice.refused(lambda: alice.nc.subscribe("qubus.task.>"), "qubus.task.>")


async def test_a_service_publishes_only_its_own_events(secured_url, creds, secured_stack):
    parser = await Attacker().connect(secured_url, seed(creds, "svc-parser"), "svc-parser")
    try:
        subject = "qubus.task.bob.0000forged.completed"
        await parser.refused(lambda: parser.js.publish(subject, b"\x80"), subject)
        weights = f"$KV.{BUCKET_WEIGHTS}.current"
        await parser.refused(lambda: parser.js.publish(weights, b"{}"), weights)
    finally:
        await parser.nc.close()


async def test_a_service_cannot_touch_another_stages_consumer_or_change_a_stream(
    operator, secured_url, creds, secured_stack
):
    allocator = await Attacker().connect(secured_url, seed(creds, "svc-allocator"), "svc-allocator")
    api = "$JS.API"
    parser = (await operator.bus.js.consumer_info(STREAM, "parser")).config
    try:
        for subject in (
            f"$JS.ACK.{STREAM}.parser.1.1.1.1.1",
            f"{api}.CONSUMER.MSG.NEXT.{STREAM}.parser",
            f"{api}.CONSUMER.DELETE.{STREAM}.parser",
            f"{api}.CONSUMER.CREATE.{STREAM}.parser.qubus.task.>",
        ):
            await allocator.refused(lambda s=subject: allocator.nc.publish(s, b"{}"), subject)
        config = (await operator.bus.js.stream_info(STREAM)).config
        shrunk = StreamConfig(**{**config.as_dict(), "max_age": 1})
        await allocator.refused(
            lambda: allocator.js.update_stream(shrunk), f"{api}.STREAM.UPDATE.{STREAM}"
        )
    finally:
        await allocator.nc.close()
    assert (await operator.bus.js.stream_info(STREAM)).config.max_age == config.max_age
    assert (await operator.bus.js.consumer_info(STREAM, "parser")).config == parser


async def test_cli_works_with_a_users_credentials(
    qubus_cli, secured_url, creds, operator, bobs_task, tmp_path
):
    env = {"QUBUS_NATS_NKEY": seed(creds, "alice")}
    circuit = tmp_path / "bell.qasm"
    circuit.write_text(BELL)
    code, out, err = await qubus_cli(
        secured_url, "submit", str(circuit), "--wait", "--json", env=env
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["status"] == "done"
    task_id = record["task_id"]
    assert task_id.startswith("alice.")
    for args in (("result", task_id, "--json"), ("trace", task_id, "--json")):
        code, out, err = await qubus_cli(secured_url, *args, env=env)
        assert code == 0, err
        assert json.loads(out)["task_id"] == task_id
    code, out, err = await qubus_cli(secured_url, "logs", "--task", task_id, "--json", env=env)
    assert code == 0, err
    assert out and all(json.loads(line)["task_id"] == task_id for line in out.splitlines())
    code, out, err = await qubus_cli(secured_url, "report", "--json", env=env)
    assert code == 0, err
    alices = await stored_subjects(operator, "qubus.task.alice.*.ingested")
    assert json.loads(out)["summary"]["tasks"] == len(alices) >= 1  # bob's are not read
    code, out, err = await qubus_cli(secured_url, "tasks", "--json", env=env)
    assert code == 0, err
    listed = {json.loads(line)["task_id"] for line in out.splitlines()}
    assert task_id in listed and listed == {".".join(s.split(".")[2:4]) for s in alices}
    code, out, err = await qubus_cli(secured_url, "cancel", bobs_task["task_id"], env=env)
    assert code == 1 and "[auth.not_owner]" in err
    code, out, err = await qubus_cli(secured_url, "nodes", "--json", env=env)
    assert code == 0, err
    assert sorted(n["node"] for n in json.loads(out)["nodes"]) == sorted(FLEET)
    code, out, err = await qubus_cli(secured_url, "result", bobs_task["task_id"], env=env)
    assert code != 0 and "auth.not_owner" in err
    code, out, err = await qubus_cli(secured_url, "weights", "show", env=env)
    assert code != 0 and "[auth.denied]" in err and "Traceback" not in err


async def test_the_dashboard_reads_every_task_and_the_weights_but_writes_nothing(
    secured_url, creds, operator, bobs_task
):
    reader = await Client.connect(secured_url, nkey=seed(creds, auth.DASHBOARD))
    try:
        events = await reader.events(bobs_task["task_id"])  # bob's task, not its own
        assert events[-1].event.EVENT == "completed"
        dashboard = Dashboard(reader, since=0.0, node_timeout_s=15.0)
        await dashboard.read_weights()
        await dashboard.read_fleet()
        await dashboard.read_stats()
        assert dashboard.views["weights"]["current"]["weights"]
        assert sorted(n["node"] for n in dashboard.views["fleet"]["nodes"]) == sorted(FLEET)
        assert {s["service"] for s in dashboard.views["flow"]["services"]} >= {"parser", "qpu"}
    finally:
        await reader.close()
    attacker = await Attacker().connect(secured_url, seed(creds, auth.DASHBOARD), auth.DASHBOARD)
    try:
        forged = f"qubus.task.{bobs_task['task_id']}.cancelled"
        await attacker.refused(lambda: attacker.nc.publish(forged, b"{}"), forged)
        weights = f"$KV.{BUCKET_WEIGHTS}.current"
        await attacker.refused(lambda: attacker.js.publish(weights, b"{}"), weights)
        fetch = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.parser"
        await attacker.refused(lambda: attacker.nc.request(fetch, b"1", timeout=1), fetch)
    finally:
        await attacker.nc.close()
