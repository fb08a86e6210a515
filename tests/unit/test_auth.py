"""The identities and permissions of a secured bus, and the server configuration for them."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from qubus.bus import auth
from qubus.bus.natsserver import server_binary
from qubus.errors import QubusError

SERVICES = ["ingestion", "parser", "logic", "sandbox", "noise", "fusion", "allocator", "link"]
FLEET = ["ibm_nairobi", "ionq_aria"]


def by_name(found: list[auth.Identity]) -> dict[str, auth.Identity]:
    return {identity.name: identity for identity in found}


def test_a_client_may_submit_read_and_cancel_only_as_itself():
    alice = by_name(auth.identities(SERVICES, FLEET, ["alice"]))["alice"].permissions
    assert alice is not None and not alice.responses
    assert alice.subscribe == ("_INBOX_alice.>",)
    task_grants = [s for s in alice.publish if "qubus.task" in s]
    assert task_grants == [
        "qubus.task.alice.*.cancelled",
        "$JS.API.CONSUMER.CREATE.QUBUS_TASKS.*.qubus.task.alice.>",
    ]
    assert [s for s in alice.publish if s.startswith("qubus.submit")] == ["qubus.submit.alice"]
    assert not any(
        s.startswith(("$KV.", "$JS.API.STREAM.CREATE", "$JS.ACK")) for s in alice.publish
    )
    # every stage's durable consumer is denied by name, the QPU nodes' included
    assert "$JS.API.CONSUMER.MSG.NEXT.QUBUS_TASKS.parser" in alice.deny_publish
    assert "$JS.API.CONSUMER.MSG.NEXT.QUBUS_TASKS.qpu-ionq_aria" in alice.deny_publish


def test_a_node_writes_only_its_own_status_and_a_service_only_its_events():
    found = by_name(auth.identities(SERVICES, FLEET, []))
    node = found["qpu-ibm_nairobi"].permissions
    assert [s for s in node.publish if s.startswith("$KV.")] == [
        "$KV.qubus_nodes.node.ibm_nairobi",
        "$KV.qubus_consumers.qpu-ibm_nairobi",  # its consumer's floor (qubus.bus.durable)
    ]
    parser = found["svc-parser"].permissions
    events = [s for s in parser.publish if s.startswith("qubus.task.")]
    assert events == [f"qubus.task.*.*.{e}" for e in ("parsed", "rejected", "failed")]
    floors = [s for s in parser.publish if s.startswith("$KV.qubus_consumers")]
    assert floors == ["$KV.qubus_consumers.parser"]
    assert not any("DELETE.QUBUS_TASKS" in s or "STREAM.DELETE" in s for s in parser.publish)
    assert found["operator"].permissions is None


def test_the_dashboard_reads_every_task_logs_nodes_and_weights_and_writes_nothing():
    dashboard = by_name(auth.identities(SERVICES, FLEET, []))["dashboard"].permissions
    assert dashboard is not None and not dashboard.responses
    assert dashboard.subscribe == ("_INBOX_dashboard.>",)
    assert "$JS.API.CONSUMER.CREATE.QUBUS_TASKS.*.qubus.task.>" in dashboard.publish
    assert "$JS.API.CONSUMER.CREATE.QUBUS_LOGS.*.qubus.log.>" in dashboard.publish
    assert "$JS.API.DIRECT.GET.KV_qubus_weights.>" in dashboard.publish
    assert "$JS.API.STREAM.MSG.GET.KV_qubus_nodes" in dashboard.publish
    # no task event, KV write, acknowledgement, stream change or other bucket
    assert not any(
        s.startswith(("qubus.", "$KV.", "$JS.API.STREAM.CREATE", "$JS.API.STREAM.DELETE"))
        or s.startswith("$JS.ACK.QUBUS_TASKS")
        or "qubus_joins" in s
        for s in dashboard.publish
    )
    assert "$JS.API.CONSUMER.MSG.NEXT.QUBUS_TASKS.fusion" in dashboard.deny_publish


@pytest.mark.parametrize(
    "name", ["operator", "anon", "dashboard", "svc-parser", "qpu-x", "a.b", "*", "", "x" * 33]
)
def test_reserved_or_malformed_user_names_are_refused(name):
    with pytest.raises(QubusError) as refused:
        auth.identities([], [], [name])
    assert refused.value.code == "auth.bad_user"


def test_credentials_are_private_kept_across_runs_and_the_server_accepts_them(tmp_path):
    creds = tmp_path / "creds"
    found = auth.identities(SERVICES, FLEET, ["alice"])
    first = auth.write_credentials(creds, found)
    assert auth.write_credentials(creds, found) == first
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    seeds = sorted(creds.iterdir())
    assert len(seeds) == len(found) and all(stat.S_IMODE(s.stat().st_mode) == 0o600 for s in seeds)
    users = json.loads(first.removeprefix("authorization: "))["users"]
    assert len({user["nkey"] for user in users}) == len(found)
    conf = tmp_path / "server.conf"
    conf.write_text(f'listen: "127.0.0.1:-1"\njetstream {{ store_dir: "{tmp_path}/js" }}\n{first}')
    check = subprocess.run([server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
