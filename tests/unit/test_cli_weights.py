"""The weights, feedback and pilot commands: parsing and output, without a stack."""

from __future__ import annotations

import pytest

from qubus.cli.main import build_parser
from qubus.cli.tasks import format_allocation, read_requests
from qubus.cli.weights import format_pilot, format_weights, record_json
from qubus.scheduling.pilots import PilotDescription
from qubus.scheduling.weights import initial_record, with_pins, with_values


def test_weights_show_lists_every_weight_marks_pins_and_the_history() -> None:
    first = initial_record(0.0)
    record = with_pins(with_values(first, {"w_qnc": 0.5}, now=1.0), ["w_qnc"], pinned=True, now=2.0)
    history = [record_json(first, 3), record_json(record, 7)]
    text = format_weights(record, 7, history)
    lines = text.splitlines()
    assert lines[0].startswith("weights revision 7 (set, 1970-01-01 00:00:02 UTC): pinned w_qnc")
    assert any(line.split() == ["w_qnc", "0.5000", "pinned"] for line in lines)
    assert sum(line.startswith("  w_") for line in lines) == 7
    assert lines[-2].split()[:3] == ["rev", "3", "ahp"] and lines[-1].split()[:3] == [
        "rev",
        "7",
        "set",
    ]
    assert "built-in defaults" in format_weights(first, 0, [])


def test_pilot_line_names_nodes_and_constraints() -> None:
    pilot = PilotDescription(name="p", nodes=["b", "a"], min_fidelity=0.9, max_qubits=5)
    assert format_pilot(pilot) == "p: nodes a, b; min fidelity 0.9; max qubits 5"


def test_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["weights", "set", "w_qnc=0.5", "beta=3"])
    assert (args.command, args.action, args.values) == ("weights", "set", ["w_qnc=0.5", "beta=3"])
    args = parser.parse_args(["feedback", "u.T1", "--rating", "4"])
    assert (args.task_id, args.rating) == ("u.T1", 4)
    with pytest.raises(SystemExit):
        parser.parse_args(["feedback", "u.T1", "--rating", "6"])
    args = parser.parse_args(["pilot", "create", "p", "--nodes", "a,b", "--min-fidelity", "0.8"])
    assert (args.name, args.nodes, args.min_fidelity, args.max_queue) == ("p", "a,b", 0.8, None)


def test_pilot_option_reaches_the_request(tmp_path) -> None:
    path = tmp_path / "c.qasm"
    path.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\n')
    args = build_parser().parse_args(["submit", str(path), "--pilot", "fast"])
    [request] = read_requests(args)
    assert request.pilot == "fast"


def test_trace_prints_the_shapley_attribution() -> None:
    score = {
        "node": "n",
        "eligible": True,
        "reason": "",
        "hyperscore": 120.0,
        "predicted_fidelity": 0.9,
        "expected_completion_s": 3.0,
        "terms": {"qnc": 0.3},
        "shapley": {"qnc": 15.25, "time": -1.5},
    }
    text = format_allocation({"decision": None, "scores": [score]})
    assert "shapley qnc=+15.25 time=-1.50" in text
