"""``qubus user add`` on a running secured ``qubus up``: the new user connects within a
second of being added, as a client or with the operator's role."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.asyncio]

BELL = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\n'
BELL += "measure q -> c;\n"


async def test_a_user_added_to_a_running_stack_can_use_it_at_once(qubus_cli, tmp_path: Path):
    state = tmp_path / "state"
    env = {**os.environ, "QUBUS_STATE_DIR": str(state), "QUBUS_TIME_SCALE": "0.05"}
    env.pop("QUBUS_NATS_URL", None)
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qubus.cli.main",
        "up",
        "--fleet",
        "ibm_nairobi",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert up.stdout is not None
        while b"services ready" not in (line := await asyncio.wait_for(up.stdout.readline(), 180)):
            assert line, "qubus up exited before it was ready"
        local = {"QUBUS_STATE_DIR": str(state)}

        code, out, err = await qubus_cli("", "user", "add", "carol", env=local)
        assert code == 0, err
        assert "added user carol (client)" in out and "accepts it" in out
        creds = state / "creds"
        assert json.loads((creds / "users.json").read_text()) == {"carol": "client"}
        assert (creds / "carol.nk").stat().st_mode & 0o777 == 0o600

        carol = {**local, "QUBUS_NATS_NKEY": str(creds / "carol.nk")}
        circuit = tmp_path / "bell.qasm"
        circuit.write_text(BELL)
        code, out, err = await qubus_cli("", "submit", str(circuit), "--wait", "--json", env=carol)
        assert code == 0, err
        record = json.loads(out)
        assert record["status"] == "done" and record["task_id"].startswith("carol.")
        code, _, err = await qubus_cli("", "weights", "show", env=carol)
        assert code == 1 and err.strip().endswith("[auth.denied]"), err

        code, out, err = await qubus_cli("", "user", "add", "dave", "--role", "operator", env=local)
        assert code == 0 and "accepts it" in out, err
        dave = {**local, "QUBUS_NATS_NKEY": str(creds / "dave.nk")}
        code, out, err = await qubus_cli("", "weights", "show", "--json", env=dave)
        assert code == 0, err

        code, _, err = await qubus_cli("", "user", "add", "svc-parser", env=local)
        assert code == 1 and err.strip().endswith("[auth.bad_user]"), err
    finally:
        up.send_signal(signal.SIGTERM)
        await asyncio.wait_for(up.wait(), 60)
