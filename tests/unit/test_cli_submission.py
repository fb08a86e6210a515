"""`qubus run` and `qubus submit` turn their options into one request per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qubus.cli.main import build_parser
from qubus.cli.tasks import read_requests


@pytest.mark.parametrize("command", ["run", "submit"])
def test_node_and_noiseless_options_reach_every_request(command: str, dev_qasm: Path) -> None:
    files = [
        str(dev_qasm / "qasmbench__bell_n4.qasm"),
        str(dev_qasm / "qasmbench__deutsch_n2.qasm"),
    ]
    args = build_parser().parse_args(
        [command, *files, "--node", "ibm_nairobi", "--noiseless", "--shots", "64"]
    )
    requests = read_requests(args)
    assert [r.source for r in requests] == files
    assert all(r.node == "ibm_nairobi" and r.noiseless and r.shots == 64 for r in requests)


def test_tasks_are_noisy_unless_asked(dev_qasm: Path) -> None:
    args = build_parser().parse_args(["submit", str(dev_qasm / "qasmbench__bell_n4.qasm")])
    [request] = read_requests(args)
    assert not request.noiseless and request.node is None


def test_many_files_are_submitted_a_few_at_a_time_and_all_waited_for() -> None:
    """``qubus run`` and ``qubus submit --wait`` keep at most ``SUBMITTING`` submissions
    awaiting their answer (thousands at once outlasted the client's timeout), and every
    task is in flight meanwhile: all are waited for."""
    import asyncio

    from qubus.bus.messages import SubmitReply, SubmitRequest
    from qubus.cli import tasks

    class Counting:
        """Answers each submission after a pause, counting those awaiting their answer."""

        def __init__(self) -> None:
            self.awaiting = self.most = 0
            self.waited: list[str] = []

        async def submit(self, request: SubmitRequest) -> SubmitReply:
            self.awaiting += 1
            self.most = max(self.most, self.awaiting)
            await asyncio.sleep(0.001)
            self.awaiting -= 1
            return SubmitReply(task_id=f"anon.t{request.source}", duplicate=False)

        async def wait(self, task_id: str, *, timeout: float) -> list:
            self.waited.append(task_id)
            return []

    requests = [SubmitRequest(circuit="x", shots=1, source=str(i)) for i in range(500)]
    client = Counting()
    records = asyncio.run(tasks._run_with_progress(client, requests, 5.0))
    assert client.most == tasks.SUBMITTING
    assert len(records) == len(client.waited) == 500
