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
